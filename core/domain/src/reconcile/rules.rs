//! The matching rules: named, ordered, each with its tolerance (absolute minor units and/or percent)
//! and date window; the defaults Settle runs when the config names none.

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::model::named_enum;

named_enum!(
    /// `reference` (a shared reference: payout reference, external reference, end-to-end id) ·
    /// `amount_date` (same currency, amount within tolerance, dates within the window, one each
    /// side) · `group` (one entry is the exact sum of several records, or the reverse, on one date).
    RuleKind, "rule kind" {
        Reference => "reference",
        AmountDate => "amount_date",
        Group => "group",
    }
);

/// How far two amounts may differ and still match: within `absolute_minor`, or within `percent`
/// of our amount (rounded half away from zero to minor units), whichever allows more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Tolerance {
    pub absolute_minor: i64,
    pub percent: Decimal,
}

impl Tolerance {
    pub const EXACT: Tolerance = Tolerance {
        absolute_minor: 0,
        percent: Decimal::ZERO,
    };

    /// The largest difference allowed against `ours_minor`.
    pub fn allowed_minor(&self, ours_minor: i64) -> i64 {
        let by_percent = (Decimal::from(ours_minor.unsigned_abs()) * self.percent
            / Decimal::ONE_HUNDRED)
            .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
            .try_into()
            .unwrap_or(i64::MAX);
        self.absolute_minor.max(by_percent)
    }

    /// Whether `difference_minor` (theirs − ours) is within the tolerance for `ours_minor`.
    pub fn allows(&self, ours_minor: i64, difference_minor: i64) -> bool {
        difference_minor.unsigned_abs() <= self.allowed_minor(ours_minor).unsigned_abs()
    }
}

/// Most records one group may hold in the bounded subset search (the whole-date sum has no limit).
pub const MAX_GROUP_SIZE_CEILING: usize = 12;
/// Most candidates the subset search looks at for one entry; more are left to people.
pub const GROUP_CANDIDATES_CEILING: usize = 40;

/// One configured rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchRule {
    pub name: String,
    pub kind: RuleKind,
    pub tolerance: Tolerance,
    /// Dates (ours against the entry's booking or value date) may differ by this many days.
    pub date_window_days: u32,
    /// `group` only: most records in one group found by the subset search.
    pub max_group_size: usize,
}

impl MatchRule {
    /// The rules Settle runs when the config names none: exact reference, then exact amount within
    /// two days, then groups of up to eight on one date.
    pub fn defaults() -> Vec<MatchRule> {
        vec![
            MatchRule {
                name: "reference".into(),
                kind: RuleKind::Reference,
                tolerance: Tolerance::EXACT,
                date_window_days: 5,
                max_group_size: 1,
            },
            MatchRule {
                name: "amount-date".into(),
                kind: RuleKind::AmountDate,
                tolerance: Tolerance::EXACT,
                date_window_days: 2,
                max_group_size: 1,
            },
            MatchRule {
                name: "group".into(),
                kind: RuleKind::Group,
                tolerance: Tolerance::EXACT,
                date_window_days: 2,
                max_group_size: 8,
            },
        ]
    }

    /// The widest date window of `rules`: how long an unmatched record of ours is only expected.
    pub fn widest_window_days(rules: &[MatchRule]) -> u32 {
        rules.iter().map(|r| r.date_window_days).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn percent_and_absolute_tolerances_take_the_wider() {
        let t = Tolerance {
            absolute_minor: 5,
            percent: Decimal::new(1, 0),
        };
        assert_eq!(t.allowed_minor(100), 5);
        assert_eq!(t.allowed_minor(10_000), 100);
        assert_eq!(t.allowed_minor(-10_050), 101); // 100.5 rounds away from zero
        assert!(t.allows(10_000, -100));
        assert!(!t.allows(10_000, 101));
        assert!(Tolerance::EXACT.allows(7, 0));
        assert!(!Tolerance::EXACT.allows(7, 1));
    }

    proptest! {
        #[test]
        fn tolerance_is_symmetric_in_the_sign_of_the_difference(
            ours in -1_000_000_000i64..1_000_000_000,
            diff in -1_000_000i64..1_000_000,
            abs in 0i64..10_000,
            bp in 0u32..500,
        ) {
            let t = Tolerance { absolute_minor: abs, percent: Decimal::new(bp as i64, 2) };
            prop_assert_eq!(t.allows(ours, diff), t.allows(ours, -diff));
            prop_assert_eq!(t.allows(ours, diff), t.allows(-ours, diff));
            prop_assert!(t.allows(ours, 0));
        }
    }
}
