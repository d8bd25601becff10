//! One simulated world: a real store, the real core services (payments, CSV import, settlement
//! runner, payout sender), the fault-injecting payout provider on loopback and a manual clock.
//! Executes operations (provider callbacks through `settle_core::payout_report`, stalled runs through
//! `settle_core::failpoint`'s scoped stalls, migrations through `settle_core::store::migration`),
//! checks each outcome against the reference model, and keeps a journal that a replay must
//! reproduce line for line.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use settle_core::calendar::{BusinessCalendar, Cutoff, DEFAULT_GRACE_MINUTES};
use settle_core::csv::{import_csv, ImportError, ImportOptions, NoProgress};
use settle_core::failpoint;
use settle_core::fees::{AmountByCurrency, FeeRule, FeeSchedule, MerchantFees};
use settle_core::idempotency::{Answer, Idempotency, IdempotencyKey, IdempotencySettings, Outcome};
use settle_core::model::{
    Payout, PayoutStatus, RunTrigger, SettlementLine, SettlementStatus, TransactionKind,
    TransactionStatus,
};
use settle_core::money::Currency;
use settle_core::payments::{problems, Operation, PaymentService};
use settle_core::payout::PayoutSender;
use settle_core::payout_report::{apply_report, PayoutReport, ReportOutcome, ReportedStatus};
use settle_core::provider::{PayoutProvider, ProviderPayoutStatus, ProviderSettings};
use settle_core::retry::RetryPolicy;
use settle_core::settlement::{RunError, RunOutcome, RunRequest, SettlementRunner};
use settle_core::store::migration::{migrate, MigrationReport};
use settle_core::store::{MerchantHold, SharedStore, StoreError};
use settle_core::time::{Clock, ManualClock};
use settle_store_mongo::MongoStore;
use settle_store_sqlite::SqliteStore;
use settle_tests::provider_server::{LedgerEntry, ProviderServer};
use settle_tests::sim_model::{
    Claim, ClaimMode, Figures, Imported, Lines, Model, ModelRule, ModelSchedule, NewTx, Recorded,
    RevisionStatus,
};
use uuid::Uuid;

use super::ops::{open_date, At, Delivery, Op, PaymentRef, Repeat, TxSpec};
use super::Verdict;
use crate::store_contract::adapters;

/// Who the simulation acts as.
const PRINCIPAL: &str = "sim";

/// The lease of every run of the world (the core's default, stated here so that a stalled run's
/// clock is moved exactly past it).
const RUN_LEASE_SECONDS: i64 = 300;
/// A payout sender's claim lasts the provider's call deadline plus this margin (`PayoutSender`).
const PAYOUT_CLAIM_MARGIN_SECONDS: i64 = 2;
/// How long a stalled run's A may take to reach its point or end, and to end once let go.
const STALL_BOUND: std::time::Duration = std::time::Duration::from_secs(60);
/// The write point before the claim's insert: a run held there has claimed nothing.
const BEFORE_CLAIM: &str = "store.claim.before_insert";

/// Stall scopes, unique in the process (sequences of several tests run in it at once).
static NEXT_SCOPE: AtomicU64 = AtomicU64::new(1);
/// What stalled runs and migrations came to, by case, over the process: for the summary.
static CASES: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());

fn count_case(case: String) {
    *CASES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .entry(case)
        .or_default() += 1;
}

/// How often each case of a stalled run or a migration happened so far, one line per case.
pub fn cases() -> Vec<String> {
    CASES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .iter()
        .map(|(case, n)| format!("{n:>4} × {case}"))
        .collect()
}

/// Where the clock stands when a sequence starts: after every date a sequence settles.
fn start() -> DateTime<Utc> {
    "2024-04-01T00:00:00Z".parse().expect("an instant")
}

/// The payment policy with tiny delays, so a sequence with faults takes well under a second: an
/// attempt gives up after 200 ms (the provider's hangs last 500 ms or more), backoff 5–20 ms.
fn payment_policy() -> RetryPolicy {
    let mut policy = RetryPolicy::payment().with_seed(7);
    policy.base_delay_ms = 5;
    policy.max_delay_ms = 20;
    policy.attempt_timeout_ms = 200;
    policy.deadline_ms = 3_000;
    policy
}

fn calendar(offset_hours: i64) -> BusinessCalendar {
    let timezone = if offset_hours == 3 {
        chrono_tz::Asia::Aden
    } else {
        chrono_tz::Asia::Dubai
    };
    BusinessCalendar::new(timezone, Cutoff::END_OF_DAY, DEFAULT_GRACE_MINUTES)
}

/// `minor` as a major-unit decimal string with the currency's decimals ("-12.50", KWD "0.031").
pub fn major(minor: i64, currency: Currency) -> String {
    let exponent = currency.exponent();
    let sign = if minor < 0 { "-" } else { "" };
    let magnitude = minor.unsigned_abs();
    if exponent == 0 {
        return format!("{sign}{magnitude}");
    }
    let unit = 10_u64.pow(exponent);
    format!(
        "{sign}{}.{:0width$}",
        magnitude / unit,
        magnitude % unit,
        width = exponent as usize
    )
}

fn fee_rule(rule: &ModelRule) -> FeeRule {
    FeeRule {
        percent: rule.percent_bp.map(|bp| Decimal::new(bp, 2)),
        fixed: AmountByCurrency(rule.fixed_minor.clone()),
        min: AmountByCurrency(rule.min_minor.clone()),
        max: AmountByCurrency(rule.max_minor.clone()),
        refund_returns_percent: rule.refund_returns_percent,
    }
}

/// The configuration form of a model schedule.
pub fn fee_schedule(schedule: &ModelSchedule) -> FeeSchedule {
    FeeSchedule {
        default: fee_rule(&schedule.default),
        methods: schedule
            .methods
            .iter()
            .map(|(method, rule)| (*method, fee_rule(rule)))
            .collect(),
        merchants: schedule
            .merchants
            .iter()
            .map(|(merchant, rule)| {
                (
                    merchant.clone(),
                    MerchantFees {
                        rule: fee_rule(rule),
                        methods: BTreeMap::new(),
                    },
                )
            })
            .collect(),
    }
}

/// The engine's figures in the model's terms.
pub fn figures(line: &SettlementLine) -> Figures {
    let f = &line.figures;
    Figures {
        transaction_count: f.transaction_count,
        completed_count: f.completed_count,
        failed_count: f.failed_count,
        cancelled_count: f.cancelled_count,
        pending_count: f.pending_count,
        payment_count: f.payment_count,
        refund_count: f.refund_count,
        chargeback_count: f.chargeback_count,
        adjustment_count: f.adjustment_count,
        late_count: f.late_count,
        gross_minor: f.gross_minor,
        refunds_minor: f.refunds_minor,
        chargebacks_minor: f.chargebacks_minor,
        adjustments_minor: f.adjustments_minor,
        fees_minor: f.fees_minor,
        net_minor: f.net_minor,
    }
}

/// `Err(what: error)` for an engine call that must not fail.
pub fn must<T, E: std::fmt::Display>(result: Result<T, E>, what: &str) -> Result<T, String> {
    result.map_err(|error| format!("{what} failed: {error}"))
}

/// What a run request came to, in the terms the model predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Observed {
    Completed(u32),
    /// Computed, then failed on payouts left unsettled (a `retry` resumes it).
    Failed(u32),
    Refused(&'static str),
}

impl Observed {
    fn of(result: &Result<RunOutcome, RunError>) -> Result<Observed, String> {
        Ok(match result {
            Ok(outcome) => Observed::Completed(outcome.settlement.revision),
            Err(RunError::Failed {
                revision, error, ..
            }) if error.contains("payout") => Observed::Failed(*revision),
            Err(RunError::Refused(refusal)) => Observed::Refused(match refusal {
                StoreError::AlreadySettled { .. } => "already settled",
                StoreError::AlreadyRunning { .. } => "already running",
                StoreError::RevisionFailed { .. } => "revision failed",
                StoreError::NothingToDo { .. } => "nothing to do",
                StoreError::RevisionMoved { .. } => "revision moved",
                other => return Err(format!("the run was refused unexpectedly: {other}")),
            }),
            Err(RunError::NotSettleable(_)) => Observed::Refused("still open"),
            Err(RunError::ReasonRequired) => Observed::Refused("reason required"),
            Err(other) => return Err(format!("the run failed unexpectedly: {other}")),
        })
    }

    /// The revision it computed or resumed, if it claimed one.
    fn claimed(&self) -> Option<u32> {
        match self {
            Observed::Completed(revision) | Observed::Failed(revision) => Some(*revision),
            Observed::Refused(_) => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Observed::Completed(revision) => format!("r{revision} completed"),
            Observed::Failed(revision) => format!("r{revision} failed on payouts"),
            Observed::Refused(why) => format!("refused ({why})"),
        }
    }
}

/// The refusal the model's claim expects, if it expects one.
fn expected_refusal(claim: Claim) -> Option<&'static str> {
    match claim {
        Claim::AlreadySettled => Some("already settled"),
        Claim::RevisionFailed => Some("revision failed"),
        Claim::NothingToDo => Some("nothing to do"),
        Claim::Compute(_) | Claim::Resume(_) => None,
    }
}

/// The documented rule of a provider's report: a payout pending or unknown becomes what the
/// provider says; a sent one may become confirmed or failed; a failed one the provider reports
/// paid after all is believed (a late "accepted" is not: it may predate the failure). Nothing else
/// moves (a duplicate, a step back).
fn report_moves(from: PayoutStatus, to: PayoutStatus) -> bool {
    use PayoutStatus::*;
    match from {
        Pending | Unknown => matches!(to, Sent | Confirmed | Failed),
        Sent => matches!(to, Confirmed | Failed),
        // Paid after all is believed; a late "accepted" may predate the failure.
        Failed => matches!(to, Confirmed),
        Confirmed | Held => false,
    }
}

/// The report a provider status makes, in the provider's words.
fn reported(status: ProviderPayoutStatus) -> ReportedStatus {
    match status {
        ProviderPayoutStatus::Accepted => ReportedStatus::Sent,
        ProviderPayoutStatus::Paid => ReportedStatus::Confirmed,
        ProviderPayoutStatus::Failed => ReportedStatus::Failed,
    }
}

/// Checks what one report did to a payout that was `before` and is `after` (read again):
/// a forward step is applied as reported; anything else leaves the payout exactly as it was.
fn check_report(
    before: &Payout,
    report: &PayoutReport,
    outcome: &ReportOutcome,
    after: &Payout,
) -> Verdict {
    let target = report.status.payout_status();
    let reference = &report.reference;
    ensure!(
        outcome.payout == *after,
        "callback {reference} {target}: the outcome shows {:?}, the store has {after:?}",
        outcome.payout
    );
    ensure!(
        outcome.applied == (after.status != before.status),
        "callback {reference} {target}: applied {} but the payout went {} -> {}",
        outcome.applied,
        before.status,
        after.status
    );
    if report_moves(before.status, target) {
        ensure!(
            outcome.applied
                && after.status == target
                && after.provider_payout_id == report.provider_payout_id,
            "callback {reference}: {target} is a step forward from {}, yet the payout is {after:?} \
             (applied {})",
            before.status,
            outcome.applied
        );
        if target == PayoutStatus::Failed {
            ensure!(
                after.last_error == report.failure_reason,
                "callback {reference}: failed for {:?}, the payout says {:?}",
                report.failure_reason,
                after.last_error
            );
        }
    } else {
        ensure!(
            after == before,
            "callback {reference}: {target} is no step forward from {}, yet the payout changed \
             from {before:?} to {after:?}",
            before.status
        );
    }
    Ok(())
}

fn problem_type(answer: &Answer) -> &str {
    answer.response.body["type"].as_str().unwrap_or("")
}

/// A real store plus what keeps it alive (its temporary directory) or what to drop after (its
/// MongoDB database), and the SQLite store itself when it is one (a migration's source).
pub struct StoreUnderTest {
    pub store: SharedStore,
    pub keep: Box<dyn std::any::Any + Send + Sync>,
    pub database: Option<MongoStore>,
    pub sqlite: Option<Arc<SqliteStore>>,
}

/// A world's migration: the SQLite store it left and the MongoDB database it went on in.
struct Migration {
    source: Arc<SqliteStore>,
    target: MongoStore,
}

/// Every document of a MongoDB database but the migration's bookkeeping, by collection, in `_id`
/// order.
async fn contents(database: &str) -> Result<BTreeMap<String, Vec<Document>>, String> {
    let client = must(
        mongodb::Client::with_uri_str(adapters::mongodb_uri()).await,
        "connecting to MongoDB",
    )?;
    let database = client.database(database);
    let mut contents = BTreeMap::new();
    for name in must(
        database.list_collection_names().await,
        "listing collections",
    )? {
        if name.starts_with("migration") {
            continue;
        }
        let cursor = must(
            database
                .collection::<Document>(&name)
                .find(doc! {})
                .sort(doc! { "_id": 1 })
                .await,
            "reading a collection",
        )?;
        let documents = must(cursor.try_collect().await, "reading a collection")?;
        contents.insert(name, documents);
    }
    Ok(contents)
}

/// One world: the store, the provider, the clock and the model, plus the journal.
pub struct World {
    pub store: SharedStore,
    _keep: Box<dyn std::any::Any + Send + Sync>,
    /// The MongoDB database the world is on, if it is on one.
    database: Option<MongoStore>,
    /// The world's store while it is on SQLite.
    sqlite: Option<Arc<SqliteStore>>,
    /// Where the world migrated, once it did.
    migration: Option<Migration>,
    pub provider: ProviderServer,
    client: Arc<PayoutProvider>,
    pub clock: Arc<ManualClock>,
    offset_hours: i64,
    fees: ModelSchedule,
    pub model: Model,
    /// One line per operation outcome: what a replay must reproduce.
    pub journal: Vec<String>,
    files: tempfile::TempDir,
    files_written: u32,
    pub holds: BTreeSet<String>,
    /// Every payout's status after the last operation.
    payout_statuses: BTreeMap<String, PayoutStatus>,
    /// Dates whose payouts changed to or from `failed` since their latest revision was planned:
    /// their payouts no longer add up to what they owe until a rerun pays or carries the difference.
    pub dirty: BTreeSet<NaiveDate>,
    /// Payouts the provider reported paid after having failed them.
    pub paid_after_failing: BTreeSet<String>,
    /// Every status the provider has given each payout (with its failure reason), oldest first:
    /// the one it was created with, then each the world set.
    provider_history: BTreeMap<String, Vec<(ProviderPayoutStatus, Option<String>)>>,
}

impl World {
    pub fn new(under_test: StoreUnderTest, fees: ModelSchedule) -> World {
        let provider = ProviderServer::start();
        let client = PayoutProvider::new(ProviderSettings {
            base_url: provider.base_url().to_string(),
            token: None,
            policy: payment_policy(),
        })
        .expect("a provider client");
        World {
            store: under_test.store,
            _keep: under_test.keep,
            database: under_test.database,
            sqlite: under_test.sqlite,
            migration: None,
            provider,
            client: Arc::new(client),
            clock: Arc::new(ManualClock::new(start())),
            offset_hours: 3,
            fees,
            model: Model::new(),
            journal: Vec::new(),
            files: tempfile::tempdir().expect("a directory for imports"),
            files_written: 0,
            holds: BTreeSet::new(),
            payout_statuses: BTreeMap::new(),
            dirty: BTreeSet::new(),
            paid_after_failing: BTreeSet::new(),
            provider_history: BTreeMap::new(),
        }
    }

    /// Drops the world's MongoDB databases, the one it is on and the one it migrated to (awaited
    /// here: a drop that blocked a runtime worker could starve the driver it waits for).
    pub async fn close(&self) {
        let mut dropped = BTreeSet::new();
        let databases = self
            .database
            .iter()
            .chain(self.migration.as_ref().map(|m| &m.target));
        for database in databases {
            if dropped.insert(database.database_name().to_string()) {
                let _ = database.drop_database().await;
            }
        }
    }

    fn note(&mut self, line: String) {
        self.journal.push(line);
    }

    fn payments(&self) -> PaymentService {
        PaymentService::new(
            self.store.clone(),
            Idempotency::new(self.store.clone(), IdempotencySettings::default()),
            calendar(self.offset_hours),
            self.clock.clone(),
        )
    }

    fn sender(&self) -> PayoutSender {
        PayoutSender::new(self.store.clone(), self.client.clone(), self.clock.clone())
    }

    fn runner(&self, owner: &str) -> SettlementRunner {
        SettlementRunner::new(
            self.store.clone(),
            self.clock.clone(),
            calendar(self.offset_hours),
            fee_schedule(&self.fees),
            owner,
        )
        .with_lease_duration(Duration::seconds(RUN_LEASE_SECONDS))
        .with_payouts(self.sender())
    }

    /// How long a payout sender's claim lasts on the world's clock.
    fn payout_claim_duration(&self) -> Duration {
        self.client.call_deadline() + Duration::seconds(PAYOUT_CLAIM_MARGIN_SECONDS)
    }

    /// The date `at` falls on in the calendar in force.
    fn natural_date(&self, at: &At) -> NaiveDate {
        (at.utc() + Duration::hours(self.offset_hours)).date_naive()
    }

    fn new_tx(&self, spec: &TxSpec) -> NewTx {
        NewTx {
            merchant_id: spec.merchant_id.clone(),
            external_ref: spec.external_ref.clone(),
            kind: spec.kind,
            status: spec.status,
            amount_minor: spec.amount_minor,
            currency: spec.currency,
            method: spec.method,
            occurred_at: spec.at.utc(),
            refund_of: spec.refund_of.clone(),
            natural_date: self.natural_date(&spec.at),
        }
    }

    async fn call(&self, key: u32, operation: Operation, body: &Value) -> Result<Answer, String> {
        let key = IdempotencyKey::parse(Some(&format!("sim-{key}")), false).expect("a key");
        must(
            self.payments()
                .execute(PRINCIPAL, &key, operation, body)
                .await,
            "the payments service",
        )
    }

    /// Checks an answer against what the model says recording must do; returns a journal word.
    fn expect_recorded(answer: &Answer, recorded: &Recorded) -> Result<String, String> {
        let status = answer.response.status;
        let body = &answer.response.body;
        let expected = |code: u16, kind: Option<&str>| -> Verdict {
            ensure!(
                status == code && kind.is_none_or(|kind| problem_type(answer) == kind),
                "expected {code} {kind:?} ({recorded:?}), got {status} {body}"
            );
            Ok(())
        };
        Ok(match recorded {
            Recorded::Inserted {
                settlement_date,
                late,
            } => {
                expected(201, None)?;
                ensure!(
                    body["settlement_date"] == json!(settlement_date.to_string())
                        && body["late"] == json!(late),
                    "expected it on {settlement_date} (late: {late}), got {body}"
                );
                format!(
                    "201 on {settlement_date}{}",
                    if *late { " late" } else { "" }
                )
            }
            Recorded::Duplicate => {
                expected(200, None)?;
                "200 duplicate".into()
            }
            Recorded::Conflict => {
                expected(409, Some(problems::EXTERNAL_REF_CONFLICT))?;
                "409 reference conflict".into()
            }
            Recorded::PaymentNotFound => {
                expected(404, Some(problems::PAYMENT_NOT_FOUND))?;
                "404 payment not found".into()
            }
            Recorded::NotRefundable => {
                expected(422, Some(problems::PAYMENT_NOT_REFUNDABLE))?;
                "422 not refundable".into()
            }
            Recorded::ExceedsPayment { remaining_minor } => {
                expected(422, Some(problems::REFUND_EXCEEDS_PAYMENT))?;
                format!("422 exceeds payment ({remaining_minor} left)")
            }
        })
    }

    fn payment_body(spec: &TxSpec) -> Value {
        let mut body = json!({
            "merchant_id": spec.merchant_id,
            "amount": major(spec.amount_minor, spec.currency),
            "currency": spec.currency.code(),
            "method": spec.method.as_str(),
            "external_ref": spec.external_ref,
            "occurred_at": spec.at.rfc3339(),
        });
        if spec.status != TransactionStatus::Completed || spec.amount_minor % 2 == 0 {
            body["status"] = json!(spec.status.as_str());
        }
        body
    }

    async fn payment(&mut self, key: u32, spec: &TxSpec, repeat: Repeat) -> Verdict {
        let body = Self::payment_body(spec);
        let answer = self.call(key, Operation::Payment, &body).await?;
        if spec.amount_minor <= 0 {
            ensure!(
                answer.response.status == 422 && problem_type(&answer) == problems::INVALID_REQUEST,
                "a zero payment must be refused as invalid, got {} {}",
                answer.response.status,
                answer.response.body
            );
            self.note(format!("payment {}: 422 invalid", spec.external_ref));
            return Ok(());
        }
        let recorded = self.model.record(self.new_tx(spec));
        let word = Self::expect_recorded(&answer, &recorded)?;
        self.note(format!("payment {}: {word}", spec.external_ref));
        match repeat {
            Repeat::Once => {}
            Repeat::Replay => {
                let again = self.call(key, Operation::Payment, &body).await?;
                ensure!(
                    again.outcome == Outcome::Replay && again.response == answer.response,
                    "the same key and body must replay the stored answer, got {:?} {} {}",
                    again.outcome,
                    again.response.status,
                    again.response.body
                );
                self.note("  replayed".into());
            }
            Repeat::Mismatch => {
                let mut other = body.clone();
                other["amount"] = json!(major(spec.amount_minor + 1, spec.currency));
                let again = self.call(key, Operation::Payment, &other).await?;
                ensure!(
                    again.outcome == Outcome::Mismatch && again.response.status == 422,
                    "a key reused with another body must be refused, got {:?} {}",
                    again.outcome,
                    again.response.status
                );
                self.note("  key reuse refused".into());
            }
            Repeat::SameRefNewKey | Repeat::ConflictingRef => {
                let mut again_spec = spec.clone();
                if repeat == Repeat::ConflictingRef {
                    again_spec.amount_minor += 1;
                }
                let again_body = Self::payment_body(&again_spec);
                let again = self
                    .call(key + 1_000_000, Operation::Payment, &again_body)
                    .await?;
                let recorded = self.model.record(self.new_tx(&again_spec));
                let word = Self::expect_recorded(&again, &recorded)?;
                self.note(format!("  again with a new key: {word}"));
            }
        }
        Ok(())
    }

    async fn adjustment(&mut self, key: u32, spec: &TxSpec) -> Verdict {
        let body = json!({
            "merchant_id": spec.merchant_id,
            "amount": major(spec.amount_minor, spec.currency),
            "currency": spec.currency.code(),
            "external_ref": spec.external_ref,
            "occurred_at": spec.at.rfc3339(),
            "reason": "simulated correction",
        });
        let answer = self.call(key, Operation::Adjustment, &body).await?;
        let recorded = self.model.record(self.new_tx(spec));
        let word = Self::expect_recorded(&answer, &recorded)?;
        self.note(format!("adjustment {}: {word}", spec.external_ref));
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn return_payment(
        &mut self,
        key: u32,
        kind: TransactionKind,
        of: &PaymentRef,
        amount_minor: i64,
        at: &At,
        external_ref: &str,
    ) -> Verdict {
        let (id, payment) = match of {
            PaymentRef::Known {
                merchant_id,
                external_ref,
            } => {
                let stored = must(
                    self.store
                        .transactions_by_ref(vec![(merchant_id.clone(), external_ref.clone())])
                        .await,
                    "looking the payment up",
                )?;
                let modelled = self.model.find(merchant_id, external_ref).cloned();
                ensure!(
                    stored.len() == usize::from(modelled.is_some()),
                    "payment {merchant_id}/{external_ref}: the store has {} of it, the model {}",
                    stored.len(),
                    usize::from(modelled.is_some())
                );
                match stored.first() {
                    Some(found) => (found.id, modelled),
                    None => (Uuid::from_u128(u128::from(key)), None),
                }
            }
            PaymentRef::Unknown(id) => (Uuid::from_u128(*id), None),
        };
        let currency = payment
            .as_ref()
            .map_or(Currency::from_code("USD").expect("USD"), |p| p.new.currency);
        let body = json!({
            "amount": major(amount_minor, currency),
            "external_ref": external_ref,
            "occurred_at": at.rfc3339(),
        });
        let operation = if kind == TransactionKind::Refund {
            Operation::Refund(id)
        } else {
            Operation::Chargeback(id)
        };
        let answer = self.call(key, operation, &body).await?;
        let recorded = match &payment {
            None => Recorded::PaymentNotFound,
            Some(payment) => {
                let p = &payment.new;
                let tx = NewTx {
                    merchant_id: p.merchant_id.clone(),
                    external_ref: external_ref.to_string(),
                    kind,
                    status: TransactionStatus::Completed,
                    amount_minor,
                    currency: p.currency,
                    method: p.method,
                    occurred_at: at.utc(),
                    refund_of: Some(p.external_ref.clone()),
                    natural_date: self.natural_date(at),
                };
                self.model.record(tx)
            }
        };
        let word = Self::expect_recorded(&answer, &recorded)?;
        self.note(format!("{kind} {external_ref}: {word}"));
        Ok(())
    }

    async fn import(&mut self, rows: &[TxSpec], spoiled: bool) -> Verdict {
        self.files_written += 1;
        let path = self
            .files
            .path()
            .join(format!("import-{}.csv", self.files_written));
        let mut text = String::from(
            "external_ref,merchant_id,kind,status,amount,currency,method,occurred_at,refund_of\r\n",
        );
        for row in rows {
            text.push_str(&format!(
                "{},{},{},{},{},{},{},{},{}\r\n",
                row.external_ref,
                row.merchant_id,
                row.kind,
                row.status,
                major(row.amount_minor, row.currency),
                row.currency.code(),
                row.method,
                row.at.rfc3339(),
                row.refund_of.as_deref().unwrap_or("")
            ));
        }
        if spoiled {
            text.push_str(&format!(
                "bad-{},m-1,payment,completed,0.00,USD,card,2024-03-10T12:00:00+03:00,\r\n",
                self.files_written
            ));
        }
        std::fs::write(&path, text).expect("write the import file");
        // The importer's future is not `Send` (it streams the file through `Rc` counters): it runs
        // to completion on this worker thread, which the runtime lets block meanwhile.
        let (store, now) = (self.store.clone(), self.clock_now());
        let business_calendar = calendar(self.offset_hours);
        let result = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(import_csv(
                &path,
                store.as_ref(),
                &business_calendar,
                &ImportOptions::default(),
                &NoProgress,
                now,
            ))
        });
        let new: Vec<NewTx> = rows.iter().map(|row| self.new_tx(row)).collect();
        let expected = self.model.import(new, spoiled);
        let word = match (&expected, result) {
            (Imported::Refused, Err(ImportError::InvalidRows { invalid_rows, .. })) => {
                format!("refused ({invalid_rows} invalid row(s))")
            }
            (
                Imported::Stored {
                    inserted,
                    duplicates,
                    late,
                },
                Ok(report),
            ) => {
                ensure!(
                    (report.inserted, report.duplicates, report.late)
                        == (*inserted, *duplicates, *late),
                    "import: expected {expected:?}, got {report:?}"
                );
                format!("{inserted} new, {duplicates} duplicate(s), {late} late")
            }
            (_, other) => return Err(format!("import: expected {expected:?}, got {other:?}")),
        };
        self.note(format!("import: {word}"));
        Ok(())
    }

    fn clock_now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Reads a revision's lines and checks them against what the model computed.
    async fn check_lines(&self, date: NaiveDate, revision: u32, expected: &Lines) -> Verdict {
        let stored = must(
            self.store.settlement_lines(date, revision).await,
            "reading settlement lines",
        )?;
        let found: Lines = stored
            .iter()
            .map(|line| ((line.merchant_id.clone(), line.currency), figures(line)))
            .collect();
        if &found != expected {
            let mut detail = String::new();
            for key in found.keys().chain(expected.keys()).collect::<BTreeSet<_>>() {
                let (engine, model) = (found.get(key), expected.get(key));
                if engine != model {
                    detail.push_str(&format!(
                        "\n    {} {}:\n      engine {engine:?}\n      model  {model:?}",
                        key.0, key.1
                    ));
                }
            }
            return Err(format!(
                "{date} r{revision}: the lines differ from the model's:{detail}"
            ));
        }
        Ok(())
    }

    /// Reads the date's revisions, checks their number, and feeds their statuses to the model.
    async fn observe_revisions(&mut self, date: NaiveDate) -> Verdict {
        let revisions = must(
            self.store.settlement_revisions(date).await,
            "reading revisions",
        )?;
        let modelled = self.model.dates.get(&date).map_or(0, Vec::len);
        ensure!(
            revisions.len() == modelled,
            "{date}: the store has {} revision(s), the model {modelled}",
            revisions.len()
        );
        for revision in revisions {
            let status = match revision.status {
                SettlementStatus::Completed => RevisionStatus::Completed,
                SettlementStatus::Failed => RevisionStatus::Failed,
                other => {
                    return Err(format!(
                        "{date} r{}: left {other} after its run",
                        revision.revision
                    ))
                }
            };
            self.model.observe_status(date, revision.revision, status);
        }
        Ok(())
    }

    /// Applies what the model says a claim does (computing a new revision) and checks the run.
    async fn settled(
        &mut self,
        date: NaiveDate,
        claim: Claim,
        observed: Observed,
        schedule: &ModelSchedule,
    ) -> Verdict {
        match (claim, observed.claimed()) {
            (Claim::Compute(revision), Some(found)) if found == revision => {
                self.dirty.remove(&date);
                let lines = self.model.settle(date, revision, schedule);
                self.check_lines(date, revision, &lines).await?;
            }
            (Claim::Resume(revision), Some(found)) if found == revision => {}
            (claim, None) if expected_refusal(claim).is_some() => {
                ensure!(
                    observed == Observed::Refused(expected_refusal(claim).unwrap_or_default()),
                    "{date}: expected {claim:?}, got {}",
                    observed.describe()
                );
            }
            (claim, _) => {
                return Err(format!(
                    "{date}: expected {claim:?}, got {}",
                    observed.describe()
                ))
            }
        }
        self.observe_revisions(date).await
    }

    async fn settle(&mut self, date: NaiveDate, request: RunRequest) -> Verdict {
        let (mode, label) = match &request {
            RunRequest::Run => (ClaimMode::Run, "run"),
            RunRequest::Rerun { .. } => (ClaimMode::Rerun, "rerun"),
            RunRequest::Retry => (ClaimMode::Retry, "retry"),
        };
        let schedule = match &request {
            RunRequest::Rerun {
                apply_current_fees, ..
            } => self
                .model
                .rerun_schedule(date, &self.fees, *apply_current_fees),
            _ => self.fees.clone(),
        };
        let result = self
            .runner("sim")
            .execute(date, request, PRINCIPAL, RunTrigger::Manual)
            .await;
        let observed = Observed::of(&result)?;
        if date == open_date() {
            ensure!(
                observed == Observed::Refused("still open"),
                "{date} is still open, yet: {}",
                observed.describe()
            );
        } else {
            let claim = self.model.claim(date, mode);
            self.settled(date, claim, observed, &schedule).await?;
        }
        self.note(format!("{label} {date}: {}", observed.describe()));
        Ok(())
    }

    async fn run_twice(&mut self, date: NaiveDate) -> Verdict {
        let (first, second) = (self.runner("sim-a"), self.runner("sim-b"));
        let (a, b) = tokio::join!(
            first.execute(date, RunRequest::Run, PRINCIPAL, RunTrigger::Manual),
            second.execute(date, RunRequest::Run, PRINCIPAL, RunTrigger::Manual)
        );
        let (a, b) = (Observed::of(&a)?, Observed::of(&b)?);
        let claim = self.model.claim(date, ClaimMode::Run);
        let word = match claim {
            Claim::Compute(_) => {
                let (winner, loser) = if a.claimed().is_some() {
                    (a, b)
                } else {
                    (b, a)
                };
                ensure!(
                    loser.claimed().is_none(),
                    "{date}: two runs at once both claimed it ({}, {})",
                    a.describe(),
                    b.describe()
                );
                ensure!(
                    matches!(
                        loser,
                        Observed::Refused(
                            "already running" | "already settled" | "revision failed"
                        )
                    ),
                    "{date}: the second run was refused oddly: {}",
                    loser.describe()
                );
                self.settled(date, claim, winner, &self.fees.clone())
                    .await?;
                format!("{}, the other refused", winner.describe())
            }
            _ => {
                ensure!(a == b, "{date}: {} and {}", a.describe(), b.describe());
                self.settled(date, claim, a, &self.fees.clone()).await?;
                format!("both {}", a.describe())
            }
        };
        self.note(format!("run {date} twice: {word}"));
        Ok(())
    }

    /// Run A of `date` in a task of its own, held at `point` on MongoDB; the clock moves past A's
    /// lease and run B settles the date (taking A's claim over); then A is let go and must lose:
    /// fenced, or refused if it had not claimed yet. Where A is not held (SQLite, or a run that
    /// never reaches the point) it runs first and B is refused. The journal says only how the date
    /// was settled, the same whichever run settled it.
    async fn stalled_run(&mut self, date: NaiveDate, point: &'static str) -> Verdict {
        let claim = self.model.claim(date, ClaimMode::Run);
        let fees = self.fees.clone();
        let scope = NEXT_SCOPE.fetch_add(1, Ordering::Relaxed);
        // Only MongoDB has the point: SQLite decides each step in one write transaction.
        let stall = self
            .database
            .is_some()
            .then(|| failpoint::stall_in(scope, point));
        let first = self.runner("sim-a");
        let mut a = tokio::spawn(failpoint::scoped(scope, async move {
            first
                .execute(date, RunRequest::Run, PRINCIPAL, RunTrigger::Manual)
                .await
        }));
        // A is held at the point, or ended without reaching it (refused, or nothing to plan).
        let waited = match &stall {
            Some(stall) => {
                tokio::time::timeout(STALL_BOUND, async {
                    tokio::select! {
                        () = stall.reached() => None,
                        joined = &mut a => Some(joined),
                    }
                })
                .await
            }
            None => tokio::time::timeout(STALL_BOUND, &mut a).await.map(Some),
        };
        let Ok(ended) = waited else {
            failpoint::clear_scope(scope);
            a.abort();
            return Err(format!(
                "{date}: run A neither reached {point} nor ended in {STALL_BOUND:?}"
            ));
        };
        let held = ended.is_none();
        self.clock.advance(Duration::seconds(RUN_LEASE_SECONDS + 1));
        let second = self
            .runner("sim-b")
            .execute(date, RunRequest::Run, PRINCIPAL, RunTrigger::Manual)
            .await;
        // Lets A go on (and disarms the point).
        failpoint::clear_scope(scope);
        let first = match ended {
            Some(joined) => joined,
            None => match tokio::time::timeout(STALL_BOUND, a).await {
                Ok(joined) => joined,
                Err(_) => {
                    return Err(format!(
                        "{date}: run A, let go at {point}, did not end in {STALL_BOUND:?}"
                    ))
                }
            },
        };
        let first = first.map_err(|error| format!("{date}: run A panicked: {error}"))?;
        // A stale run may claim a payout B left unsettled before its fence stops it: the claim
        // lapses here, on every store alike, so it holds no later sender up.
        self.clock
            .advance(self.payout_claim_duration() + Duration::seconds(1));

        let lost = matches!(first, Err(RunError::Store(StoreError::LeaseLost(_))));
        let a_seen = if lost {
            None
        } else {
            Some(Observed::of(&first)?)
        };
        let b_seen = Observed::of(&second)?;
        let a_word = a_seen.map_or("lease lost".to_string(), |seen| seen.describe());
        count_case(format!(
            "stalled run on {} at {point}: {}, A {a_word}, B {}",
            if self.database.is_some() {
                "mongodb"
            } else {
                "sqlite"
            },
            if held { "held" } else { "not held" },
            b_seen.describe()
        ));
        let winner = if held {
            let lost_as_it_should = if point == BEFORE_CLAIM {
                matches!(
                    a_seen,
                    Some(Observed::Refused("already settled" | "revision failed"))
                )
            } else {
                lost
            };
            ensure!(
                lost_as_it_should,
                "{date}: run A, held at {point} while B took the date over, went on to {a_word}"
            );
            if point != BEFORE_CLAIM {
                if let Ok(done) = &second {
                    ensure!(
                        done.resumed,
                        "{date}: run B completed A's claim without taking it over"
                    );
                }
            }
            b_seen
        } else {
            let Some(a_seen) = a_seen else {
                return Err(format!(
                    "{date}: run A lost its lease without being held (B: {})",
                    b_seen.describe()
                ));
            };
            ensure!(
                matches!(
                    b_seen,
                    Observed::Refused("already settled" | "revision failed")
                ),
                "{date}: run A ran first ({a_word}), yet run B {}",
                b_seen.describe()
            );
            a_seen
        };
        if let Observed::Failed(_) = winner {
            // The revision failed on payouts left unsettled. A stale run let go may have claimed
            // one (it stops at its fence before it sends) or looked one up at the provider and
            // recorded what it found there (a lookup pays nothing): a sender brings the date's
            // payouts to where any sender would, on every store alike, before anything observes
            // them. Not journaled: how many it moved depends on what the stale run did.
            must(
                self.sender().send_awaiting(Some(date), None, None).await,
                "sending the date's payouts",
            )?;
        }
        self.settled(date, claim, winner, &fees).await?;
        let mut word = winner.describe();
        if let Some(revision) = winner.claimed() {
            // Exactly one run settled the revision, as the model expects it.
            let revisions = must(
                self.store.settlement_revisions(date).await,
                "reading revisions",
            )?;
            let of_it: Vec<_> = revisions
                .iter()
                .filter(|r| r.revision == revision)
                .collect();
            let status = match winner {
                Observed::Completed(_) => SettlementStatus::Completed,
                _ => SettlementStatus::Failed,
            };
            ensure!(
                of_it.len() == 1 && of_it[0].status == status,
                "{date} r{revision}: after a stalled run the store has {:?}",
                of_it
                    .iter()
                    .map(|r| (r.revision, r.status, r.lease_version))
                    .collect::<Vec<_>>()
            );
            let totals: Vec<String> = of_it[0]
                .totals
                .iter()
                .map(|t| {
                    format!(
                        "net {} {}",
                        major(t.figures.net_minor, t.currency),
                        t.currency
                    )
                })
                .collect();
            word = format!("{word}, once ({})", totals.join(", "));
        }
        self.note(format!("stalled run {date}: {word}"));
        Ok(())
    }

    /// Copies the world's SQLite store into a fresh MongoDB database and goes on there; once
    /// migrated, copies the same SQLite store into that database again, which must change nothing.
    /// On a world on MongoDB from the start, or without a MongoDB server, nothing.
    async fn migrate(&mut self) -> Verdict {
        let case = if self.migration.is_some() {
            self.migrate_again().await?;
            "migrate again"
        } else if let Some(source) = self.sqlite.clone().filter(|_| super::mongodb_available()) {
            self.migrate_first(source).await?;
            "migrate from SQLite"
        } else if self.database.is_some() {
            "migrate: nothing (on MongoDB)"
        } else {
            "migrate: nothing (no MongoDB server)"
        };
        count_case(case.to_string());
        self.note("migrate".into());
        Ok(())
    }

    async fn run_migration(
        &self,
        source: &SqliteStore,
        target: &MongoStore,
    ) -> Result<MigrationReport, String> {
        let clock = self.clock.clone();
        must(
            migrate(source, target, &move || clock.now(), &|_, _| {}).await,
            "migrating",
        )
    }

    async fn migrate_first(&mut self, source: Arc<SqliteStore>) -> Verdict {
        let name = format!("settle_sim_{}", Uuid::new_v4().simple());
        let target = must(
            MongoStore::connect(&adapters::mongodb_uri(), &name).await,
            "connecting to MongoDB",
        )?;
        super::without_ttl_deletion(&name).await;
        self.migration = Some(Migration {
            source: source.clone(),
            target: target.clone(),
        });
        let report = self.run_migration(&source, &target).await?;
        ensure!(
            !report.again && !report.resumed,
            "a first migration into a fresh database: again {}, resumed {}",
            report.again,
            report.resumed
        );
        for kind in &report.kinds {
            let (outcome, verified) = (&kind.outcome, &kind.verified);
            ensure!(
                verified.equal()
                    && verified.held == verified.source
                    && outcome.copied == verified.source
                    && outcome.differing == 0,
                "migration, {}: copied {}, present {}, differing {}; verified {}",
                kind.kind.as_str(),
                outcome.copied,
                outcome.present,
                outcome.differing,
                verified.summary()
            );
        }
        self.store = Arc::new(target.clone());
        self.database = Some(target);
        self.sqlite = None;
        Ok(())
    }

    async fn migrate_again(&mut self) -> Verdict {
        let Some(migration) = &self.migration else {
            return Ok(());
        };
        let (source, target) = (migration.source.clone(), migration.target.clone());
        let before = contents(target.database_name()).await?;
        let report = self.run_migration(&source, &target).await?;
        ensure!(
            report.again && !report.resumed,
            "a second migration of the same store: again {}, resumed {}",
            report.again,
            report.resumed
        );
        for kind in &report.kinds {
            ensure!(
                kind.outcome.copied == 0 && kind.verified.missing == 0,
                "second migration, {}: copied {} (the target holds every record already), \
                 verified {}",
                kind.kind.as_str(),
                kind.outcome.copied,
                kind.verified.summary()
            );
        }
        let after = contents(target.database_name()).await?;
        if before != after {
            let changed: Vec<&String> = before
                .keys()
                .chain(after.keys())
                .filter(|name| before.get(*name) != after.get(*name))
                .collect();
            return Err(format!(
                "a second migration of the same store changed the target's {changed:?}"
            ));
        }
        Ok(())
    }

    async fn hold(&mut self, merchant_id: &str) -> Verdict {
        let held = must(
            self.store
                .hold_merchant(&MerchantHold {
                    merchant_id: merchant_id.to_string(),
                    reason: "simulated review".into(),
                    held_by: PRINCIPAL.into(),
                    held_at: self.clock_now(),
                })
                .await,
            "holding a merchant",
        )?;
        self.holds.insert(merchant_id.to_string());
        self.note(format!("hold {merchant_id}: {held} payout(s) held"));
        Ok(())
    }

    async fn release(&mut self, merchant_id: &str) -> Verdict {
        let released = must(
            self.store
                .release_merchant(merchant_id, self.clock_now())
                .await,
            "releasing a merchant",
        )?;
        let was_held = self.holds.remove(merchant_id);
        ensure!(
            released.is_some() == was_held,
            "release {merchant_id}: held {was_held}, the store answered {released:?}"
        );
        self.note(match released {
            Some(count) => format!("release {merchant_id}: {count} payout(s) released"),
            None => format!("release {merchant_id}: refused (not on hold)"),
        });
        Ok(())
    }

    async fn send_payouts(&mut self) -> Verdict {
        let report = must(
            self.sender().send_awaiting(None, None, None).await,
            "sending payouts",
        )?;
        self.note(format!(
            "send payouts: {} settled, {} rejected, {} unsettled",
            report.settled,
            report.rejected,
            report.unsettled.len()
        ));
        Ok(())
    }

    /// Records the status each payout new in the provider's ledger was created with.
    fn observe_provider(&mut self, ledger: &[LedgerEntry]) {
        for entry in ledger {
            self.provider_history
                .entry(entry.reference.clone())
                .or_insert_with(|| vec![(entry.status, entry.failure_reason.clone())]);
        }
    }

    fn provider_settles(&mut self, pick: usize, to: ProviderPayoutStatus) {
        let mut ledger = self.provider.ledger();
        self.observe_provider(&ledger);
        ledger.sort_by(|a, b| a.reference.cmp(&b.reference));
        let candidates: Vec<_> = ledger
            .iter()
            .filter(|entry| match to {
                ProviderPayoutStatus::Paid => entry.status != ProviderPayoutStatus::Paid,
                _ => entry.status == ProviderPayoutStatus::Accepted,
            })
            .collect();
        let Some(entry) = (!candidates.is_empty()).then(|| candidates[pick % candidates.len()])
        else {
            self.note(format!("provider marks nothing {to}"));
            return;
        };
        if entry.status == ProviderPayoutStatus::Failed {
            self.paid_after_failing.insert(entry.reference.clone());
        }
        let reference = entry.reference.clone();
        self.provider.set_status(&reference, to);
        let reason = self
            .provider
            .ledger()
            .into_iter()
            .find(|e| e.reference == reference)
            .and_then(|e| e.failure_reason);
        if let Some(history) = self.provider_history.get_mut(&reference) {
            history.push((to, reason));
        }
        self.note(format!("provider marks {reference} {to}"));
    }

    /// One payout, read from the store.
    async fn payout(&self, reference: &str) -> Result<Payout, String> {
        self.payouts()
            .await?
            .remove(reference)
            .ok_or_else(|| format!("Settle has no payout {reference}"))
    }

    /// The provider reports a payout's status: its current one, once or twice, or its current one
    /// then one it held before (late). Each report is checked against the documented rule.
    async fn callback(&mut self, pick: usize, delivery: Delivery) -> Verdict {
        let mut ledger = self.provider.ledger();
        self.observe_provider(&ledger);
        ledger.sort_by(|a, b| a.reference.cmp(&b.reference));
        if ledger.is_empty() {
            self.note("callback: nothing to report".into());
            return Ok(());
        }
        let entry = ledger[pick % ledger.len()].clone();
        let history = self.provider_history[&entry.reference].clone();
        let (last, earlier) = history.split_last().expect("a status at creation");
        ensure!(
            last.0 == entry.status,
            "the provider has {} {}, the world saw it last {}",
            entry.reference,
            entry.status,
            last.0
        );
        let current = (entry.status, entry.failure_reason.clone());
        let statuses = match delivery {
            Delivery::Once => vec![current],
            Delivery::Twice => vec![current.clone(), current],
            Delivery::Late if earlier.is_empty() => vec![current],
            Delivery::Late => {
                let late = earlier[(pick / ledger.len()) % earlier.len()].clone();
                vec![current, late]
            }
        };
        let mut words = Vec::new();
        for (status, failure_reason) in statuses {
            let report = PayoutReport {
                reference: entry.reference.clone(),
                status: reported(status),
                failure_reason,
                provider_payout_id: Some(entry.id.clone()),
            };
            let before = self.payout(&entry.reference).await?;
            let outcome = must(
                apply_report(&self.store, self.clock.as_ref(), &report, PRINCIPAL).await,
                "applying a payout report",
            )?;
            let after = self.payout(&entry.reference).await?;
            check_report(&before, &report, &outcome, &after)?;
            if (before.status == PayoutStatus::Failed) != (after.status == PayoutStatus::Failed) {
                self.dirty.insert(after.settlement_date);
            }
            words.push(format!(
                "{} {} ({} -> {})",
                report.status,
                if outcome.applied {
                    "applied"
                } else {
                    "refused"
                },
                before.status,
                after.status
            ));
        }
        self.note(format!(
            "callback {} {delivery}: {}",
            entry.reference,
            words.join(", ")
        ));
        Ok(())
    }

    async fn check(&mut self, advance_hours: i64) -> Verdict {
        self.clock.advance(Duration::hours(advance_hours));
        let report = must(
            self.sender().check(None, PRINCIPAL).await,
            "checking payouts",
        )?;
        self.note(format!(
            "check: {} changed, {} recovered, {} lookup error(s)",
            report.changed.len(),
            report.recovered.len(),
            report.errors.len()
        ));
        Ok(())
    }

    /// Executes one operation, checks it, and checks the payouts against the provider after it.
    pub async fn execute(&mut self, op: &Op) -> Verdict {
        match op {
            Op::Payment { key, tx, repeat } => self.payment(*key, tx, *repeat).await?,
            Op::Return {
                key,
                kind,
                of,
                amount_minor,
                at,
                external_ref,
            } => {
                self.return_payment(*key, *kind, of, *amount_minor, at, external_ref)
                    .await?
            }
            Op::Adjustment { key, tx } => self.adjustment(*key, tx).await?,
            Op::Import { rows, spoiled } => self.import(rows, *spoiled).await?,
            Op::Run(date) => self.settle(*date, RunRequest::Run).await?,
            Op::RunTwice(date) => self.run_twice(*date).await?,
            Op::StalledRun { date, point } => self.stalled_run(*date, point).await?,
            Op::Rerun {
                date,
                apply_current_fees,
            } => {
                let request = RunRequest::Rerun {
                    reason: "simulated correction".into(),
                    apply_current_fees: *apply_current_fees,
                };
                self.settle(*date, request).await?
            }
            Op::RerunWithoutReason(date) => {
                let result = self
                    .runner("sim")
                    .execute(
                        *date,
                        RunRequest::Rerun {
                            reason: "  ".into(),
                            apply_current_fees: false,
                        },
                        PRINCIPAL,
                        RunTrigger::Manual,
                    )
                    .await;
                let observed = Observed::of(&result)?;
                ensure!(
                    observed == Observed::Refused("reason required"),
                    "a rerun without a reason: {}",
                    observed.describe()
                );
                self.note(format!("rerun {date} without a reason: refused"));
            }
            Op::Retry(date) => self.settle(*date, RunRequest::Retry).await?,
            Op::SetFees(schedule) => {
                self.fees = schedule.clone();
                self.note("fees changed".into());
            }
            Op::SwitchCalendar => {
                self.offset_hours = if self.offset_hours == 3 { 4 } else { 3 };
                self.note(format!("calendar now UTC+{}", self.offset_hours));
            }
            Op::Hold(merchant_id) => self.hold(merchant_id).await?,
            Op::Release(merchant_id) => self.release(merchant_id).await?,
            Op::Faults(script) => {
                self.provider.script(script.clone());
                self.note(format!("{} behaviour(s) scripted", script.len()));
            }
            Op::SendPayouts => self.send_payouts().await?,
            Op::ProviderSettles { pick, to } => self.provider_settles(*pick, *to),
            Op::Check { advance_hours } => self.check(*advance_hours).await?,
            Op::Callback { pick, delivery } => self.callback(*pick, *delivery).await?,
            Op::Migrate => self.migrate().await?,
        }
        self.after_operation().await
    }

    /// Every payout of every date with a revision, by reference.
    pub async fn payouts(&self) -> Result<BTreeMap<String, Payout>, String> {
        let mut payouts = BTreeMap::new();
        for date in self.model.dates.keys() {
            for payout in must(self.store.payouts(*date).await, "reading payouts")? {
                payouts.insert(payout.reference.clone(), payout);
            }
        }
        Ok(payouts)
    }

    /// Marks dates whose payouts moved to or from `failed`, and checks that the provider's ledger
    /// and the store's payouts agree: nothing paid that Settle does not know or holds, nothing
    /// paid for a payout Settle failed unless the provider later said it paid it after all.
    async fn after_operation(&mut self) -> Verdict {
        let payouts = self.payouts().await?;
        for (reference, payout) in &payouts {
            let now_failed = payout.status == PayoutStatus::Failed;
            let moved = match self.payout_statuses.get(reference) {
                None => now_failed,
                Some(before) => (*before == PayoutStatus::Failed) != now_failed,
            };
            if moved {
                self.dirty.insert(payout.settlement_date);
            }
        }
        self.payout_statuses = payouts
            .iter()
            .map(|(reference, payout)| (reference.clone(), payout.status))
            .collect();
        let entries = self.provider.ledger();
        self.observe_provider(&entries);
        let ledger: BTreeMap<String, _> = entries
            .into_iter()
            .map(|entry| (entry.reference.clone(), entry))
            .collect();
        for (reference, entry) in &ledger {
            let Some(payout) = payouts.get(reference) else {
                return Err(format!(
                    "the provider paid {reference}, a payout Settle does not have"
                ));
            };
            ensure!(
                (
                    payout.merchant_id.as_str(),
                    payout.currency,
                    payout.amount_minor
                ) == (
                    entry.merchant_id.as_str(),
                    entry.currency,
                    entry.amount_minor
                ),
                "the provider's {reference} is {} {} {}, Settle's {} {} {}",
                entry.merchant_id,
                entry.amount_minor,
                entry.currency,
                payout.merchant_id,
                payout.amount_minor,
                payout.currency
            );
        }
        for (reference, payout) in &payouts {
            let entry = ledger.get(reference);
            ensure!(
                payout.amount_minor > 0,
                "payout {reference} of {}",
                payout.amount_minor
            );
            let consistent = match payout.status {
                PayoutStatus::Pending | PayoutStatus::Held => entry.is_none(),
                PayoutStatus::Sent => entry.is_some(),
                PayoutStatus::Confirmed => {
                    entry.is_some_and(|e| e.status == ProviderPayoutStatus::Paid)
                }
                PayoutStatus::Failed => {
                    entry.is_none_or(|e| e.status == ProviderPayoutStatus::Failed)
                        || self.paid_after_failing.contains(reference)
                }
                PayoutStatus::Unknown => true,
            };
            ensure!(
                consistent,
                "payout {reference} is {} in Settle but {} at the provider",
                payout.status,
                entry.map_or("unknown".to_string(), |e| e.status.to_string())
            );
        }
        Ok(())
    }
}
