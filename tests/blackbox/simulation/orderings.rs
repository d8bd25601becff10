//! Hand-written scenarios for the orderings behind money bugs found before, run through the same
//! world, model and invariants as generated ones, so every run covers them whatever the seeds:
//! an answer lost after the provider paid (then 409 or 5xx), a refund after a fee change, and a
//! back-dated refund recorded after its date settled.

use chrono::NaiveDate;
use settle_core::model::{PaymentMethod, TransactionKind, TransactionStatus};
use settle_core::money::Currency;
use settle_tests::provider_server::Behaviour;
use settle_tests::sim_model::{ModelRule, ModelSchedule};

use super::ops::{first_date, At, Op, PaymentRef, Repeat, Scenario, TxSpec};

fn usd() -> Currency {
    Currency::from_code("USD").expect("USD")
}

fn day(n: i64) -> NaiveDate {
    first_date() + chrono::Duration::days(n)
}

fn at(n: i64, hour: u32) -> At {
    At {
        date: day(n),
        second_of_day: hour * 3600,
        offset_hours: 3,
    }
}

fn fees(percent_bp: i64, max_usd_minor: Option<i64>) -> ModelSchedule {
    let mut rule = ModelRule {
        percent_bp: Some(percent_bp),
        refund_returns_percent: Some(true),
        ..ModelRule::default()
    };
    if let Some(max) = max_usd_minor {
        rule.max_minor.insert(usd(), max);
    }
    ModelSchedule {
        default: rule,
        ..ModelSchedule::default()
    }
}

fn payment(key: u32, merchant: &str, reference: &str, amount_minor: i64, when: At) -> Op {
    Op::Payment {
        key,
        tx: TxSpec {
            merchant_id: merchant.into(),
            external_ref: reference.into(),
            kind: TransactionKind::Payment,
            status: TransactionStatus::Completed,
            amount_minor,
            currency: usd(),
            method: PaymentMethod::Card,
            at: when,
            refund_of: None,
        },
        repeat: Repeat::Once,
    }
}

fn refund(key: u32, reference: &str, of: &str, amount_minor: i64, when: At) -> Op {
    Op::Return {
        key,
        kind: TransactionKind::Refund,
        of: PaymentRef::Known {
            merchant_id: "m-1".into(),
            external_ref: of.into(),
        },
        amount_minor,
        at: when,
        external_ref: reference.into(),
    }
}

fn scenario(seed: u64, name: &'static str, fees: ModelSchedule, ops: Vec<Op>) -> Scenario {
    Scenario {
        seed,
        name: Some(name),
        dates: vec![day(0), day(1), day(2)],
        merchants: vec!["m-1".into(), "m-2".into()],
        fees,
        ops,
    }
}

/// The scenarios, each checked and replayed like a generated sequence.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        scenario(
            1,
            "a payout paid by the provider whose answer was lost (then 409 in progress, or 5xx) is never paid again",
            fees(250, None),
            vec![
                // Attempt 1 commits and times out; the retries get 409 "in progress".
                payment(1, "m-1", "p-1", 10_000, at(0, 12)),
                Op::Faults(vec![Behaviour::CommitThenConflict409 { hang_ms: 1_500 }]),
                Op::Run(day(0)),
                Op::Rerun {
                    date: day(0),
                    apply_current_fees: false,
                },
                // Committed, then 5xx until the retries are exhausted.
                payment(2, "m-2", "p-2", 5_000, at(1, 12)),
                Op::Faults(vec![
                    Behaviour::CommitThenFail500,
                    Behaviour::Fail500,
                    Behaviour::Fail500,
                ]),
                Op::Run(day(1)),
                Op::Rerun {
                    date: day(1),
                    apply_current_fees: true,
                },
                // Committed, the answer lost to a timeout, then 423 and 425; resumed by `retry`.
                payment(3, "m-1", "p-3", 7_000, at(2, 12)),
                Op::Faults(vec![
                    Behaviour::CommitThenHang { delay_ms: 500 },
                    Behaviour::Locked423,
                    Behaviour::TooEarly425,
                ]),
                Op::Run(day(2)),
                Op::Retry(day(2)),
                Op::Check { advance_hours: 0 },
            ],
        ),
        scenario(
            2,
            "a refund returns from the fee its payment was charged, not from today's schedule",
            fees(100, None),
            vec![
                payment(1, "m-1", "p-1", 10_000, at(0, 12)),
                Op::Run(day(0)),
                Op::SetFees(fees(500, None)),
                refund(2, "r-1", "p-1", 10_000, at(1, 12)),
                Op::Run(day(1)),
                Op::Rerun {
                    date: day(1),
                    apply_current_fees: true,
                },
            ],
        ),
        scenario(
            3,
            "a late, back-dated refund does not return the fee a second time",
            fees(250, Some(100)),
            vec![
                payment(1, "m-1", "p-1", 10_000, at(0, 12)),
                refund(2, "r-1", "p-1", 6_000, at(1, 12)),
                Op::Run(day(0)),
                Op::Run(day(1)),
                refund(3, "r-0", "p-1", 4_000, at(1, 8)),
                Op::Run(day(2)),
                Op::Rerun {
                    date: day(1),
                    apply_current_fees: false,
                },
                Op::Rerun {
                    date: day(2),
                    apply_current_fees: false,
                },
            ],
        ),
    ]
}
