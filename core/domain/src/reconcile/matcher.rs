//! The matcher: runs the ordered rules over the open records of ours and the open statement entries,
//! deterministically, and says which rule matched what with which difference. Pure and re-runnable.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::money::Currency;

use super::rules::{
    MatchRule, RuleKind, Tolerance, GROUP_CANDIDATES_CEILING, MAX_GROUP_SIZE_CEILING,
};

/// Steps the bounded subset search may take for one entry before it gives up (and leaves the
/// entry to people).
pub const GROUP_SEARCH_STEPS: u32 = 200_000;

/// A record of ours as the matcher sees it: a payout or a transaction, its amount signed the way
/// the statement would show it, its business date and the references it may appear under.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OurRecord {
    pub id: String,
    pub amount_minor: i64,
    pub currency: Currency,
    pub date: NaiveDate,
    pub references: Vec<String>,
}

/// A statement entry as the matcher sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TheirEntry {
    pub id: String,
    pub amount_minor: i64,
    pub currency: Currency,
    pub booking_date: NaiveDate,
    pub value_date: Option<NaiveDate>,
    pub references: Vec<String>,
    pub external_id: Option<String>,
}

/// One match the rules made: which rule, which records each side, and the difference
/// (Σ theirs − Σ ours). `within_tolerance` is false only for a reference match whose amounts differ
/// by more than the rule allows: the pair is certain, the amount is an exception for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchDecision {
    pub rule: String,
    pub currency: Currency,
    pub kind: RuleKind,
    pub ours: Vec<String>,
    pub theirs: Vec<String>,
    pub difference_minor: i64,
    pub within_tolerance: bool,
}

/// An entry that repeats another (same currency, amount, booking date and references, or the same
/// sender id): kept out of matching and shown to people as a duplicate of `of`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Duplicate {
    pub currency: Currency,
    pub theirs: String,
    pub of: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchOutcome {
    pub matches: Vec<MatchDecision>,
    pub duplicates: Vec<Duplicate>,
}

/// Runs `rules` in order over the open `ours` and `theirs`. `settled` are entries matched or
/// decided earlier: they are never matched again, but a new entry that repeats one is a duplicate.
/// The outcome depends only on the inputs' content, not on their order.
pub fn run(
    rules: &[MatchRule],
    ours: &[OurRecord],
    theirs: &[TheirEntry],
    settled: &[TheirEntry],
) -> MatchOutcome {
    let mut ours: Vec<&OurRecord> = ours.iter().collect();
    ours.sort_by(|a, b| (a.date, &a.id).cmp(&(b.date, &b.id)));
    let mut theirs: Vec<&TheirEntry> = theirs.iter().collect();
    theirs.sort_by(|a, b| (a.booking_date, &a.id).cmp(&(b.booking_date, &b.id)));

    let duplicates = find_duplicates(&theirs, settled);
    let duplicate_ids: HashSet<&str> = duplicates.iter().map(|d| d.theirs.as_str()).collect();
    let mut state = State {
        ours,
        theirs: theirs
            .into_iter()
            .filter(|t| !duplicate_ids.contains(t.id.as_str()))
            .collect(),
        ours_used: HashSet::new(),
        theirs_used: HashSet::new(),
        matches: Vec::new(),
    };
    for rule in rules {
        match rule.kind {
            RuleKind::Reference => state.by_reference(rule),
            RuleKind::AmountDate => state.by_amount_and_date(rule),
            RuleKind::Group => {
                state.group_theirs_to_many_ours(rule);
                state.group_ours_to_many_theirs(rule);
            }
        }
    }
    MatchOutcome {
        matches: state.matches,
        duplicates,
    }
}

/// What makes two entries the same entry: the sender's id, or else amount, currency, date and
/// references together (entries without either are never called duplicates).
fn fingerprint(entry: &TheirEntry) -> Option<String> {
    if let Some(id) = entry.external_id.as_deref().filter(|id| !id.is_empty()) {
        return Some(format!("id:{id}"));
    }
    if entry.references.is_empty() {
        return None;
    }
    let mut references = entry.references.clone();
    references.sort();
    Some(format!(
        "{}|{}|{}|{}",
        entry.currency,
        entry.amount_minor,
        entry.booking_date,
        references.join("\u{1f}")
    ))
}

fn find_duplicates(theirs: &[&TheirEntry], settled: &[TheirEntry]) -> Vec<Duplicate> {
    let mut first: HashMap<String, String> = HashMap::new();
    let mut settled_sorted: Vec<&TheirEntry> = settled.iter().collect();
    settled_sorted.sort_by(|a, b| a.id.cmp(&b.id));
    for entry in settled_sorted {
        if let Some(print) = fingerprint(entry) {
            first.entry(print).or_insert_with(|| entry.id.clone());
        }
    }
    let mut duplicates = Vec::new();
    for entry in theirs {
        let Some(print) = fingerprint(entry) else {
            continue;
        };
        match first.get(&print) {
            Some(of) => duplicates.push(Duplicate {
                currency: entry.currency,
                theirs: entry.id.clone(),
                of: of.clone(),
            }),
            None => {
                first.insert(print, entry.id.clone());
            }
        }
    }
    duplicates
}

fn days_apart(a: NaiveDate, b: NaiveDate) -> u32 {
    (a - b).num_days().unsigned_abs().min(u32::MAX as u64) as u32
}

/// The nearer of the entry's booking and value dates to `date`, in days.
fn distance(entry: &TheirEntry, date: NaiveDate) -> u32 {
    let booked = days_apart(entry.booking_date, date);
    entry
        .value_date
        .map_or(booked, |value| booked.min(days_apart(value, date)))
}

struct State<'a> {
    ours: Vec<&'a OurRecord>,
    theirs: Vec<&'a TheirEntry>,
    ours_used: HashSet<&'a str>,
    theirs_used: HashSet<&'a str>,
    matches: Vec<MatchDecision>,
}

impl<'a> State<'a> {
    fn record(
        &mut self,
        rule: &MatchRule,
        ours: Vec<&'a OurRecord>,
        theirs: Vec<&'a TheirEntry>,
        within_tolerance: bool,
    ) {
        let ours_sum: i128 = ours.iter().map(|o| o.amount_minor as i128).sum();
        let theirs_sum: i128 = theirs.iter().map(|t| t.amount_minor as i128).sum();
        let difference_minor =
            (theirs_sum - ours_sum).clamp(i64::MIN as i128, i64::MAX as i128) as i64;
        for o in &ours {
            self.ours_used.insert(o.id.as_str());
        }
        for t in &theirs {
            self.theirs_used.insert(t.id.as_str());
        }
        self.matches.push(MatchDecision {
            rule: rule.name.clone(),
            currency: theirs.first().map_or(ours[0].currency, |t| t.currency),
            kind: rule.kind,
            ours: ours.iter().map(|o| o.id.clone()).collect(),
            theirs: theirs.iter().map(|t| t.id.clone()).collect(),
            difference_minor,
            within_tolerance,
        });
    }

    fn open_theirs(&self) -> Vec<&'a TheirEntry> {
        self.theirs
            .iter()
            .copied()
            .filter(|t| !self.theirs_used.contains(t.id.as_str()))
            .collect()
    }

    fn open_ours(&self) -> Vec<&'a OurRecord> {
        self.ours
            .iter()
            .copied()
            .filter(|o| !self.ours_used.contains(o.id.as_str()))
            .collect()
    }

    /// A shared reference, same currency, dates within the window: the pair is certain; an amount
    /// beyond the tolerance is kept as a match that people must look at.
    fn by_reference(&mut self, rule: &MatchRule) {
        let mut index: HashMap<&'a str, Vec<&'a OurRecord>> = HashMap::new();
        for o in self.open_ours() {
            for reference in &o.references {
                index.entry(reference.as_str()).or_default().push(o);
            }
        }
        for t in self.open_theirs() {
            let found = t.references.iter().find_map(|reference| {
                let candidates: Vec<&'a OurRecord> = index
                    .get(reference.as_str())?
                    .iter()
                    .copied()
                    .filter(|o| {
                        o.currency == t.currency
                            && !self.ours_used.contains(o.id.as_str())
                            && distance(t, o.date) <= rule.date_window_days
                    })
                    .collect();
                // A reference two records share proves nothing: leave it to the next rules.
                (candidates.len() == 1).then(|| candidates[0])
            });
            if let Some(o) = found {
                let within = rule
                    .tolerance
                    .allows(o.amount_minor, t.amount_minor - o.amount_minor);
                self.record(rule, vec![o], vec![t], within);
            }
        }
    }

    /// Same currency, the amount within tolerance and the date within the window, and only one
    /// best candidate (nearest amount, then nearest date); a tie is left to people.
    fn by_amount_and_date(&mut self, rule: &MatchRule) {
        let mut by_currency: BTreeMap<Currency, Vec<&'a OurRecord>> = BTreeMap::new();
        for o in self.open_ours() {
            by_currency.entry(o.currency).or_default().push(o);
        }
        for t in self.open_theirs() {
            let Some(candidates) = by_currency.get(&t.currency) else {
                continue;
            };
            let mut best: Option<((u64, u32), &'a OurRecord)> = None;
            let mut tied = false;
            for o in candidates {
                if self.ours_used.contains(o.id.as_str()) {
                    continue;
                }
                let days = distance(t, o.date);
                let difference = t.amount_minor.saturating_sub(o.amount_minor);
                if days > rule.date_window_days
                    || !rule.tolerance.allows(o.amount_minor, difference)
                {
                    continue;
                }
                let score = (difference.unsigned_abs(), days);
                match &best {
                    Some((best_score, _)) if score > *best_score => {}
                    Some((best_score, _)) if score == *best_score => tied = true,
                    _ => {
                        best = Some((score, o));
                        tied = false;
                    }
                }
            }
            if let (Some((_, o)), false) = (best, tied) {
                self.record(rule, vec![o], vec![t], true);
            }
        }
    }

    /// One entry that is the sum of several of our records (a batched debit): first all the open
    /// records of one date, then a bounded subset search.
    fn group_theirs_to_many_ours(&mut self, rule: &MatchRule) {
        for t in self.open_theirs() {
            let candidates: Vec<&'a OurRecord> = self
                .open_ours()
                .into_iter()
                .filter(|o| {
                    o.currency == t.currency
                        && o.amount_minor.signum() == t.amount_minor.signum()
                        && distance(t, o.date) <= rule.date_window_days
                })
                .collect();
            let amounts: Vec<(i64, NaiveDate)> = candidates
                .iter()
                .map(|o| (o.amount_minor, o.date))
                .collect();
            let near = |d: NaiveDate| distance(t, d);
            if let Some(chosen) = find_group(
                &amounts,
                t.amount_minor,
                &rule.tolerance,
                rule.max_group_size,
                near,
            ) {
                let ours = chosen.into_iter().map(|i| candidates[i]).collect();
                self.record(rule, ours, vec![t], true);
            }
        }
    }

    /// One record of ours paid in several entries: the mirror of the above.
    fn group_ours_to_many_theirs(&mut self, rule: &MatchRule) {
        for o in self.open_ours() {
            let candidates: Vec<&'a TheirEntry> = self
                .open_theirs()
                .into_iter()
                .filter(|t| {
                    t.currency == o.currency
                        && t.amount_minor.signum() == o.amount_minor.signum()
                        && distance(t, o.date) <= rule.date_window_days
                })
                .collect();
            let amounts: Vec<(i64, NaiveDate)> = candidates
                .iter()
                .map(|t| (t.amount_minor, t.booking_date))
                .collect();
            let near = |d: NaiveDate| days_apart(d, o.date);
            if let Some(chosen) = find_group(
                &amounts,
                o.amount_minor,
                &rule.tolerance,
                rule.max_group_size,
                near,
            ) {
                let theirs = chosen.into_iter().map(|i| candidates[i]).collect();
                self.record(rule, vec![o], theirs, true);
            }
        }
    }
}

/// Indexes (two or more) of `items` whose amounts sum to `target` within `tolerance`: first every
/// item of one date (nearest date first), then a depth-first subset search over at most
/// [`GROUP_CANDIDATES_CEILING`] items, groups of at most `max_size`, within
/// [`GROUP_SEARCH_STEPS`] steps. `None` when nothing fits or the search ran out of steps.
fn find_group(
    items: &[(i64, NaiveDate)],
    target: i64,
    tolerance: &Tolerance,
    max_size: usize,
    distance_of: impl Fn(NaiveDate) -> u32,
) -> Option<Vec<usize>> {
    if items.len() < 2 {
        return None;
    }
    let allowed = tolerance.allowed_minor(target) as i128;
    let target = target as i128;
    let fits = |sum: i128| (sum - target).abs() <= allowed;

    let mut by_date: BTreeMap<(u32, NaiveDate), Vec<usize>> = BTreeMap::new();
    for (i, (_, date)) in items.iter().enumerate() {
        by_date
            .entry((distance_of(*date), *date))
            .or_default()
            .push(i);
    }
    for indexes in by_date.values() {
        let sum: i128 = indexes.iter().map(|i| items[*i].0 as i128).sum();
        if indexes.len() >= 2 && fits(sum) {
            return Some(indexes.clone());
        }
    }

    let max_size = max_size.min(MAX_GROUP_SIZE_CEILING);
    if max_size < 2 {
        return None;
    }
    // Nearest dates first, then larger amounts first (prunes sooner), then input order.
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|i| {
        (
            distance_of(items[*i].1),
            std::cmp::Reverse(items[*i].0.unsigned_abs()),
            *i,
        )
    });
    order.truncate(GROUP_CANDIDATES_CEILING);
    let magnitudes: Vec<i128> = order
        .iter()
        .map(|i| items[*i].0.unsigned_abs() as i128)
        .collect();
    let goal = target.abs();
    // suffix[k] = Σ magnitudes[k..]: what the rest could still add.
    let mut suffix = vec![0i128; magnitudes.len() + 1];
    for k in (0..magnitudes.len()).rev() {
        suffix[k] = suffix[k + 1] + magnitudes[k];
    }
    let mut chosen = Vec::new();
    let mut steps = 0u32;
    if search(
        &magnitudes,
        &suffix,
        0,
        0,
        goal,
        allowed,
        max_size,
        &mut chosen,
        &mut steps,
    ) {
        let mut found: Vec<usize> = chosen.iter().map(|k| order[*k]).collect();
        found.sort_unstable();
        return Some(found);
    }
    None
}

#[allow(clippy::too_many_arguments)]
fn search(
    magnitudes: &[i128],
    suffix: &[i128],
    start: usize,
    sum: i128,
    goal: i128,
    allowed: i128,
    max_size: usize,
    chosen: &mut Vec<usize>,
    steps: &mut u32,
) -> bool {
    if chosen.len() >= 2 && (sum - goal).abs() <= allowed {
        return true;
    }
    if chosen.len() == max_size || start == magnitudes.len() || *steps >= GROUP_SEARCH_STEPS {
        return false;
    }
    // Every item has the target's sign, so sums only grow: prune what overshoots or falls short.
    if sum > goal + allowed || sum + suffix[start] < goal - allowed {
        return false;
    }
    for k in start..magnitudes.len() {
        *steps += 1;
        if *steps >= GROUP_SEARCH_STEPS {
            return false;
        }
        if sum + magnitudes[k] > goal + allowed {
            continue;
        }
        chosen.push(k);
        if search(
            magnitudes,
            suffix,
            k + 1,
            sum + magnitudes[k],
            goal,
            allowed,
            max_size,
            chosen,
            steps,
        ) {
            return true;
        }
        chosen.pop();
    }
    false
}

#[cfg(test)]
#[path = "matcher_tests.rs"]
mod tests;
