//! Who may call the API: roles, API tokens (kept only as hashes) and rerun requests awaiting a
//! second person's approval (four-eyes).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::calendar::SettlementDate;

use super::transaction::named_enum;

named_enum!(
    /// viewer reads · operator also triggers, reruns, retries and records payments · admin also
    /// manages tokens.
    Role, "role" {
        Viewer => "viewer",
        Operator => "operator",
        Admin => "admin",
    }
);

impl Role {
    fn rank(&self) -> u8 {
        match self {
            Role::Viewer => 0,
            Role::Operator => 1,
            Role::Admin => 2,
        }
    }

    /// True when this role may do what `needed` may.
    pub fn includes(&self, needed: Role) -> bool {
        self.rank() >= needed.rank()
    }
}

/// An API token as stored: never the token itself, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: Uuid,
    /// Unique; how people and the audit trail name the token.
    pub name: String,
    pub role: Role,
    /// Lower-case hex SHA-256 of the token.
    pub token_hash: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiToken {
    pub fn is_active(&self) -> bool {
        self.revoked_at.is_none()
    }

    /// How the audit trail and idempotency scopes name the caller.
    pub fn actor(&self) -> String {
        format!("token:{}", self.name)
    }
}

named_enum!(
    /// A four-eyes rerun: requested by one operator, approved (its run claimed in the same step) or
    /// rejected by another.
    RerunRequestStatus, "rerun request status" {
        Pending => "pending",
        Approved => "approved",
        Rejected => "rejected",
    }
);

/// A rerun waiting for (or given) a second person's decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RerunRequest {
    pub id: Uuid,
    #[schema(value_type = String, format = Date)]
    pub settlement_date: SettlementDate,
    pub reason: String,
    pub apply_current_fees: bool,
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    pub status: RerunRequestStatus,
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    /// The date's latest revision when the rerun was asked for: the revision it reruns. An
    /// approval after the date moved on is refused as stale. `None` for a request recorded before
    /// requests kept their revision: it cannot be approved (reject it and ask again).
    pub settlement_revision: Option<u32>,
    /// The revision its approval claimed (set together with `approved`).
    pub run_revision: Option<u32>,
    /// Why the last approval could not claim the run; the request stayed pending.
    pub last_refusal: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_include_the_ones_below_them() {
        assert!(Role::Admin.includes(Role::Operator) && Role::Admin.includes(Role::Viewer));
        assert!(Role::Operator.includes(Role::Viewer) && !Role::Operator.includes(Role::Admin));
        assert!(!Role::Viewer.includes(Role::Operator));
        assert_eq!("operator".parse::<Role>().unwrap(), Role::Operator);
        assert!("root"
            .parse::<Role>()
            .unwrap_err()
            .contains("viewer, operator, admin"));
    }
}
