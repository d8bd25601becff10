//! `[reconciliation]`: the ordered matching rules, the write-off amount above which a second person
//! must approve, and how long a record of ours is only expected; the defaults when the config is silent.

use std::collections::BTreeMap;

use crate::reconcile::MatchRule;
pub use settle_statements::CsvProfile;

/// Write-offs above this many minor units (in absolute value) wait for a second person.
pub const DEFAULT_APPROVAL_ABOVE_MINOR: i64 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconciliationSettings {
    /// Run in order; the first rule that matches an item decides it.
    pub rules: Vec<MatchRule>,
    /// A write-off of more than this (absolute, minor units of its currency) needs an approver.
    pub approval_above_minor: i64,
    /// Bank CSV column profiles by name (`[reconciliation.profiles.NAME]`).
    pub profiles: BTreeMap<String, CsvProfile>,
}

impl Default for ReconciliationSettings {
    fn default() -> Self {
        ReconciliationSettings {
            rules: MatchRule::defaults(),
            approval_above_minor: DEFAULT_APPROVAL_ABOVE_MINOR,
            profiles: BTreeMap::new(),
        }
    }
}

impl ReconciliationSettings {
    /// How long an unmatched record of ours is only expected: the widest rule window.
    pub fn expected_window_days(&self) -> u32 {
        MatchRule::widest_window_days(&self.rules)
    }
}
