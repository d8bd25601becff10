//! An audit event: who did what to which subject, when, and how it ended.
//! Every mutating action writes one; events are never updated or deleted.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::transaction::named_enum;

named_enum!(
    /// What an audit event records: each variant's stable dotted name is what the stores keep,
    /// the API shows and the audit filter `?action=` matches. A name, once written, never changes.
    AuditAction, "audit action" {
        HttpRequest => "http.request",
        TokenCreate => "token.create",
        TokenRevoke => "token.revoke",
        TransactionsImport => "transactions.import",
        PaymentsRecordPayment => "payments.record_payment",
        PaymentsRecordRefund => "payments.record_refund",
        PaymentsRecordChargeback => "payments.record_chargeback",
        PaymentsRecordAdjustment => "payments.record_adjustment",
        SettlementRun => "settlement.run",
        SettlementRerun => "settlement.rerun",
        SettlementRetry => "settlement.retry",
        SettlementRerunRequested => "settlement.rerun_requested",
        SettlementRerunApproved => "settlement.rerun_approved",
        SettlementRerunRejected => "settlement.rerun_rejected",
        SettlementRerunApprovalBypassed => "settlement.rerun_approval_bypassed",
        PayoutCallback => "payout.callback",
        PayoutRecheck => "payout.recheck",
        MerchantHold => "merchant.hold",
        MerchantRelease => "merchant.release",
        StoreMigrate => "store.migrate",
        DemoRun => "demo.run",
        ReconciliationImport => "reconciliation.import",
        ReconciliationRun => "reconciliation.run",
        ReconciliationMatch => "reconciliation.match",
        ReconciliationUnmatch => "reconciliation.unmatch",
        ReconciliationConfirm => "reconciliation.confirm",
        ReconciliationExpect => "reconciliation.expect",
        ReconciliationWriteOff => "reconciliation.write_off",
        ReconciliationWriteOffApproved => "reconciliation.write_off_approved",
        ReconciliationWriteOffRejected => "reconciliation.write_off_rejected",
        ReconciliationAdjustment => "reconciliation.adjustment",
    }
);

named_enum!(
    /// How the audited action ended. `interrupted`: a settlement run stopped by a shutdown, its
    /// lease released for another run to resume.
    AuditOutcome, "audit outcome" {
        Succeeded => "succeeded",
        Failed => "failed",
        Refused => "refused",
        Interrupted => "interrupted",
    }
);

impl AuditOutcome {
    /// The outcome of an HTTP answer: 2xx succeeded, 4xx refused, anything else failed.
    pub fn of_http_status(status: u16) -> Self {
        match status {
            200..=299 => AuditOutcome::Succeeded,
            400..=499 => AuditOutcome::Refused,
            _ => AuditOutcome::Failed,
        }
    }
}

// `action` and `outcome` stay text, written only from `AuditAction` and `AuditOutcome` by
// `AuditEvent::new`: a store shared with another version may hold a name this one does not know,
// and it must read back (and filter) unchanged.
/// One audited action. Its `action` and `outcome` are text: an event written by another version
/// sharing the store may carry a name this one does not list, and reads back unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEvent {
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    /// `cli:USER` for the command line, `token:NAME` for an API token, `scheduler` for the nightly job.
    pub actor: String,
    /// A stable dotted name such as `settlement.run` or `transactions.import` (see `AuditAction`).
    pub action: String,
    /// What was acted on, e.g. `settlement_date=2024-03-10 revision=2`.
    pub subject: String,
    /// `succeeded`, `failed`, `refused` or `interrupted` (a settlement run stopped by a shutdown;
    /// see `AuditOutcome`).
    pub outcome: String,
    /// Anything else worth keeping (never a secret).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

impl AuditEvent {
    /// The one way an event is made: the action and outcome are typed, their names fixed.
    pub fn new(
        occurred_at: DateTime<Utc>,
        actor: impl Into<String>,
        action: AuditAction,
        subject: impl Into<String>,
        outcome: AuditOutcome,
        detail: serde_json::Value,
    ) -> Self {
        AuditEvent {
            id: Uuid::new_v4(),
            occurred_at,
            actor: actor.into(),
            action: action.as_str().to_string(),
            subject: subject.into(),
            outcome: outcome.as_str().to_string(),
            detail,
        }
    }

    /// The action, when it is one this version knows.
    pub fn known_action(&self) -> Option<AuditAction> {
        self.action.parse().ok()
    }

    /// The outcome, when it is one this version knows.
    pub fn known_outcome(&self) -> Option<AuditOutcome> {
        self.outcome.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_action_round_trips_by_name_display_and_serde() {
        for action in AuditAction::ALL {
            let name = action.as_str();
            assert_eq!(name.parse::<AuditAction>(), Ok(*action), "{name}");
            assert_eq!(action.to_string(), name);
            let json = serde_json::to_value(action).unwrap();
            assert_eq!(json, serde_json::json!(name));
            assert_eq!(
                serde_json::from_value::<AuditAction>(json).unwrap(),
                *action
            );
            // Dotted lower-case names: `area.verb`, never empty on either side.
            let (area, verb) = name.split_once('.').expect(name);
            assert!(!area.is_empty() && !verb.is_empty(), "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_lowercase() || c == '.' || c == '_'),
                "{name}"
            );
        }
    }

    #[test]
    fn action_names_are_unique_and_all_are_listed() {
        let names: BTreeSet<_> = AuditAction::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(names.len(), AuditAction::ALL.len());
        // `ALL` holds every variant: a match with no wildcard breaks the build when one is added
        // without being listed here, and each listed one must be in `ALL`.
        let listed = |action: AuditAction| match action {
            AuditAction::HttpRequest
            | AuditAction::TokenCreate
            | AuditAction::TokenRevoke
            | AuditAction::TransactionsImport
            | AuditAction::PaymentsRecordPayment
            | AuditAction::PaymentsRecordRefund
            | AuditAction::PaymentsRecordChargeback
            | AuditAction::PaymentsRecordAdjustment
            | AuditAction::SettlementRun
            | AuditAction::SettlementRerun
            | AuditAction::SettlementRetry
            | AuditAction::SettlementRerunRequested
            | AuditAction::SettlementRerunApproved
            | AuditAction::SettlementRerunRejected
            | AuditAction::SettlementRerunApprovalBypassed
            | AuditAction::PayoutCallback
            | AuditAction::PayoutRecheck
            | AuditAction::MerchantHold
            | AuditAction::MerchantRelease
            | AuditAction::StoreMigrate
            | AuditAction::DemoRun
            | AuditAction::ReconciliationImport
            | AuditAction::ReconciliationRun
            | AuditAction::ReconciliationMatch
            | AuditAction::ReconciliationUnmatch
            | AuditAction::ReconciliationConfirm
            | AuditAction::ReconciliationExpect
            | AuditAction::ReconciliationWriteOff
            | AuditAction::ReconciliationWriteOffApproved
            | AuditAction::ReconciliationWriteOffRejected
            | AuditAction::ReconciliationAdjustment => AuditAction::ALL.contains(&action),
        };
        assert!(AuditAction::ALL.iter().all(|a| listed(*a)));
        assert_eq!(AuditAction::ALL.len(), 31);
    }

    #[test]
    fn unknown_names_are_refused_naming_the_known_ones() {
        let error = "HTTP.REQUEST".parse::<AuditAction>().unwrap_err();
        assert!(error.contains("unknown audit action"), "{error}");
        assert!(error.contains("http.request, token.create"), "{error}");
        assert!("settlement.run ".parse::<AuditAction>().is_err());
        assert!(serde_json::from_str::<AuditAction>("\"payment.record\"").is_err());
    }

    #[test]
    fn every_outcome_round_trips_and_follows_the_http_status() {
        for outcome in AuditOutcome::ALL {
            assert_eq!(outcome.as_str().parse::<AuditOutcome>(), Ok(*outcome));
            assert_eq!(
                serde_json::to_value(outcome).unwrap(),
                serde_json::json!(outcome.as_str())
            );
        }
        let names: Vec<_> = AuditOutcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(names, ["succeeded", "failed", "refused", "interrupted"]);
        for (status, outcome) in [
            (200, AuditOutcome::Succeeded),
            (201, AuditOutcome::Succeeded),
            (299, AuditOutcome::Succeeded),
            (304, AuditOutcome::Failed),
            (400, AuditOutcome::Refused),
            (422, AuditOutcome::Refused),
            (499, AuditOutcome::Refused),
            (500, AuditOutcome::Failed),
            (503, AuditOutcome::Failed),
        ] {
            assert_eq!(AuditOutcome::of_http_status(status), outcome, "{status}");
        }
    }

    #[test]
    fn events_keep_the_names_as_text_and_read_unknown_ones_back() {
        let event = AuditEvent::new(
            DateTime::from_timestamp(1_710_064_800, 0).unwrap(),
            "cli:ana",
            AuditAction::SettlementRerunRequested,
            "settlement_date=2024-03-10",
            AuditOutcome::Refused,
            serde_json::json!({}),
        );
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["action"], "settlement.rerun_requested");
        assert_eq!(json["outcome"], "refused");
        assert_eq!(
            event.known_action(),
            Some(AuditAction::SettlementRerunRequested)
        );
        assert_eq!(event.known_outcome(), Some(AuditOutcome::Refused));

        // Written by a version with a name this one lacks: read back as it was.
        let mut stored = json;
        stored["action"] = serde_json::json!("settlement.archive");
        let read: AuditEvent = serde_json::from_value(stored).unwrap();
        assert_eq!(read.action, "settlement.archive");
        assert_eq!(read.known_action(), None);
    }
}
