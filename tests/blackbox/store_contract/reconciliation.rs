//! The reconciliation part of the store contract: statements stored once by identity and all or
//! nothing, decisions that claim each item once and are undone only by new decisions.

use chrono::{DateTime, NaiveDate, Utc};
use settle_core::money::Currency;
use settle_core::reconcile::{
    Decision, DecisionAction, DecisionState, StatementEntry, StatementFormat, StatementIdentity,
    StatementKind, WriteOffCategory, MANUAL_RULE,
};
use settle_core::store::{
    DecisionFilter, DecisionWrite, EntryFilter, ImportOutcome, StatementImport, StoredEntry,
    StoredStatement,
};

use super::TestStore;

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, d).unwrap()
}

fn now() -> DateTime<Utc> {
    "2026-03-10T12:00:00Z".parse().unwrap()
}

fn statement(kind: StatementKind, sequence: &str, entries: &[(i64, u32)]) -> StatementImport {
    let usd = Currency::from_code("USD").unwrap();
    let identity = StatementIdentity {
        kind,
        account: "ACC-1".into(),
        period_start: day(1),
        period_end: day(31),
        sequence: sequence.into(),
    };
    let id = identity.key();
    let entries = entries
        .iter()
        .enumerate()
        .map(|(position, (amount_minor, d))| StoredEntry {
            id: StoredEntry::id_of(&id, position as u32),
            statement_id: id.clone(),
            kind,
            position: position as u32,
            entry: StatementEntry {
                source: format!("line {}", position + 2),
                amount_minor: *amount_minor,
                currency: usd,
                booking_date: day(*d),
                value_date: Some(day(*d + 1)),
                booked_at: None,
                references: vec![format!("REF-{sequence}-{position}")],
                external_id: Some(format!("X{sequence}{position}")),
                counterparty: Some("Merchant ü".into()),
                description: "a payout, with \"quotes\"".into(),
                fee_minor: None,
                status: None,
                reversal: position == 1,
            },
        })
        .collect::<Vec<_>>();
    StatementImport {
        statement: StoredStatement {
            id,
            identity,
            format: StatementFormat::Camt053,
            currency: usd,
            opening_balance_minor: Some(0),
            closing_balance_minor: Some(entries.iter().map(|e| e.entry.amount_minor).sum()),
            entry_count: entries.len() as u32,
            file_sha256: "ab".repeat(32),
            imported_at: now(),
            imported_by: "cli:alice".into(),
        },
        entries,
    }
}

fn decision(id: &str, action: DecisionAction, ours: &[&str], theirs: &[&str]) -> Decision {
    Decision {
        id: id.into(),
        kind: StatementKind::Bank,
        action,
        state: DecisionState::InForce,
        rule: MANUAL_RULE.into(),
        ours: ours.iter().map(|s| s.to_string()).collect(),
        theirs: theirs.iter().map(|s| s.to_string()).collect(),
        currency: None,
        amount_minor: 0,
        needs_review: false,
        target: None,
        reason: None,
        category: None,
        expected_by: None,
        actor: "cli:alice".into(),
        decided_at: now(),
    }
}

fn acting(id: &str, action: DecisionAction, target: &str) -> Decision {
    Decision {
        target: Some(target.into()),
        ..decision(id, action, &[], &[])
    }
}

pub async fn statements_are_stored_once_by_identity_with_all_their_entries(t: TestStore) {
    let store = &t.store;
    let first = statement(StatementKind::Bank, "1", &[(-1_000, 2), (250, 3), (-40, 9)]);
    let second = statement(StatementKind::Bank, "2", &[(-7, 20)]);
    let outcomes = store
        .import_statements(vec![first.clone(), second.clone()])
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        vec![ImportOutcome::Imported, ImportOutcome::Imported]
    );

    // The same file again, and a file with one known and one new statement.
    let third = statement(StatementKind::Payouts, "1", &[(500, 4)]);
    let again = store
        .import_statements(vec![second.clone(), third.clone()])
        .await
        .unwrap();
    assert_eq!(
        again,
        vec![
            ImportOutcome::AlreadyImported {
                imported_at: now(),
                imported_by: "cli:alice".into()
            },
            ImportOutcome::Imported
        ]
    );

    let reopened = (t.reopen)().await;
    let bank = reopened
        .statements(Some(StatementKind::Bank))
        .await
        .unwrap();
    assert_eq!(
        bank,
        vec![first.statement.clone(), second.statement.clone()]
    );
    assert_eq!(reopened.statements(None).await.unwrap().len(), 3);

    let all = reopened
        .statement_entries(&EntryFilter {
            kind: StatementKind::Bank,
            booked_from: None,
            booked_to: None,
        })
        .await
        .unwrap();
    let expected: Vec<StoredEntry> = first
        .entries
        .iter()
        .chain(&second.entries)
        .cloned()
        .collect();
    assert_eq!(
        all, expected,
        "entries read back exactly, in statement and file order"
    );

    let window = reopened
        .statement_entries(&EntryFilter {
            kind: StatementKind::Bank,
            booked_from: Some(day(3)),
            booked_to: Some(day(9)),
        })
        .await
        .unwrap();
    let ids: Vec<&str> = window.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![first.entries[1].id.as_str(), first.entries[2].id.as_str()]
    );
}

pub async fn decisions_claim_each_item_once_and_are_undone_only_by_new_decisions(t: TestStore) {
    let store = &t.store;
    use DecisionAction::*;
    let m1 = decision("m1", Match, &["P1", "P2"], &["E1"]);
    let overlapping = decision("m2", Match, &["P3"], &["E1"]);
    let writes = store
        .record_decisions(vec![m1.clone(), overlapping.clone(), m1.clone()])
        .await
        .unwrap();
    assert_eq!(
        writes,
        vec![
            DecisionWrite::Recorded,
            DecisionWrite::ItemTaken {
                item: "theirs:E1".into(),
                by: "m1".into()
            },
            DecisionWrite::AlreadyRecorded,
        ]
    );
    assert_eq!(
        store.decision("m2").await.unwrap(),
        None,
        "a refused decision leaves nothing"
    );
    // The same ids on another kind are other items.
    let other_kind = Decision {
        kind: StatementKind::Payouts,
        ..decision("m3", Match, &["P1"], &["E1"])
    };
    assert_eq!(
        store.record_decisions(vec![other_kind]).await.unwrap(),
        vec![DecisionWrite::Recorded]
    );

    // Unmatch releases the items; a second unmatch finds nothing open.
    let writes = store
        .record_decisions(vec![
            acting("u1", Unmatch, "m1"),
            acting("u2", Unmatch, "m1"),
            decision("m4", Match, &["P1"], &["E1"]),
            acting("u3", Unmatch, "nope"),
        ])
        .await
        .unwrap();
    assert_eq!(
        writes,
        vec![
            DecisionWrite::Recorded,
            DecisionWrite::TargetNotOpen {
                target: "m1".into()
            },
            DecisionWrite::Recorded,
            DecisionWrite::TargetNotOpen {
                target: "nope".into()
            },
        ]
    );
    assert_eq!(
        store.decision("m1").await.unwrap().unwrap().state,
        DecisionState::Reversed
    );
    assert_eq!(
        store.decision("m1").await.unwrap().unwrap().ours,
        m1.ours,
        "content unchanged"
    );

    // A large write-off waits; approve puts it in force; a write-off rejected frees its item.
    let waiting = |id: &str, item: &str| Decision {
        state: DecisionState::AwaitingApproval,
        amount_minor: -9_999,
        reason: Some("bank charge".into()),
        category: Some(WriteOffCategory::BankFee),
        ..decision(id, WriteOff, &[], &[item])
    };
    let writes = store
        .record_decisions(vec![
            waiting("w1", "E7"),
            acting("a0", Approve, "m4"),
            acting("a1", Approve, "w1"),
            acting("r1", Reject, "w1"),
            waiting("w2", "E8"),
            acting("r2", Reject, "w2"),
            decision("m5", Match, &["P9"], &["E8"]),
            decision("m6", Match, &["P10"], &["E7"]),
            Decision {
                expected_by: Some(day(20)),
                ..decision("x1", Expect, &["P11"], &[])
            },
            Decision {
                expected_by: Some(day(25)),
                ..decision("x2", Expect, &["P11"], &[])
            },
        ])
        .await
        .unwrap();
    assert_eq!(
        writes,
        vec![
            DecisionWrite::Recorded,
            DecisionWrite::TargetNotOpen {
                target: "m4".into()
            },
            DecisionWrite::Recorded,
            DecisionWrite::TargetNotOpen {
                target: "w1".into()
            },
            DecisionWrite::Recorded,
            DecisionWrite::Recorded,
            DecisionWrite::Recorded,
            DecisionWrite::ItemTaken {
                item: "theirs:E7".into(),
                by: "w1".into()
            },
            DecisionWrite::Recorded,
            DecisionWrite::Recorded,
        ]
    );

    let reopened = (t.reopen)().await;
    let states = |filter: DecisionFilter| {
        let store = reopened.clone();
        async move {
            store
                .decisions(&filter)
                .await
                .unwrap()
                .into_iter()
                .map(|d| (d.id, d.state))
                .collect::<Vec<_>>()
        }
    };
    let bank_in_force = states(DecisionFilter {
        kind: Some(StatementKind::Bank),
        states: vec![DecisionState::InForce],
    })
    .await;
    let mut ids: Vec<&str> = bank_in_force.iter().map(|(id, _)| id.as_str()).collect();
    ids.sort();
    assert_eq!(
        ids,
        vec!["a1", "m4", "m5", "r2", "u1", "w1", "x1", "x2"],
        "acting decisions are in force as records; reversed and rejected ones are not"
    );
    let all = states(DecisionFilter::default()).await;
    assert_eq!(all.len(), 11);
    assert!(all.contains(&("w2".into(), DecisionState::Rejected)));
    assert!(all.contains(&("m3".into(), DecisionState::InForce)));
}

pub async fn concurrent_decisions_on_one_item_have_exactly_one_winner(t: TestStore) {
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = t.store.clone();
        tasks.push(tokio::spawn(async move {
            let d = decision(
                &format!("c{i}"),
                DecisionAction::Match,
                &[&format!("P{i}")],
                &["E"],
            );
            store.record_decisions(vec![d]).await.unwrap().remove(0)
        }));
    }
    let mut recorded = 0;
    for task in tasks {
        match task.await.unwrap() {
            DecisionWrite::Recorded => recorded += 1,
            DecisionWrite::ItemTaken { item, .. } => assert_eq!(item, "theirs:E"),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(recorded, 1);
    let matched = t.store.decisions(&DecisionFilter::default()).await.unwrap();
    assert_eq!(matched.len(), 1, "{matched:?}");
}

/// `settle migrate`'s way in: decisions stored as they are elsewhere, state included; only those
/// holding items claim them, so a reversed match leaves its items open and a write-off waiting
/// for approval holds its own.
pub async fn restored_decisions_keep_their_state_and_claim_only_what_they_hold(t: TestStore) {
    let store = &t.store;
    let reversed = Decision {
        state: DecisionState::Reversed,
        ..decision("m1", DecisionAction::Match, &["P1"], &["E1"])
    };
    let waiting = Decision {
        state: DecisionState::AwaitingApproval,
        ..decision("w1", DecisionAction::WriteOff, &[], &["E2"])
    };
    let undo = acting("u1", DecisionAction::Unmatch, "m1");
    let held = decision("m2", DecisionAction::Match, &["P3"], &["E3"]);
    let writes = store
        .restore_decisions(vec![
            reversed.clone(),
            waiting.clone(),
            undo.clone(),
            held.clone(),
        ])
        .await
        .unwrap();
    assert_eq!(writes, vec![DecisionWrite::Recorded; 4]);
    let mut stored = store.decisions(&DecisionFilter::default()).await.unwrap();
    stored.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(stored, vec![reversed.clone(), held.clone(), undo, waiting]);

    // Again: nothing changes.
    let again = store
        .restore_decisions(vec![reversed, held.clone()])
        .await
        .unwrap();
    assert_eq!(again, vec![DecisionWrite::AlreadyRecorded; 2]);

    // The reversed match's items are open; the held ones are claimed.
    let rematch = decision("m3", DecisionAction::Match, &["P1"], &["E1"]);
    let on_waiting = decision("m4", DecisionAction::Match, &["P2"], &["E2"]);
    let on_held = Decision {
        id: "m5".into(),
        ..held
    };
    let writes = store
        .record_decisions(vec![rematch, on_waiting, on_held.clone()])
        .await
        .unwrap();
    assert_eq!(writes[0], DecisionWrite::Recorded);
    assert_eq!(
        writes[1],
        DecisionWrite::ItemTaken {
            item: "theirs:E2".into(),
            by: "w1".into()
        }
    );
    assert!(
        matches!(&writes[2], DecisionWrite::ItemTaken { by, .. } if by == "m2"),
        "{writes:?}"
    );
    // A restored decision whose item is held here is refused, and nothing of it is kept.
    let clash = store
        .restore_decisions(vec![Decision {
            id: "m6".into(),
            ..on_held
        }])
        .await
        .unwrap();
    assert!(
        matches!(&clash[0], DecisionWrite::ItemTaken { by, .. } if by == "m2"),
        "{clash:?}"
    );
    assert_eq!(store.decision("m6").await.unwrap(), None);
}
