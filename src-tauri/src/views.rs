//! What the screens show beyond one API answer, computed in Rust: what changed between two
//! revisions (totals and merchant lines, in minor units), and the audit events about one date.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::Serialize;
use settle_client::{AuditEvent, Settlement, SettlementLine};
use settle_domain::money::{format_minor, Currency};

/// One figure before and after, in minor units, with its decimal strings for display.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AmountChange {
    pub before_minor: i64,
    pub after_minor: i64,
    pub delta_minor: i64,
    pub before: String,
    pub after: String,
    pub delta: String,
}

impl AmountChange {
    fn new(before_minor: i64, after_minor: i64, currency: Currency) -> AmountChange {
        // Both sides are sums the daemon checked for overflow; the difference of two i64 can
        // still overflow, so it saturates (a delta that large is shown as the bound).
        let delta_minor = after_minor.saturating_sub(before_minor);
        AmountChange {
            before_minor,
            after_minor,
            delta_minor,
            before: format_minor(before_minor, currency),
            after: format_minor(after_minor, currency),
            delta: format_minor(delta_minor, currency),
        }
    }
}

/// A currency's or a merchant line's net (and gross, fees) before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FiguresChange {
    pub currency: Currency,
    /// Empty for a currency's totals.
    pub merchant_id: String,
    pub gross: AmountChange,
    pub fees: AmountChange,
    pub net: AmountChange,
    pub transaction_count_before: u64,
    pub transaction_count_after: u64,
}

/// What a revision changed against the one before it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevisionChanges {
    pub settlement_date: NaiveDate,
    pub before_revision: u32,
    pub after_revision: u32,
    /// Why the later revision was run.
    pub reason: Option<String>,
    pub fee_schedule_changed: bool,
    /// Per currency, only those whose figures differ.
    pub totals: Vec<FiguresChange>,
    /// Per merchant line, only those that differ, appeared or disappeared.
    pub lines: Vec<FiguresChange>,
}

#[derive(Default, Clone)]
struct Side {
    gross_minor: i64,
    fees_minor: i64,
    net_minor: i64,
    transaction_count: u64,
}

fn change(key: (Currency, String), before: &Side, after: &Side) -> FiguresChange {
    let currency = key.0;
    FiguresChange {
        currency,
        merchant_id: key.1,
        gross: AmountChange::new(before.gross_minor, after.gross_minor, currency),
        fees: AmountChange::new(before.fees_minor, after.fees_minor, currency),
        net: AmountChange::new(before.net_minor, after.net_minor, currency),
        transaction_count_before: before.transaction_count,
        transaction_count_after: after.transaction_count,
    }
}

/// Pairs `before` and `after` by key and keeps the pairs that differ (missing = all zero).
fn differences(
    before: BTreeMap<(Currency, String), Side>,
    mut after: BTreeMap<(Currency, String), Side>,
) -> Vec<FiguresChange> {
    let mut changes = Vec::new();
    let zero = Side::default();
    for (key, old) in before {
        let new = after.remove(&key).unwrap_or_default();
        if (
            old.gross_minor,
            old.fees_minor,
            old.net_minor,
            old.transaction_count,
        ) != (
            new.gross_minor,
            new.fees_minor,
            new.net_minor,
            new.transaction_count,
        ) {
            changes.push(change(key, &old, &new));
        }
    }
    for (key, new) in after {
        changes.push(change(key, &zero, &new));
    }
    changes.sort_by(|a, b| {
        (a.currency.code(), &a.merchant_id).cmp(&(b.currency.code(), &b.merchant_id))
    });
    changes
}

/// The differences between two revisions of one date and their merchant lines.
pub fn revision_changes(
    before: &Settlement,
    before_lines: &[SettlementLine],
    after: &Settlement,
    after_lines: &[SettlementLine],
) -> RevisionChanges {
    let totals = |settlement: &Settlement| {
        settlement
            .totals
            .iter()
            .map(|t| {
                (
                    (t.currency, String::new()),
                    Side {
                        gross_minor: t.figures.gross_minor,
                        fees_minor: t.figures.fees_minor,
                        net_minor: t.figures.net_minor,
                        transaction_count: t.figures.transaction_count,
                    },
                )
            })
            .collect()
    };
    let lines = |lines: &[SettlementLine]| {
        lines
            .iter()
            .map(|l| {
                (
                    (l.currency, l.merchant_id.clone()),
                    Side {
                        gross_minor: l.figures.gross_minor,
                        fees_minor: l.figures.fees_minor,
                        net_minor: l.figures.net_minor,
                        transaction_count: l.figures.transaction_count,
                    },
                )
            })
            .collect()
    };
    RevisionChanges {
        settlement_date: after.settlement_date,
        before_revision: before.revision,
        after_revision: after.revision,
        reason: after.reason.clone(),
        fee_schedule_changed: before.fee_schedule != after.fee_schedule,
        totals: differences(totals(before), totals(after)),
        lines: differences(lines(before_lines), lines(after_lines)),
    }
}

/// True when an audit event is about `date`: its subject names it (`settlement_date=D`, or a
/// request path ending in the date).
pub fn concerns_date(event: &AuditEvent, date: NaiveDate) -> bool {
    let day = date.format("%Y-%m-%d").to_string();
    event.subject.contains(&format!("settlement_date={day}"))
        || event
            .subject
            .split(['/', ' ', '?'])
            .any(|segment| segment == day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use settle_client::{AuditAction, AuditOutcome, SettlementFigures};

    fn usd() -> Currency {
        Currency::from_code("USD").unwrap()
    }

    fn line(merchant: &str, gross: i64, fees: i64, count: u64) -> SettlementLine {
        SettlementLine {
            merchant_id: merchant.into(),
            currency: usd(),
            figures: SettlementFigures {
                transaction_count: count,
                gross_minor: gross,
                fees_minor: fees,
                net_minor: gross - fees,
                ..SettlementFigures::default()
            },
        }
    }

    #[test]
    fn only_changed_appeared_and_vanished_lines_are_listed_with_exact_deltas() {
        let before = [
            line("m-1", 10_000, 250, 2),
            line("m-2", 5_000, 125, 1),
            line("m-3", 700, 0, 1),
        ];
        let after = [
            line("m-1", 10_000, 250, 2),
            line("m-2", 5_050, 126, 2),
            line("m-4", 99, 1, 1),
        ];
        let changes = differences(
            before
                .iter()
                .map(|l| ((l.currency, l.merchant_id.clone()), side(l)))
                .collect(),
            after
                .iter()
                .map(|l| ((l.currency, l.merchant_id.clone()), side(l)))
                .collect(),
        );
        let merchants: Vec<&str> = changes.iter().map(|c| c.merchant_id.as_str()).collect();
        assert_eq!(merchants, ["m-2", "m-3", "m-4"]);
        assert_eq!(changes[0].net.delta_minor, 49);
        assert_eq!(changes[0].net.delta, "0.49");
        assert_eq!(changes[0].transaction_count_after, 2);
        assert_eq!(changes[1].net.after_minor, 0, "m-3 vanished");
        assert_eq!(changes[1].net.delta, "-7.00");
        assert_eq!(changes[2].gross.before_minor, 0, "m-4 appeared");
    }

    fn side(line: &SettlementLine) -> Side {
        Side {
            gross_minor: line.figures.gross_minor,
            fees_minor: line.figures.fees_minor,
            net_minor: line.figures.net_minor,
            transaction_count: line.figures.transaction_count,
        }
    }

    #[test]
    fn deltas_saturate_instead_of_overflowing() {
        let change = AmountChange::new(i64::MIN, i64::MAX, usd());
        assert_eq!(change.delta_minor, i64::MAX);
    }

    #[test]
    fn audit_events_are_matched_to_their_date_only() {
        let event = |subject: &str| {
            AuditEvent::new(
                Utc::now(),
                "token:ana",
                AuditAction::HttpRequest,
                subject,
                AuditOutcome::Succeeded,
                serde_json::json!({}),
            )
        };
        let day = NaiveDate::from_ymd_opt(2024, 3, 10).unwrap();
        assert!(concerns_date(
            &event("settlement_date=2024-03-10 revision=2"),
            day
        ));
        assert!(concerns_date(
            &event("POST /api/v2/finance/settlement/rerun/2024-03-10"),
            day
        ));
        assert!(!concerns_date(&event("settlement_date=2024-03-11"), day));
        assert!(!concerns_date(
            &event("POST /api/v2/finance/settlement/rerun/2024-03-100"),
            day
        ));
        assert!(!concerns_date(&event("POST /api/v2/payments"), day));
    }
}
