//! The state of every item (a record of ours or a statement entry) from the decisions in force, and
//! which items are exceptions: what people must work, with its age in days.

use std::collections::HashMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::model::named_enum;
use crate::money::Currency;

use super::decision::{ours_key, theirs_key, Decision, DecisionAction, DecisionState};
use super::matcher::{OurRecord, TheirEntry};

named_enum!(
    /// Which side an item is on: a record of Settle's (`ours`) or a statement entry (`theirs`).
    ItemSide, "item side" {
        Ours => "ours",
        Theirs => "theirs",
    }
);

named_enum!(
    /// Where an item stands. `expected`: not matched, but not due yet (within the rules' window,
    /// or marked expected until a date not yet passed).
    ItemStatus, "item status" {
        Matched => "matched",
        MatchedWithDifference => "matched_with_difference",
        Unmatched => "unmatched",
        Duplicate => "duplicate",
        Expected => "expected",
        WrittenOff => "written_off",
        AwaitingApproval => "awaiting_approval",
    }
);

/// One item and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Item {
    pub side: ItemSide,
    pub id: String,
    pub amount_minor: i64,
    #[schema(value_type = String, example = "EUR")]
    pub currency: Currency,
    #[schema(value_type = String, format = Date)]
    pub date: NaiveDate,
    pub status: ItemStatus,
    /// The decision that decides it (a match, duplicate or write-off), if any.
    pub decision: Option<String>,
    pub rule: Option<String>,
    /// The decision's difference (Σ theirs − Σ ours) for a match.
    pub difference_minor: i64,
    /// A rule's decision a person must confirm (a difference beyond tolerance, a duplicate).
    pub needs_review: bool,
    #[schema(value_type = Option<String>, format = Date)]
    pub expected_by: Option<NaiveDate>,
    /// Days from the item's date to `as_of`.
    pub age_days: i64,
    pub references: Vec<String>,
}

impl Item {
    /// Whether people must work it: unmatched, or decided by a rule that needs a person's review.
    pub fn is_exception(&self) -> bool {
        self.status == ItemStatus::Unmatched || self.needs_review
    }
}

/// Every item of `ours` and `theirs` with its state on `as_of`. `decisions` are those of one kind
/// (any state: only those in force or awaiting approval decide); an unmatched record of ours is
/// `expected` while its date plus `window_days` has not passed, or while a person's expectation
/// (the latest `expect` on it) has not.
pub fn item_states(
    ours: &[OurRecord],
    theirs: &[TheirEntry],
    decisions: &[Decision],
    as_of: NaiveDate,
    window_days: u32,
) -> Vec<Item> {
    let mut deciding: HashMap<String, &Decision> = HashMap::new();
    let mut expected: HashMap<String, &Decision> = HashMap::new();
    for d in decisions {
        let live = matches!(
            d.state,
            DecisionState::InForce | DecisionState::AwaitingApproval
        );
        if live && d.action.claims_items() {
            for key in d.item_keys() {
                deciding.insert(key, d);
            }
        }
        if d.action == DecisionAction::Expect && d.state == DecisionState::InForce {
            let keys = d
                .ours
                .iter()
                .map(|id| ours_key(id))
                .chain(d.theirs.iter().map(|id| theirs_key(id)));
            for key in keys {
                let later = expected
                    .get(&key)
                    .is_none_or(|e| (e.decided_at, &e.id) <= (d.decided_at, &d.id));
                if later {
                    expected.insert(key, d);
                }
            }
        }
    }
    let state = |side: ItemSide,
                 key: String,
                 id: &str,
                 amount_minor: i64,
                 currency: Currency,
                 date: NaiveDate,
                 references: &[String]| {
        let mut item = Item {
            side,
            id: id.to_string(),
            amount_minor,
            currency,
            date,
            status: ItemStatus::Unmatched,
            decision: None,
            rule: None,
            difference_minor: 0,
            needs_review: false,
            expected_by: None,
            age_days: (as_of - date).num_days(),
            references: references.to_vec(),
        };
        if let Some(d) = deciding.get(&key) {
            item.decision = Some(d.id.clone());
            item.rule = Some(d.rule.clone());
            item.needs_review = d.needs_review;
            item.status = match (d.action, d.state) {
                (DecisionAction::Match, _) if d.amount_minor != 0 => {
                    item.difference_minor = d.amount_minor;
                    ItemStatus::MatchedWithDifference
                }
                (DecisionAction::Match, _) => ItemStatus::Matched,
                (DecisionAction::Duplicate, _) => ItemStatus::Duplicate,
                (_, DecisionState::AwaitingApproval) => ItemStatus::AwaitingApproval,
                _ => ItemStatus::WrittenOff,
            };
            return item;
        }
        let by_person = expected.get(&key).and_then(|e| e.expected_by);
        let by_window =
            (side == ItemSide::Ours).then(|| date + chrono::Duration::days(window_days as i64));
        let due = by_person.into_iter().chain(by_window).max();
        if let Some(due) = due.filter(|due| *due >= as_of) {
            item.status = ItemStatus::Expected;
            item.expected_by = Some(due);
        }
        item
    };
    let mut items = Vec::with_capacity(ours.len() + theirs.len());
    for o in ours {
        items.push(state(
            ItemSide::Ours,
            ours_key(&o.id),
            &o.id,
            o.amount_minor,
            o.currency,
            o.date,
            &o.references,
        ));
    }
    for t in theirs {
        items.push(state(
            ItemSide::Theirs,
            theirs_key(&t.id),
            &t.id,
            t.amount_minor,
            t.currency,
            t.booking_date,
            &t.references,
        ));
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::statement::StatementKind;
    use chrono::{DateTime, Utc};

    fn day(d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 3, d).unwrap()
    }

    fn usd() -> Currency {
        Currency::from_code("USD").unwrap()
    }

    fn decision(id: &str, action: DecisionAction, state: DecisionState) -> Decision {
        Decision {
            id: id.into(),
            kind: StatementKind::Bank,
            action,
            state,
            rule: "reference".into(),
            ours: vec![],
            theirs: vec![],
            currency: None,
            amount_minor: 0,
            needs_review: false,
            target: None,
            reason: None,
            category: None,
            expected_by: None,
            actor: "cli:a".into(),
            decided_at: "2026-03-05T00:00:00Z".parse::<DateTime<Utc>>().unwrap(),
        }
    }

    fn record(id: &str, d: u32) -> OurRecord {
        OurRecord {
            id: id.into(),
            amount_minor: -100,
            currency: usd(),
            date: day(d),
            references: vec![],
        }
    }

    fn entry(id: &str, d: u32) -> TheirEntry {
        TheirEntry {
            id: id.into(),
            amount_minor: -100,
            currency: usd(),
            booking_date: day(d),
            value_date: None,
            references: vec![],
            external_id: None,
        }
    }

    #[test]
    fn states_follow_the_decisions_in_force_the_window_and_expectations() {
        let ours = [
            record("matched", 1),
            record("late", 8),
            record("old", 1),
            record("promised", 1),
            record("reversed", 1),
        ];
        let theirs = [
            entry("e-matched", 2),
            entry("e-dup", 2),
            entry("e-off", 2),
            entry("e-wait", 2),
        ];
        let decisions = vec![
            Decision {
                ours: vec!["matched".into()],
                theirs: vec!["e-matched".into()],
                amount_minor: -5,
                ..decision("m1", DecisionAction::Match, DecisionState::InForce)
            },
            Decision {
                ours: vec!["reversed".into()],
                ..decision("m0", DecisionAction::Match, DecisionState::Reversed)
            },
            Decision {
                theirs: vec!["e-dup".into()],
                needs_review: true,
                ..decision("d1", DecisionAction::Duplicate, DecisionState::InForce)
            },
            Decision {
                theirs: vec!["e-off".into()],
                ..decision("w1", DecisionAction::WriteOff, DecisionState::InForce)
            },
            Decision {
                theirs: vec!["e-wait".into()],
                ..decision(
                    "w2",
                    DecisionAction::WriteOff,
                    DecisionState::AwaitingApproval,
                )
            },
            Decision {
                ours: vec!["promised".into()],
                expected_by: Some(day(20)),
                ..decision("x1", DecisionAction::Expect, DecisionState::InForce)
            },
        ];
        let items = item_states(&ours, &theirs, &decisions, day(10), 3);
        let got: Vec<(&str, ItemStatus, bool, i64)> = items
            .iter()
            .map(|i| (i.id.as_str(), i.status, i.is_exception(), i.age_days))
            .collect();
        use ItemStatus::*;
        assert_eq!(
            got,
            vec![
                ("matched", MatchedWithDifference, false, 9),
                ("late", Expected, false, 2),
                ("old", Unmatched, true, 9),
                ("promised", Expected, false, 9),
                ("reversed", Unmatched, true, 9),
                ("e-matched", MatchedWithDifference, false, 8),
                ("e-dup", Duplicate, true, 8),
                ("e-off", WrittenOff, false, 8),
                ("e-wait", AwaitingApproval, false, 8),
            ]
        );
        assert_eq!(items[0].difference_minor, -5);
        assert_eq!(items[1].expected_by, Some(day(11)));
        // The window passes: the late record becomes an exception.
        let later = item_states(&ours, &theirs, &decisions, day(12), 3);
        assert_eq!(later[1].status, Unmatched);
    }
}
