//! The matcher's tests: each rule on its own, the order of the rules, duplicates, and properties
//! (order independence, nothing used twice, sums within tolerance, planted discrepancies found).

use super::*;
use crate::reconcile::rules::{MatchRule, RuleKind, Tolerance};
use proptest::prelude::*;
use rust_decimal::Decimal;

fn usd() -> Currency {
    Currency::from_code("USD").unwrap()
}

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, d).unwrap()
}

fn ours(id: &str, amount_minor: i64, d: u32, references: &[&str]) -> OurRecord {
    OurRecord {
        id: id.into(),
        amount_minor,
        currency: usd(),
        date: day(d),
        references: references.iter().map(|r| r.to_string()).collect(),
    }
}

fn theirs(id: &str, amount_minor: i64, d: u32, references: &[&str]) -> TheirEntry {
    TheirEntry {
        id: id.into(),
        amount_minor,
        currency: usd(),
        booking_date: day(d),
        value_date: None,
        references: references.iter().map(|r| r.to_string()).collect(),
        external_id: None,
    }
}

/// (rule, ours, theirs, difference, within tolerance) of one match.
type Pair = (String, Vec<String>, Vec<String>, i64, bool);

fn pairs(outcome: &MatchOutcome) -> Vec<Pair> {
    outcome
        .matches
        .iter()
        .map(|m| {
            (
                m.rule.clone(),
                m.ours.clone(),
                m.theirs.clone(),
                m.difference_minor,
                m.within_tolerance,
            )
        })
        .collect()
}

#[test]
fn a_shared_reference_matches_and_a_difference_beyond_tolerance_is_kept_for_review() {
    let outcome = run(
        &MatchRule::defaults(),
        &[
            ours("p1", 10_000, 2, &["R1"]),
            ours("p2", 5_000, 2, &["R2"]),
        ],
        &[
            theirs("e1", 10_000, 3, &["R1"]),
            theirs("e2", 4_970, 3, &["R2"]),
        ],
        &[],
    );
    assert_eq!(
        pairs(&outcome),
        vec![
            (
                "reference".into(),
                vec!["p1".into()],
                vec!["e1".into()],
                0,
                true
            ),
            (
                "reference".into(),
                vec!["p2".into()],
                vec!["e2".into()],
                -30,
                false
            ),
        ]
    );
}

#[test]
fn a_reference_outside_the_date_window_or_shared_by_two_records_does_not_match_by_reference() {
    let outcome = run(
        &MatchRule::defaults()[..1],
        &[
            ours("p1", 100, 1, &["R1"]),
            ours("p2", 200, 2, &["SHARED"]),
            ours("p3", 300, 2, &["SHARED"]),
        ],
        &[
            theirs("e1", 100, 20, &["R1"]),
            theirs("e2", 200, 2, &["SHARED"]),
        ],
        &[],
    );
    assert!(outcome.matches.is_empty(), "{outcome:?}");
}

#[test]
fn amount_and_date_match_only_a_unique_best_candidate() {
    let rules = vec![MatchRule {
        name: "amount".into(),
        kind: RuleKind::AmountDate,
        tolerance: Tolerance {
            absolute_minor: 10,
            percent: Decimal::ZERO,
        },
        date_window_days: 2,
        max_group_size: 1,
    }];
    let outcome = run(
        &rules,
        &[
            ours("p1", 1_000, 2, &[]),
            ours("p2", 2_000, 2, &[]),
            ours("p3", 2_000, 2, &[]),
        ],
        &[theirs("e1", 1_005, 4, &[]), theirs("e2", 2_000, 3, &[])],
        &[],
    );
    // e1 is 5 off p1 and within 2 days; e2 ties between p2 and p3, so it waits for people.
    assert_eq!(
        pairs(&outcome),
        vec![(
            "amount".into(),
            vec!["p1".into()],
            vec!["e1".into()],
            5,
            true
        )]
    );
}

#[test]
fn a_batched_debit_matches_the_days_payouts_and_a_split_payment_matches_its_parts() {
    let outcome = run(
        &MatchRule::defaults(),
        &[
            ours("p1", -1_000, 2, &[]),
            ours("p2", -2_500, 2, &[]),
            ours("p3", -700, 2, &[]),
            ours("p4", -9_000, 5, &[]),
        ],
        &[
            theirs("e1", -4_200, 3, &[]),
            theirs("e2", -4_000, 6, &[]),
            theirs("e3", -5_000, 6, &[]),
        ],
        &[],
    );
    assert_eq!(
        pairs(&outcome),
        vec![
            (
                "group".into(),
                vec!["p1".into(), "p2".into(), "p3".into()],
                vec!["e1".into()],
                0,
                true
            ),
            (
                "group".into(),
                vec!["p4".into()],
                vec!["e2".into(), "e3".into()],
                0,
                true
            ),
        ]
    );
}

#[test]
fn the_subset_search_finds_a_group_inside_a_larger_day() {
    let outcome = run(
        &MatchRule::defaults()[2..],
        &[
            ours("a", 300, 2, &[]),
            ours("b", 450, 2, &[]),
            ours("c", 1_000, 2, &[]),
            ours("d", 125, 2, &[]),
        ],
        &[theirs("e", 875, 2, &[])],
        &[],
    );
    assert_eq!(outcome.matches.len(), 1);
    let mut found = outcome.matches[0].ours.clone();
    found.sort();
    let sum: i64 = found
        .iter()
        .map(|id| match id.as_str() {
            "a" => 300,
            "b" => 450,
            "c" => 1_000,
            _ => 125,
        })
        .sum();
    assert_eq!(sum, 875);
}

#[test]
fn a_repeated_entry_is_a_duplicate_of_the_first_or_of_a_settled_one() {
    let mut settled = theirs("old", 900, 1, &["R9"]);
    settled.external_id = Some("BANK-1".into());
    let mut again = theirs("new", 900, 1, &["other"]);
    again.external_id = Some("BANK-1".into());
    let outcome = run(
        &MatchRule::defaults(),
        &[ours("p1", 100, 2, &["R1"])],
        &[
            theirs("e1", 100, 2, &["R1"]),
            theirs("e2", 100, 2, &["R1"]),
            again,
        ],
        &[settled],
    );
    assert_eq!(
        outcome.duplicates,
        // In booking-date order: `new` (day 1) before `e2` (day 2).
        vec![
            Duplicate {
                currency: usd(),
                theirs: "new".into(),
                of: "old".into()
            },
            Duplicate {
                currency: usd(),
                theirs: "e2".into(),
                of: "e1".into()
            },
        ]
    );
    assert_eq!(outcome.matches.len(), 1);
    assert_eq!(outcome.matches[0].theirs, vec!["e1".to_string()]);
}

fn arb_case() -> impl Strategy<Value = (Vec<OurRecord>, Vec<TheirEntry>)> {
    let record = (1i64..50, 1u32..28, prop::bool::ANY);
    prop::collection::vec(record, 0..30).prop_map(|rows| {
        let mut o = Vec::new();
        let mut t = Vec::new();
        for (i, (amount, d, with_reference)) in rows.into_iter().enumerate() {
            let reference = format!("R{i}");
            let refs: &[&str] = if with_reference { &[&reference] } else { &[] };
            o.push(ours(&format!("o{i:02}"), amount * 10, d, refs));
            if i % 3 != 0 {
                t.push(theirs(
                    &format!("t{i:02}"),
                    amount * 10,
                    d + (i as u32 % 2),
                    refs,
                ));
            }
        }
        (o, t)
    })
}

proptest! {
    #[test]
    fn the_outcome_does_not_depend_on_input_order_and_uses_nothing_twice(
        (o, t) in arb_case(),
        seed in any::<u64>(),
    ) {
        let rules = MatchRule::defaults();
        let first = run(&rules, &o, &t, &[]);
        let mut o2 = o.clone();
        let mut t2 = t.clone();
        let n = o2.len().max(1);
        o2.rotate_left(seed as usize % n);
        t2.reverse();
        prop_assert_eq!(&first, &run(&rules, &o2, &t2, &[]));

        let mut seen_ours = std::collections::HashSet::new();
        let mut seen_theirs = std::collections::HashSet::new();
        for m in &first.matches {
            prop_assert!(!m.ours.is_empty() && !m.theirs.is_empty());
            for id in &m.ours { prop_assert!(seen_ours.insert(id.clone()), "ours {} twice", id); }
            for id in &m.theirs { prop_assert!(seen_theirs.insert(id.clone()), "theirs {} twice", id); }
            let ours_sum: i64 = m.ours.iter().map(|id| o.iter().find(|r| &r.id == id).unwrap().amount_minor).sum();
            let theirs_sum: i64 = m.theirs.iter().map(|id| t.iter().find(|r| &r.id == id).unwrap().amount_minor).sum();
            prop_assert_eq!(m.difference_minor, theirs_sum - ours_sum);
            // Exact rules: every match is exact.
            prop_assert_eq!(m.difference_minor, 0);
        }
    }

    #[test]
    fn every_entry_with_a_unique_reference_matches_its_record(
        amounts in prop::collection::vec(1i64..1_000_000, 1..40),
        missing in prop::collection::btree_set(0usize..40, 0..5),
    ) {
        let o: Vec<OurRecord> = amounts.iter().enumerate()
            .map(|(i, a)| ours(&format!("o{i}"), *a, 5, &[&format!("REF-{i}")])).collect();
        let t: Vec<TheirEntry> = amounts.iter().enumerate()
            .filter(|(i, _)| !missing.contains(i))
            .map(|(i, a)| theirs(&format!("t{i}"), *a, 6, &[&format!("REF-{i}")])).collect();
        let outcome = run(&MatchRule::defaults()[..1], &o, &t, &[]);
        prop_assert_eq!(outcome.matches.len(), t.len());
        for m in &outcome.matches {
            prop_assert_eq!(&m.ours[0][1..], &m.theirs[0][1..]);
        }
    }
}
