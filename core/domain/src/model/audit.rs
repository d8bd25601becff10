//! An audit event: who did what to which subject, when, and how it ended.
//! Every mutating action writes one; events are never updated or deleted.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    /// `cli:USER` for the command line, `token:NAME` for an API token, `scheduler` for the nightly job.
    pub actor: String,
    /// A stable dotted name such as `settlement.run` or `transactions.import`.
    pub action: String,
    /// What was acted on, e.g. `settlement_date=2024-03-10 revision=2`.
    pub subject: String,
    /// `succeeded`, `failed` or `refused`.
    pub outcome: String,
    /// Anything else worth keeping (never a secret).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl AuditEvent {
    pub fn new(
        occurred_at: DateTime<Utc>,
        actor: impl Into<String>,
        action: impl Into<String>,
        subject: impl Into<String>,
        outcome: impl Into<String>,
        detail: serde_json::Value,
    ) -> Self {
        AuditEvent {
            id: Uuid::new_v4(),
            occurred_at,
            actor: actor.into(),
            action: action.into(),
            subject: subject.into(),
            outcome: outcome.into(),
            detail,
        }
    }
}
