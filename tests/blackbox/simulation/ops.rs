//! The simulation's operations and their generator: from a seed, a sequence of 20–60 payments,
//! returns, adjustments, imports, runs, reruns, retries, fee and calendar changes, holds, payout
//! sends under scripted provider faults and provider-side status changes, plus provider callbacks,
//! runs held at a MongoDB write while another takes their date over, and migrations to MongoDB.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{Duration, NaiveDate};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use settle_core::model::{PaymentMethod, TransactionKind, TransactionStatus};
use settle_core::money::Currency;
use settle_core::provider::ProviderPayoutStatus;
use settle_tests::provider_server::Behaviour;
use settle_tests::sim_model::{ModelRule, ModelSchedule};

/// An instant given as a local time in the business calendar in force when it is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    pub date: NaiveDate,
    pub second_of_day: u32,
    /// The calendar's UTC offset: +3 (Asia/Aden) or +4 (Asia/Dubai).
    pub offset_hours: i64,
}

impl At {
    pub fn utc(&self) -> chrono::DateTime<chrono::Utc> {
        (self.date.and_hms_opt(0, 0, 0).expect("midnight")
            + Duration::seconds(i64::from(self.second_of_day))
            - Duration::hours(self.offset_hours))
        .and_utc()
    }

    /// RFC 3339 with the calendar's offset, as a client would send it.
    pub fn rfc3339(&self) -> String {
        let s = self.second_of_day;
        format!(
            "{}T{:02}:{:02}:{:02}+{:02}:00",
            self.date,
            s / 3600,
            s / 60 % 60,
            s % 60,
            self.offset_hours
        )
    }
}

/// One transaction as an operation gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxSpec {
    pub merchant_id: String,
    pub external_ref: String,
    pub kind: TransactionKind,
    pub status: TransactionStatus,
    pub amount_minor: i64,
    pub currency: Currency,
    pub method: PaymentMethod,
    pub at: At,
    pub refund_of: Option<String>,
}

/// What a payment request is followed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    Once,
    /// The same key and body again: the stored answer, replayed.
    Replay,
    /// The same key with another body: refused (422).
    Mismatch,
    /// Another key, the same body: a duplicate (200), nothing new.
    SameRefNewKey,
    /// Another key, the same reference with another amount: refused (409).
    ConflictingRef,
}

/// How a provider callback reaches Settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The payout's current status at the provider, once.
    Once,
    /// The current status twice: the second is a duplicate.
    Twice,
    /// The current status, then one the payout held before it: out of order.
    Late,
}

impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Delivery::Once => "once",
            Delivery::Twice => "twice",
            Delivery::Late => "late",
        })
    }
}

/// The payment a refund or chargeback names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentRef {
    Known {
        merchant_id: String,
        external_ref: String,
    },
    /// An id no payment has: 404.
    Unknown(u128),
}

/// One step of a sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Payment {
        key: u32,
        tx: TxSpec,
        repeat: Repeat,
    },
    Return {
        key: u32,
        kind: TransactionKind,
        of: PaymentRef,
        amount_minor: i64,
        at: At,
        external_ref: String,
    },
    Adjustment {
        key: u32,
        tx: TxSpec,
    },
    /// A CSV file; `spoiled` adds a row with a zero amount, so nothing may be written.
    Import {
        rows: Vec<TxSpec>,
        spoiled: bool,
    },
    Run(NaiveDate),
    /// Two runs of one date at once: one may claim it, never both.
    RunTwice(NaiveDate),
    /// Run A of the date is held at the store write `point` (on MongoDB) while the clock passes
    /// its lease and run B takes the date over and runs to its end; then A goes on and must lose.
    /// Where nothing holds A (SQLite, or A never reaches the point) A simply runs first.
    StalledRun {
        date: NaiveDate,
        point: &'static str,
    },
    Rerun {
        date: NaiveDate,
        apply_current_fees: bool,
    },
    /// A rerun without a reason: refused.
    RerunWithoutReason(NaiveDate),
    Retry(NaiveDate),
    SetFees(ModelSchedule),
    /// Asia/Aden ⇄ Asia/Dubai, for transactions recorded from now on and new revisions.
    SwitchCalendar,
    Hold(String),
    Release(String),
    /// Appends to the provider's script of behaviours (one consumed per POST).
    Faults(Vec<Behaviour>),
    SendPayouts,
    /// The provider reports one of its payouts paid or failed later (`pick` indexes its ledger's
    /// candidates, sorted by reference).
    ProviderSettles {
        pick: usize,
        to: ProviderPayoutStatus,
    },
    /// `settle payouts check`, after moving the clock on.
    Check {
        advance_hours: i64,
    },
    /// The provider reports one of its payouts' status to Settle (`pick` indexes its ledger,
    /// sorted by reference), through the core service the daemon's callback route uses.
    Callback {
        pick: usize,
        delivery: Delivery,
    },
    /// A world on SQLite (with a MongoDB server configured) is copied into a fresh MongoDB
    /// database with `settle migrate`'s core and goes on there; a later one copies the same SQLite
    /// store into that database again, which must change nothing. Elsewhere it does nothing.
    Migrate,
}

/// The MongoDB write points a stalled run's A may be held at (in the order a run passes them).
/// `store.claim.before_takeover` is left out: a plain run of a date takes over only a run whose
/// lease expired, which no operation leaves behind.
pub const STALL_POINTS: [&str; 5] = [
    "store.claim.before_insert",
    "store.freeze.before_fence_check",
    "store.save.before_ledgers",
    "store.plan.before_decision",
    "store.complete.before_write",
];

fn money(minor: i64, currency: Currency) -> String {
    super::world::major(minor, currency)
}

impl fmt::Display for TxSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {}/{} {} {} {} at {}",
            self.status,
            self.kind,
            self.merchant_id,
            self.external_ref,
            money(self.amount_minor, self.currency),
            self.currency,
            self.method,
            self.at.rfc3339()
        )?;
        if let Some(of) = &self.refund_of {
            write!(f, " of {of}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Payment { key, tx, repeat } => write!(f, "payment k{key}: {tx} ({repeat:?})"),
            Op::Return {
                key,
                kind,
                of,
                amount_minor,
                at,
                external_ref,
            } => {
                let of = match of {
                    PaymentRef::Known {
                        merchant_id,
                        external_ref,
                    } => format!("{merchant_id}/{external_ref}"),
                    PaymentRef::Unknown(id) => format!("unknown id {id:x}"),
                };
                write!(
                    f,
                    "{kind} k{key}: {external_ref} of {of}, {amount_minor} minor at {}",
                    at.rfc3339()
                )
            }
            Op::Adjustment { key, tx } => write!(f, "adjustment k{key}: {tx}"),
            Op::Import { rows, spoiled } => {
                write!(f, "import{}:", if *spoiled { " (spoiled)" } else { "" })?;
                for row in rows {
                    write!(f, " [{row}]")?;
                }
                Ok(())
            }
            Op::Run(date) => write!(f, "run {date}"),
            Op::RunTwice(date) => write!(f, "run {date} twice at once"),
            Op::StalledRun { date, point } => {
                write!(f, "run {date} held at {point}, taken over, then let go")
            }
            Op::Rerun {
                date,
                apply_current_fees,
            } => write!(
                f,
                "rerun {date}{}",
                if *apply_current_fees {
                    " --apply-current-fees"
                } else {
                    ""
                }
            ),
            Op::RerunWithoutReason(date) => write!(f, "rerun {date} without a reason"),
            Op::Retry(date) => write!(f, "retry {date}"),
            Op::SetFees(schedule) => write!(f, "fees := {}", describe_schedule(schedule)),
            Op::SwitchCalendar => write!(f, "switch calendar"),
            Op::Hold(merchant) => write!(f, "hold {merchant}"),
            Op::Release(merchant) => write!(f, "release {merchant}"),
            Op::Faults(script) => write!(f, "provider script += {script:?}"),
            Op::SendPayouts => write!(f, "send payouts"),
            Op::ProviderSettles { pick, to } => write!(f, "provider marks payout #{pick} {to}"),
            Op::Check { advance_hours } => write!(f, "clock +{advance_hours}h, payouts check"),
            Op::Callback { pick, delivery } => {
                write!(f, "provider calls back on payout #{pick} ({delivery})")
            }
            Op::Migrate => write!(f, "migrate to MongoDB"),
        }
    }
}

fn describe_rule(rule: &ModelRule) -> String {
    let mut parts = Vec::new();
    if let Some(bp) = rule.percent_bp {
        parts.push(format!("{}.{:02}%", bp / 100, bp % 100));
    }
    for (name, amounts) in [
        ("fixed", &rule.fixed_minor),
        ("min", &rule.min_minor),
        ("max", &rule.max_minor),
    ] {
        for (currency, minor) in amounts {
            parts.push(format!("{name} {} {currency}", money(*minor, *currency)));
        }
    }
    if let Some(returns) = rule.refund_returns_percent {
        parts.push(format!("refund_returns_percent={returns}"));
    }
    format!("{{{}}}", parts.join(", "))
}

pub fn describe_schedule(schedule: &ModelSchedule) -> String {
    let mut text = format!("default {}", describe_rule(&schedule.default));
    for (method, rule) in &schedule.methods {
        text.push_str(&format!(", {method} {}", describe_rule(rule)));
    }
    for (merchant, rule) in &schedule.merchants {
        text.push_str(&format!(", {merchant} {}", describe_rule(rule)));
    }
    text
}

/// A generated sequence.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub seed: u64,
    /// A hand-written scenario's name; `None` for a generated one.
    pub name: Option<&'static str>,
    pub dates: Vec<NaiveDate>,
    pub merchants: Vec<String>,
    pub fees: ModelSchedule,
    pub ops: Vec<Op>,
}

impl Scenario {
    /// The sequence, one numbered operation per line.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "dates {:?}, merchants {:?}, initial fees: {}\n",
            self.dates.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            self.merchants,
            describe_schedule(&self.fees)
        );
        for (n, op) in self.ops.iter().enumerate() {
            text.push_str(&format!("  #{n:02} {op}\n"));
        }
        text
    }
}

/// The first business date of every sequence; the clock starts well after the last.
pub fn first_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 3, 10).expect("a date")
}

/// A date whose window is still open when the sequence runs.
pub fn open_date() -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 6, 1).expect("a date")
}

/// What the generator believes of one payment (to aim refunds at it).
#[derive(Debug, Clone)]
struct KnownPayment {
    tx: TxSpec,
    returned_minor: i64,
}

/// The generator's state: enough to make plausible operations; the model decides their outcome.
struct Generator {
    rng: ChaCha8Rng,
    currencies: Vec<Currency>,
    dates: Vec<NaiveDate>,
    merchants: Vec<String>,
    offset_hours: i64,
    instants: BTreeSet<i64>,
    payments: Vec<KnownPayment>,
    settled: BTreeMap<NaiveDate, u32>,
    next_ref: u32,
    next_key: u32,
}

const METHODS: [PaymentMethod; 3] = [
    PaymentMethod::Card,
    PaymentMethod::Wallet,
    PaymentMethod::Cash,
];

impl Generator {
    fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items[self.rng.random_range(0..items.len())].clone()
    }

    fn chance(&mut self, percent: u32) -> bool {
        self.rng.random_range(0..100) < percent
    }

    fn key(&mut self) -> u32 {
        self.next_key += 1;
        self.next_key
    }

    fn reference(&mut self, prefix: &str) -> String {
        self.next_ref += 1;
        format!("{prefix}-{}", self.next_ref)
    }

    /// A unique instant on `date`, local to the calendar in force.
    fn at(&mut self, date: NaiveDate) -> At {
        loop {
            let at = At {
                date,
                second_of_day: self.rng.random_range(0..86_400),
                offset_hours: self.offset_hours,
            };
            if self.instants.insert(at.utc().timestamp()) {
                return at;
            }
        }
    }

    /// A date for a new transaction: mostly any, sometimes one already settled (back-dated).
    fn transaction_date(&mut self) -> NaiveDate {
        let settled: Vec<NaiveDate> = self.settled.keys().copied().collect();
        if !settled.is_empty() && self.chance(30) {
            return self.pick(&settled);
        }
        let dates = self.dates.clone();
        self.pick(&dates)
    }

    fn amount(&mut self) -> i64 {
        match self.rng.random_range(0..10) {
            0 | 1 => self.rng.random_range(1..300),
            2 => self.rng.random_range(50_000..400_000),
            _ => self.rng.random_range(300..50_000),
        }
    }

    fn payment_spec(&mut self) -> TxSpec {
        let status = match self.rng.random_range(0..20) {
            0 => TransactionStatus::Pending,
            1 => TransactionStatus::Failed,
            2 => TransactionStatus::Cancelled,
            _ => TransactionStatus::Completed,
        };
        let date = self.transaction_date();
        let merchants = self.merchants.clone();
        let currencies = self.currencies.clone();
        TxSpec {
            merchant_id: self.pick(&merchants),
            external_ref: self.reference("p"),
            kind: TransactionKind::Payment,
            status,
            amount_minor: self.amount(),
            currency: self.pick(&currencies),
            method: self.pick(&METHODS),
            at: self.at(date),
            refund_of: None,
        }
    }

    fn payment(&mut self) -> Op {
        let mut tx = self.payment_spec();
        if self.chance(3) {
            tx.amount_minor = 0;
        }
        let repeat = match self.rng.random_range(0..100) {
            0..=7 => Repeat::Replay,
            8..=13 => Repeat::Mismatch,
            14..=18 => Repeat::SameRefNewKey,
            19..=24 => Repeat::ConflictingRef,
            _ => Repeat::Once,
        };
        if tx.amount_minor > 0 {
            self.payments.push(KnownPayment {
                tx: tx.clone(),
                returned_minor: 0,
            });
        }
        Op::Payment {
            key: self.key(),
            tx,
            repeat,
        }
    }

    /// An amount to return of `payment`: often what is left or part of it, sometimes more.
    fn return_amount(&mut self, payment: &KnownPayment) -> i64 {
        let left = payment.tx.amount_minor - payment.returned_minor;
        match self.rng.random_range(0..100) {
            0..=19 => left + self.rng.random_range(1..=left.max(1)),
            20..=34 => left.max(1),
            _ if left > 1 => self.rng.random_range(1..left),
            _ => 1,
        }
    }

    /// A date for a return: its payment's or later, or one already settled (back-dated, late).
    fn return_date(&mut self, payment_date: NaiveDate) -> NaiveDate {
        let later: Vec<NaiveDate> = self
            .dates
            .iter()
            .copied()
            .filter(|d| *d >= payment_date)
            .collect();
        if self.chance(60) && !later.is_empty() {
            return self.pick(&later);
        }
        self.transaction_date()
    }

    fn refund(&mut self) -> Op {
        if self.payments.is_empty() || self.chance(3) {
            return Op::Return {
                key: self.key(),
                kind: TransactionKind::Refund,
                of: PaymentRef::Unknown(self.rng.random()),
                amount_minor: 100,
                at: {
                    let date = self.transaction_date();
                    self.at(date)
                },
                external_ref: self.reference("r"),
            };
        }
        let index = self.rng.random_range(0..self.payments.len());
        let payment = self.payments[index].clone();
        let amount_minor = self.return_amount(&payment);
        let kind = if self.chance(25) {
            TransactionKind::Chargeback
        } else {
            TransactionKind::Refund
        };
        let date = self.return_date(payment.tx.at.date);
        let at = self.at(date);
        let accepted = payment.tx.status == TransactionStatus::Completed
            && payment.returned_minor + amount_minor <= payment.tx.amount_minor;
        if accepted {
            self.payments[index].returned_minor += amount_minor;
        }
        Op::Return {
            key: self.key(),
            kind,
            of: PaymentRef::Known {
                merchant_id: payment.tx.merchant_id.clone(),
                external_ref: payment.tx.external_ref.clone(),
            },
            amount_minor,
            at,
            external_ref: self.reference(if kind == TransactionKind::Refund {
                "r"
            } else {
                "c"
            }),
        }
    }

    fn adjustment_spec(&mut self) -> TxSpec {
        let magnitude = if self.chance(10) {
            self.rng.random_range(10_000..80_000)
        } else {
            self.rng.random_range(1..5_000)
        };
        let amount_minor = if self.chance(45) {
            -magnitude
        } else {
            magnitude
        };
        let date = self.transaction_date();
        let merchants = self.merchants.clone();
        let currencies = self.currencies.clone();
        TxSpec {
            merchant_id: self.pick(&merchants),
            external_ref: self.reference("a"),
            kind: TransactionKind::Adjustment,
            status: TransactionStatus::Completed,
            amount_minor,
            currency: self.pick(&currencies),
            method: PaymentMethod::Other,
            at: self.at(date),
            refund_of: None,
        }
    }

    fn import(&mut self) -> Op {
        let spoiled = self.chance(8);
        let mut rows = Vec::new();
        let mut payments = Vec::new();
        let mut returned: Vec<(usize, i64)> = Vec::new();
        for _ in 0..self.rng.random_range(1..=5) {
            match self.rng.random_range(0..10) {
                0..=4 => {
                    let row = self.payment_spec();
                    payments.push(row.clone());
                    rows.push(row);
                }
                5 | 6 => rows.push(self.adjustment_spec()),
                7 if !self.payments.is_empty() => {
                    // An identical copy of a payment recorded earlier: a duplicate.
                    let index = self.rng.random_range(0..self.payments.len());
                    rows.push(self.payments[index].tx.clone());
                }
                _ => {
                    let candidates: Vec<usize> = (0..self.payments.len())
                        .filter(|i| {
                            let p = &self.payments[*i];
                            p.tx.status == TransactionStatus::Completed
                                && p.returned_minor < p.tx.amount_minor
                                && !returned.iter().any(|(j, _)| j == i)
                        })
                        .collect();
                    if candidates.is_empty() {
                        continue;
                    }
                    let index = self.pick(&candidates);
                    let payment = self.payments[index].clone();
                    let left = payment.tx.amount_minor - payment.returned_minor;
                    // Now and then one more than is left: the whole file must be refused.
                    let amount_minor = if self.chance(10) {
                        left + 1
                    } else {
                        self.rng.random_range(1..=left)
                    };
                    let date = self.return_date(payment.tx.at.date);
                    let at = self.at(date);
                    let kind = if self.chance(20) {
                        TransactionKind::Chargeback
                    } else {
                        TransactionKind::Refund
                    };
                    returned.push((index, amount_minor));
                    rows.push(TxSpec {
                        merchant_id: payment.tx.merchant_id.clone(),
                        external_ref: self.reference("ir"),
                        kind,
                        status: TransactionStatus::Completed,
                        amount_minor,
                        currency: payment.tx.currency,
                        method: payment.tx.method,
                        at,
                        refund_of: Some(payment.tx.external_ref.clone()),
                    });
                }
            }
        }
        if rows.is_empty() {
            rows.push(self.adjustment_spec());
        }
        let refused = spoiled
            || returned.iter().any(|(index, amount)| {
                let p = &self.payments[*index];
                p.returned_minor + amount > p.tx.amount_minor
            });
        if !refused {
            for (index, amount) in returned {
                self.payments[index].returned_minor += amount;
            }
            self.payments
                .extend(payments.into_iter().map(|tx| KnownPayment {
                    tx,
                    returned_minor: 0,
                }));
        }
        Op::Import { rows, spoiled }
    }

    fn unsettled_date(&mut self) -> NaiveDate {
        let open: Vec<NaiveDate> = self
            .dates
            .iter()
            .copied()
            .filter(|d| !self.settled.contains_key(d))
            .collect();
        if !open.is_empty() && self.chance(80) {
            // Mostly the earliest open date, now and then another (dates out of order).
            if self.chance(70) {
                return open[0];
            }
            return self.pick(&open);
        }
        let dates = self.dates.clone();
        self.pick(&dates)
    }

    fn settled_date(&mut self) -> Option<NaiveDate> {
        let settled: Vec<NaiveDate> = self.settled.keys().copied().collect();
        (!settled.is_empty()).then(|| self.pick(&settled))
    }

    fn rule(&mut self) -> ModelRule {
        let mut rule = ModelRule {
            percent_bp: Some(self.pick(&[0, 100, 150, 250, 275, 333, 400])),
            refund_returns_percent: Some(!self.chance(20)),
            ..ModelRule::default()
        };
        for currency in self.currencies.clone() {
            let unit = 10_i64.pow(currency.exponent());
            if self.chance(40) {
                rule.fixed_minor
                    .insert(currency, self.pick(&[unit / 10, unit / 4, 3 * unit / 10]));
            }
            if self.chance(25) {
                rule.min_minor.insert(currency, unit / 2);
            }
            if self.chance(30) {
                rule.max_minor
                    .insert(currency, self.pick(&[unit, 2 * unit, 5 * unit]));
            }
        }
        rule
    }

    fn schedule(&mut self) -> ModelSchedule {
        let mut schedule = ModelSchedule {
            default: self.rule(),
            ..ModelSchedule::default()
        };
        if self.chance(40) {
            let method = self.pick(&METHODS);
            let percent_bp = Some(self.pick(&[50, 120, 200]));
            schedule.methods.insert(
                method,
                ModelRule {
                    percent_bp,
                    ..ModelRule::default()
                },
            );
        }
        if self.chance(40) {
            let merchants = self.merchants.clone();
            let merchant = self.pick(&merchants);
            let mut rule = self.rule();
            if self.chance(50) {
                rule.refund_returns_percent = None;
            }
            schedule.merchants.insert(merchant, rule);
        }
        schedule
    }

    /// A unit of provider behaviours that keeps the provider coherent: after a behaviour that
    /// commits a payout, the next two are never a refusal, so a retry of the same payout is never
    /// refused by a provider that took it.
    fn faults(&mut self) -> Vec<Behaviour> {
        let retryable = [
            Behaviour::Fail500,
            Behaviour::Fail503WithRetryAfter(0),
            Behaviour::Conflict409,
            Behaviour::Locked423,
            Behaviour::TooEarly425,
        ];
        let safe_after_commit = [
            Behaviour::Normal,
            Behaviour::Fail500,
            Behaviour::Conflict409,
            Behaviour::Locked423,
            Behaviour::TooEarly425,
            Behaviour::Status(ProviderPayoutStatus::Paid),
        ];
        match self.rng.random_range(0..12) {
            0 => vec![Behaviour::Reject422],
            1 => vec![Behaviour::Status(ProviderPayoutStatus::Failed)],
            2 => vec![Behaviour::Status(ProviderPayoutStatus::Paid)],
            3 => vec![self.pick(&retryable)],
            4 => vec![
                self.pick(&retryable),
                self.pick(&retryable),
                self.pick(&retryable),
            ],
            5 => vec![Behaviour::SlowCommit { delay_ms: 20 }],
            6 => vec![self.pick(&retryable), Behaviour::Reject422],
            commit => {
                let first = match commit {
                    7 => Behaviour::CommitThenHang { delay_ms: 500 },
                    8 => Behaviour::CommitThenFail500,
                    9 => Behaviour::CommitThenConflict409 { hang_ms: 1_500 },
                    10 => Behaviour::WrongAmount,
                    _ => Behaviour::CommitThenHang { delay_ms: 500 },
                };
                vec![
                    first,
                    self.pick(&safe_after_commit),
                    self.pick(&safe_after_commit),
                ]
            }
        }
    }

    fn op(&mut self) -> Op {
        let merchants = self.merchants.clone();
        match self.rng.random_range(0..100) {
            0..=19 => self.payment(),
            20..=32 => self.refund(),
            33..=37 => Op::Adjustment {
                key: self.key(),
                tx: self.adjustment_spec(),
            },
            38..=43 => self.import(),
            44..=55 => {
                let date = self.unsettled_date();
                self.settled.entry(date).or_insert(1);
                Op::Run(date)
            }
            56..=58 => {
                let date = self.unsettled_date();
                self.settled.entry(date).or_insert(1);
                Op::RunTwice(date)
            }
            59..=65 => match self.settled_date() {
                Some(date) => {
                    *self.settled.entry(date).or_insert(0) += 1;
                    Op::Rerun {
                        date,
                        apply_current_fees: self.chance(50),
                    }
                }
                None => Op::Rerun {
                    date: self.unsettled_date(),
                    apply_current_fees: false,
                },
            },
            66 | 67 => match self.settled_date() {
                Some(date) => Op::Retry(date),
                None => Op::Run(open_date()),
            },
            68 => match self.rng.random_range(0..3) {
                0 => Op::Run(open_date()),
                1 => Op::RerunWithoutReason(self.unsettled_date()),
                _ => Op::Retry(self.unsettled_date()),
            },
            69..=73 => Op::SetFees(self.schedule()),
            74 => {
                self.offset_hours = if self.offset_hours == 3 { 4 } else { 3 };
                Op::SwitchCalendar
            }
            75 | 76 => Op::Hold(self.pick(&merchants)),
            77 | 78 => Op::Release(self.pick(&merchants)),
            79..=86 => Op::Faults(self.faults()),
            87..=89 => Op::SendPayouts,
            90..=94 => Op::ProviderSettles {
                pick: self.rng.random_range(0..16),
                to: if self.chance(65) {
                    ProviderPayoutStatus::Paid
                } else {
                    ProviderPayoutStatus::Failed
                },
            },
            _ => Op::Check {
                advance_hours: if self.chance(50) { 25 } else { 0 },
            },
        }
    }
}

/// The chance, after each operation, that a provider callback follows it.
const CALLBACK_PERCENT: u32 = 6;

/// A callback, drawn from `rng`: delivered once (40%), twice (30%) or late (30%).
fn callback(rng: &mut ChaCha8Rng) -> Op {
    Op::Callback {
        pick: rng.random_range(0..16),
        delivery: match rng.random_range(0..10) {
            0..=3 => Delivery::Once,
            4..=6 => Delivery::Twice,
            _ => Delivery::Late,
        },
    }
}

/// The chance, after each operation, that a stalled run follows it.
const STALLED_RUN_PERCENT: u32 = 4;
/// The chance that a sequence migrates to MongoDB at some point, and that one which does
/// migrates again later.
const MIGRATE_PERCENT: u32 = 4;
const MIGRATE_AGAIN_PERCENT: u32 = 50;

/// The operations added to the generator's (stalled runs, migrations), drawn from a stream of
/// their own (stream 2 of the seed) and never changing the generator's state, so the generator's
/// operations stay the ones the seed has always given, in the same order.
struct Extras {
    rng: ChaCha8Rng,
    /// Dates a stalled run was generated for (the generator does not know them settled).
    stalled: BTreeSet<NaiveDate>,
    /// After which of the generator's operations (by index) a migration comes.
    migrations: Vec<usize>,
}

impl Extras {
    fn new(seed: u64, count: usize) -> Extras {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(2);
        let mut migrations = Vec::new();
        if rng.random_range(0..100) < MIGRATE_PERCENT {
            let first = rng.random_range(0..count);
            migrations.push(first);
            if rng.random_range(0..100) < MIGRATE_AGAIN_PERCENT && first + 1 < count {
                migrations.push(rng.random_range(first + 1..count));
            }
        }
        Extras {
            rng,
            stalled: BTreeSet::new(),
            migrations,
        }
    }

    /// A stalled run: mostly of the earliest date not settled yet (as far as the generator and
    /// the stalled runs before know), now and then of any date (likely refused, settled already).
    fn stalled_run(&mut self, generator: &Generator) -> Op {
        let open: Vec<NaiveDate> = generator
            .dates
            .iter()
            .copied()
            .filter(|d| !generator.settled.contains_key(d) && !self.stalled.contains(d))
            .collect();
        let date = if !open.is_empty() && self.rng.random_range(0..100) < 85 {
            open[0]
        } else {
            generator.dates[self.rng.random_range(0..generator.dates.len())]
        };
        self.stalled.insert(date);
        Op::StalledRun {
            date,
            point: STALL_POINTS[self.rng.random_range(0..STALL_POINTS.len())],
        }
    }

    /// What follows the generator's operation `n`, if anything.
    fn after(&mut self, n: usize, generator: &Generator) -> Vec<Op> {
        let mut ops = Vec::new();
        if self.rng.random_range(0..100) < STALLED_RUN_PERCENT {
            ops.push(self.stalled_run(generator));
        }
        for _ in self.migrations.iter().filter(|m| **m == n) {
            ops.push(Op::Migrate);
        }
        ops
    }

    /// What a sequence that must stay as it was gets at its end: a migration now and then (it
    /// comes to rest on MongoDB), and a stalled run if a date is still open.
    fn tail(&mut self, generator: &Generator) -> Vec<Op> {
        let mut ops = Vec::new();
        if self.rng.random_range(0..100) < 50 {
            ops.push(Op::Migrate);
        }
        if generator
            .dates
            .iter()
            .any(|d| !generator.settled.contains_key(d))
        {
            ops.push(self.stalled_run(generator));
        }
        ops
    }
}

/// True for the seeds that found a defect (`FOUND_DEFECTS`): their sequences must stay the ones
/// that found it, so the added operations only follow them.
fn found_a_defect(seed: u64) -> bool {
    super::FOUND_DEFECTS
        .iter()
        .any(|(_, _, seeds)| seeds.contains(&seed))
}

/// The sequence of `seed`: 2–3 merchants, 1–2 currencies, 3–5 dates, 20–60 operations, each
/// followed now and then by a provider callback and by a stalled run, and now and then one or two
/// migrations to MongoDB. Callbacks are drawn from a stream of their own (stream 1 of the seed),
/// stalled runs and migrations from another (stream 2), so the other operations are the ones the
/// seed has always given. A seed of `FOUND_DEFECTS` gets stalled runs and migrations only after
/// its operations, which stay the sequence that found the defect.
pub fn generate(seed: u64) -> Scenario {
    let mut callbacks = ChaCha8Rng::seed_from_u64(seed);
    callbacks.set_stream(1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let merchant_count = rng.random_range(2..=3);
    let currencies = if rng.random_bool(0.5) {
        vec![Currency::from_code("USD").expect("USD")]
    } else {
        vec![
            Currency::from_code("USD").expect("USD"),
            Currency::from_code("KWD").expect("KWD"),
        ]
    };
    let date_count = rng.random_range(3..=5);
    let dates = (0..date_count)
        .map(|n| first_date() + Duration::days(n))
        .collect();
    let mut generator = Generator {
        rng,
        currencies,
        dates,
        merchants: (1..=merchant_count).map(|n| format!("m-{n}")).collect(),
        offset_hours: 3,
        instants: BTreeSet::new(),
        payments: Vec::new(),
        settled: BTreeMap::new(),
        next_ref: 0,
        next_key: 0,
    };
    let fees = generator.schedule();
    let count = generator.rng.random_range(20..=60);
    let mut extras = Extras::new(seed, count);
    let append_only = found_a_defect(seed);
    let mut ops = Vec::new();
    for n in 0..count {
        ops.push(generator.op());
        if callbacks.random_range(0..100) < CALLBACK_PERCENT {
            ops.push(callback(&mut callbacks));
        }
        if !append_only {
            ops.extend(extras.after(n, &generator));
        }
    }
    if append_only {
        ops.extend(extras.tail(&generator));
    }
    Scenario {
        seed,
        name: None,
        dates: generator.dates,
        merchants: generator.merchants,
        fees,
        ops,
    }
}
