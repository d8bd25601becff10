//! Reconciliation decisions: each match, unmatch, expectation, write-off, duplicate, approval or
//! rejection is a new record, never an edit; the state of an item follows from the decisions on it.

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::model::named_enum;
use crate::money::Currency;

use super::statement::StatementKind;

named_enum!(
    /// What a decision does. `match` pairs records of ours with statement entries; `duplicate`
    /// sets an entry aside as a repeat; `write_off` closes items with a reason (waiting for a
    /// second person above the threshold); `expect` says an item is not due until a date;
    /// `unmatch` reverses a match, duplicate or write-off; `approve` and `reject` decide a
    /// write-off that waits.
    DecisionAction, "reconciliation action" {
        Match => "match",
        Duplicate => "duplicate",
        WriteOff => "write_off",
        Expect => "expect",
        Unmatch => "unmatch",
        Approve => "approve",
        Reject => "reject",
    }
);

impl DecisionAction {
    /// Whether the decision takes its items out of the open set (each item by one such at a time).
    pub fn claims_items(&self) -> bool {
        matches!(
            self,
            DecisionAction::Match | DecisionAction::Duplicate | DecisionAction::WriteOff
        )
    }

    /// Whether the decision acts on an earlier decision (`target`) rather than on items.
    pub fn acts_on_decision(&self) -> bool {
        matches!(
            self,
            DecisionAction::Unmatch | DecisionAction::Approve | DecisionAction::Reject
        )
    }
}

named_enum!(
    /// Where a decision stands: `in_force` (its items are decided) · `awaiting_approval` (a large
    /// write-off: its items are set aside until a second person decides) · `reversed` (a later
    /// unmatch undid it) · `rejected` (a write-off refused by the approver).
    DecisionState, "decision state" {
        InForce => "in_force",
        AwaitingApproval => "awaiting_approval",
        Reversed => "reversed",
        Rejected => "rejected",
    }
);

named_enum!(
    /// Why an amount was written off.
    WriteOffCategory, "write-off category" {
        BankFee => "bank_fee",
        ProviderFee => "provider_fee",
        Rounding => "rounding",
        FxDifference => "fx_difference",
        Unrecoverable => "unrecoverable",
        Other => "other",
    }
);

/// Who made a match: a rule (by name) or a person.
pub const MANUAL_RULE: &str = "manual";

/// An item's key within a kind: `ours:ID` (a payout reference or a transaction id) or
/// `theirs:ID` (a statement entry id).
pub fn ours_key(id: &str) -> String {
    format!("ours:{id}")
}

pub fn theirs_key(id: &str) -> String {
    format!("theirs:{id}")
}

/// One decision as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Decision {
    /// Deterministic for a rule's decision (the same match from a rerun has the same id, so a
    /// run's writes are idempotent); a person's decision takes the id of its request.
    pub id: String,
    pub kind: StatementKind,
    pub action: DecisionAction,
    pub state: DecisionState,
    /// The rule that matched, or [`MANUAL_RULE`].
    pub rule: String,
    /// Records of ours (payout references or transaction ids), sorted.
    pub ours: Vec<String>,
    /// Statement entry ids, sorted.
    pub theirs: Vec<String>,
    /// The items' currency (none for decisions that act on another decision).
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "EUR")]
    pub currency: Option<Currency>,
    /// Σ theirs − Σ ours for a match; the amount written off for a write-off.
    pub amount_minor: i64,
    /// A match whose amounts differ by more than its rule allows: certain, but people confirm it.
    pub needs_review: bool,
    /// The decision an unmatch, approve or reject acts on.
    pub target: Option<String>,
    pub reason: Option<String>,
    pub category: Option<WriteOffCategory>,
    /// `expect`: the date the item is due by.
    #[schema(value_type = Option<String>, format = Date)]
    pub expected_by: Option<NaiveDate>,
    pub actor: String,
    pub decided_at: DateTime<Utc>,
}

impl Decision {
    /// The id of a rule's match: the kind, the rule and the sorted members, hashed.
    pub fn rule_decision_id(
        kind: StatementKind,
        action: DecisionAction,
        rule: &str,
        ours: &[String],
        theirs: &[String],
    ) -> String {
        let mut digest = Sha256::new();
        for part in [kind.as_str(), action.as_str(), rule] {
            digest.update(part.as_bytes());
            digest.update([0x1f]);
        }
        for side in [ours, theirs] {
            for id in side {
                digest.update(id.as_bytes());
                digest.update([0x1e]);
            }
            digest.update([0x1d]);
        }
        format!("auto-{}", &hex::encode(digest.finalize())[..32])
    }

    /// The item keys this decision claims (empty for decisions that claim none).
    pub fn item_keys(&self) -> Vec<String> {
        if !self.action.claims_items() {
            return Vec::new();
        }
        self.ours
            .iter()
            .map(|id| ours_key(id))
            .chain(self.theirs.iter().map(|id| theirs_key(id)))
            .collect()
    }

    /// True when this decision holds its items now: one that claims items, in force or
    /// awaiting approval (a reversed or rejected one has released them).
    pub fn holds_items(&self) -> bool {
        self.action.claims_items()
            && matches!(
                self.state,
                DecisionState::InForce | DecisionState::AwaitingApproval
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_decision_id_depends_on_every_member_and_on_which_side_it_is() {
        let k = StatementKind::Bank;
        let a =
            Decision::rule_decision_id(k, DecisionAction::Match, "r", &["x".into()], &["y".into()]);
        assert_eq!(
            a,
            Decision::rule_decision_id(k, DecisionAction::Match, "r", &["x".into()], &["y".into()])
        );
        assert_ne!(
            a,
            Decision::rule_decision_id(k, DecisionAction::Match, "r", &["y".into()], &["x".into()])
        );
        assert_ne!(
            a,
            Decision::rule_decision_id(k, DecisionAction::Match, "r", &["xy".into()], &[])
        );
        assert_ne!(
            a,
            Decision::rule_decision_id(
                StatementKind::Payouts,
                DecisionAction::Match,
                "r",
                &["x".into()],
                &["y".into()]
            )
        );
    }
}
