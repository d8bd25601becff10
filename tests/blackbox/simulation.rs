//! The deterministic simulation (VOPR-style): seeded random sequences of payments, returns, imports,
//! runs, reruns, retries, fee and calendar changes, holds, faulty payout sends and provider
//! callbacks, run on the real core over SQLite and MongoDB, checked against an independent model and
//! replayed for identity.
//!
//! Callbacks are injected once, duplicated or late (a status the payout held earlier at the
//! provider, after a newer one) through `settle_core::payout_report`, the same core service the
//! daemon's callback route uses; a report that is no step forward must leave its payout as it was.
//!
//! Concurrency: `RunTwice` runs one date twice at once. `StalledRun` holds run A of a date at one
//! of the MongoDB adapter's write points (a scoped `settle_core::failpoint` stall: before the
//! claim's insert, the freeze's fence check, the result's ledgers, a payout line's decision or the
//! completion), moves the clock past A's lease, lets run B take the date over and run to its end,
//! then lets A go on: A must lose (fenced, or refused if it had not claimed), the date is settled
//! once, and every money invariant holds. On SQLite A simply runs first and B is refused; the
//! journal says only how the date was settled, so the replay stays identical.
//!
//! Migration: `Migrate` copies a world on SQLite into a fresh MongoDB database with the core of
//! `settle migrate` (verified: nothing missing or differing) and goes on there with the same
//! clock, provider and model; a second `Migrate` copies the old SQLite store into it again, which
//! must copy nothing and leave every record the target changed since as it is. A world on MongoDB
//! from the start, or without a MongoDB server, does nothing (the replay on SQLite migrates).
//!
//! Each sequence is generated from its seed (`ops`), executed on a world — a real store, the core's
//! services, the fault-injecting provider on loopback, a manual clock — with every outcome checked
//! against the reference model (`settle_tests::sim_model`), brought to rest and checked for every
//! invariant (`invariants`), then replayed on a fresh SQLite store: the journal of outcomes and
//! every revision's export must be identical byte for byte. `SETTLE_SIM_SEQUENCES=N` sets the
//! number of sequences (N on SQLite, N/4 on MongoDB); `SETTLE_SIM_SEED=S` runs that one seed.
//!
//! The model and the invariants state the documented rules only. The seeds that found the engine
//! defects fixed since (`FOUND_DEFECTS`) are rerun on every run.

/// `return Err(message)` unless `condition` holds.
macro_rules! ensure {
    ($condition:expr, $($message:tt)+) => {
        if !$condition {
            return Err(format!($($message)+));
        }
    };
}

mod invariants;
mod ops;
mod orderings;
mod world;

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use futures::{FutureExt, StreamExt};
use settle_store_mongo::MongoStore;
use settle_store_sqlite::SqliteStore;

use crate::store_contract::adapters;
use ops::{generate, Scenario};
use world::{StoreUnderTest, World};

/// What every check returns: `Err` says what went wrong.
pub type Verdict = Result<(), String>;

const DEFAULT_SQLITE_SEQUENCES: usize = 200;
const DEFAULT_MONGODB_SEQUENCES: usize = 50;
/// MongoDB sequences use seeds of their own, from here on.
const MONGODB_SEED_BASE: u64 = 1_000_000;
/// Sequences run at once: they mostly wait on the store and on the provider's injected delays.
const SQLITE_IN_FLIGHT: usize = 6;
const MONGODB_IN_FLIGHT: usize = 3;

/// The engine defects the simulation found, with the seeds that found them.
const FOUND_DEFECTS: &[(&str, &str, &[u64])] = &[
    (
        "KD-1",
        "found and fixed in issue 14: a retry planned its revision's payouts again and applied \
         carry-forwards opened since by other dates; a revision that had carried forward already \
         could not carry a second amount (carry_forwards was keyed by origin date and revision, \
         written INSERT OR IGNORE), so the debt was dropped and the merchant overpaid",
        &[3, 4, 88],
    ),
    (
        "KD-2",
        "found and fixed in issue 14: a rerun that recomputed one refund's fee return under a new \
         charge set the ledger's charge to it, after which the payment's other refunds reused \
         returns computed under the old charge (FeeLedgerBook::settle_refund compared with the \
         ledger's charge, not with the terms of the return it reused): fee returned could exceed \
         fee charged",
        &[266],
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreKind {
    Sqlite,
    Mongodb,
}

impl StoreKind {
    fn name(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Mongodb => "mongodb",
        }
    }

    /// A fresh store: a new SQLite file in a temporary directory (as the contract suite makes
    /// it), or a new MongoDB database, which `World::close` drops.
    async fn open(self) -> StoreUnderTest {
        match self {
            StoreKind::Sqlite => {
                let directory = tempfile::tempdir().expect("a directory for the store");
                let store = SqliteStore::open(&directory.path().join("sim.db"))
                    .await
                    .expect("open SQLite");
                let store = std::sync::Arc::new(store);
                StoreUnderTest {
                    store: store.clone(),
                    keep: Box::new(directory),
                    database: None,
                    sqlite: Some(store),
                }
            }
            StoreKind::Mongodb => {
                let name = format!("settle_sim_{}", uuid::Uuid::new_v4().simple());
                let database = MongoStore::connect(&adapters::mongodb_uri(), &name)
                    .await
                    .expect("connect to MongoDB");
                without_ttl_deletion(&name).await;
                StoreUnderTest {
                    store: std::sync::Arc::new(database.clone()),
                    keep: Box::new(()),
                    database: Some(database),
                    sqlite: None,
                }
            }
        }
    }
}

/// The server's TTL monitor deletes idempotency records by its own (real) clock, while the
/// simulation's clock is manual and years behind: it would forget keys at random moments of a run.
/// Its databases drop that index; expiry still applies, as Settle checks it on every use.
async fn without_ttl_deletion(database: &str) {
    let client = mongodb::Client::with_uri_str(adapters::mongodb_uri())
        .await
        .expect("connect to MongoDB");
    client
        .database(database)
        .collection::<mongodb::bson::Document>("idempotency_records")
        .drop_index("expires_at_1")
        .await
        .expect("drop the TTL index of idempotency records");
}

/// What one execution of a sequence produced.
struct Played {
    journal: Vec<String>,
    exports: invariants::Exports,
}

/// Executes a scenario on a fresh store of `kind`, brings it to rest and checks it.
async fn play(scenario: &Scenario, kind: StoreKind) -> Result<Played, (String, Vec<String>)> {
    let mut world = World::new(kind.open().await, scenario.fees.clone());
    let mut executed = Ok(());
    for (n, op) in scenario.ops.iter().enumerate() {
        if let Err(error) = world.execute(op).await {
            executed = Err(format!("operation #{n:02} ({op}): {error}"));
            break;
        }
    }
    let checked = match executed {
        Ok(()) => async {
            invariants::bring_to_rest(&mut world).await?;
            invariants::check_at_rest(&world).await?;
            invariants::exports(&world).await
        }
        .await
        .map_err(|error| format!("at rest: {error}")),
        Err(error) => Err(error),
    };
    world.close().await;
    match checked {
        Ok(exports) => Ok(Played {
            journal: world.journal,
            exports,
        }),
        Err(error) => Err((error, world.journal)),
    }
}

/// The first difference between two executions of one scenario, if any.
fn difference(original: &Played, replay: &Played) -> Option<String> {
    let lines = original.journal.len().max(replay.journal.len());
    for n in 0..lines {
        let (a, b) = (original.journal.get(n), replay.journal.get(n));
        if a != b {
            return Some(format!(
                "the replay's journal differs at line {n}: {a:?} then, {b:?} in the replay"
            ));
        }
    }
    let revisions = |p: &Played| p.exports.keys().copied().collect::<Vec<_>>();
    if revisions(original) != revisions(replay) {
        return Some(format!(
            "revisions {:?} then, {:?} in the replay",
            revisions(original),
            revisions(replay)
        ));
    }
    original
        .exports
        .iter()
        .find(|(key, bytes)| replay.exports.get(key) != Some(bytes))
        .map(|((date, revision), bytes)| {
            format!(
                "the export of {date} r{revision} differs:\n{}\nin the replay:\n{}",
                String::from_utf8_lossy(bytes),
                String::from_utf8_lossy(&replay.exports[&(*date, *revision)])
            )
        })
}

/// How to run one scenario again.
fn rerun_command(scenario: &Scenario) -> String {
    match scenario.name {
        Some(_) => "cargo test -p settle-tests --test blackbox -- simulation::orderings --nocapture"
            .to_string(),
        None => format!(
            "SETTLE_SIM_SEED={} cargo test -p settle-tests --test blackbox -- simulation:: --nocapture",
            scenario.seed
        ),
    }
}

fn title(scenario: &Scenario) -> String {
    match scenario.name {
        Some(name) => format!("scenario \"{name}\""),
        None => format!("seed {}", scenario.seed),
    }
}

fn report(kind: StoreKind, error: &str, scenario: &Scenario, journal: &[String]) -> String {
    let mut text = format!(
        "simulation {} on {} failed: {error}\n\noperations ({}):\n{}\njournal:\n",
        title(scenario),
        kind.name(),
        title(scenario),
        scenario.describe()
    );
    for line in journal {
        text.push_str(&format!("  {line}\n"));
    }
    text.push_str(&format!("\nrerun it with: {}\n", rerun_command(scenario)));
    text
}

/// Plays `scenario` on `kind`, then replays it on a fresh SQLite store and compares.
async fn check_scenario(scenario: Scenario, kind: StoreKind) -> Result<(), String> {
    let failed = |(error, journal): (String, Vec<String>), on: StoreKind| {
        report(on, &error, &scenario, &journal)
    };
    let original = play(&scenario, kind).await.map_err(|e| failed(e, kind))?;
    let replay = play(&scenario, StoreKind::Sqlite)
        .await
        .map_err(|e| failed(e, StoreKind::Sqlite))?;
    if std::env::var("SETTLE_SIM_SEED").is_ok() || std::env::var("SETTLE_SIM_JOURNAL").is_ok() {
        println!(
            "{}",
            report(kind, "nothing (passed)", &scenario, &original.journal)
        );
    }
    match difference(&original, &replay) {
        None => Ok(()),
        Some(error) => Err(report(kind, &error, &scenario, &original.journal)),
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "a panic without a message".into())
}

/// Runs the scenarios, a few at a time, each in its own task; panics with the first failure.
async fn simulate(kind: StoreKind, scenarios: Vec<Scenario>, in_flight: usize) {
    let started = Instant::now();
    let count = scenarios.len();
    let outcomes: Vec<Result<(), String>> = futures::stream::iter(scenarios)
        .map(|scenario| async move {
            let (described, command, name) = (
                scenario.describe(),
                rerun_command(&scenario),
                title(&scenario),
            );
            let checked = AssertUnwindSafe(check_scenario(scenario, kind)).catch_unwind();
            let panicked = |message: String| {
                format!(
                    "simulation {name} on {} panicked: {message}\n\noperations ({name}):\n{described}\n\
                     rerun it with: {command}\n",
                    kind.name()
                )
            };
            match tokio::spawn(checked).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(payload)) => Err(panicked(panic_message(payload.as_ref()))),
                Err(join_error) => Err(panicked(join_error.to_string())),
            }
        })
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let failures: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    println!(
        "simulation: {count} sequence(s) on {} in {:.1} s, {} failed",
        kind.name(),
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    for failure in &failures {
        println!("  {}", failure.lines().next().unwrap_or_default());
    }
    let cases = world::cases();
    if !cases.is_empty() {
        println!("stalled runs and migrations so far (all simulation tests of this process):");
        for case in cases {
            println!("  {case}");
        }
    }
    if let Some(first) = failures.first() {
        panic!(
            "{} of {count} sequence(s) failed; the first:\n{first}",
            failures.len()
        );
    }
}

/// The seeds to run on `kind`: `SETTLE_SIM_SEED`, or the default (or `SETTLE_SIM_SEQUENCES`) count.
fn seeds(kind: StoreKind) -> Vec<u64> {
    if let Some(seed) = std::env::var("SETTLE_SIM_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return vec![seed];
    }
    let requested: Option<usize> = std::env::var("SETTLE_SIM_SEQUENCES")
        .ok()
        .and_then(|s| s.trim().parse().ok());
    match kind {
        StoreKind::Sqlite => (0..requested.unwrap_or(DEFAULT_SQLITE_SEQUENCES) as u64).collect(),
        StoreKind::Mongodb => {
            let count = requested.map_or(DEFAULT_MONGODB_SEQUENCES, |n| n.div_ceil(4));
            (0..count as u64).map(|n| MONGODB_SEED_BASE + n).collect()
        }
    }
}

/// Whether a MongoDB server is configured (`MONGODB_URI` or `SETTLE_TEST_MONGODB_URI`).
fn mongodb_available() -> bool {
    std::env::var("MONGODB_URI").is_ok() || std::env::var("SETTLE_TEST_MONGODB_URI").is_ok()
}

fn mongodb_configured() -> bool {
    let configured = mongodb_available();
    if !configured {
        println!("simulation on mongodb skipped: set SETTLE_TEST_MONGODB_URI (or MONGODB_URI)");
    }
    configured
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sequences_keep_every_invariant() {
    let scenarios = seeds(StoreKind::Sqlite).into_iter().map(generate).collect();
    simulate(StoreKind::Sqlite, scenarios, SQLITE_IN_FLIGHT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongodb_sequences_keep_every_invariant() {
    if !mongodb_configured() {
        return;
    }
    let scenarios = seeds(StoreKind::Mongodb)
        .into_iter()
        .map(generate)
        .collect();
    simulate(StoreKind::Mongodb, scenarios, MONGODB_IN_FLIGHT).await;
}

/// The orderings behind money bugs fixed before, on SQLite (and MongoDB when configured).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orderings_behind_past_money_bugs_keep_every_invariant() {
    simulate(StoreKind::Sqlite, orderings::scenarios(), 3).await;
    if mongodb_configured() {
        simulate(StoreKind::Mongodb, orderings::scenarios(), 3).await;
    }
}

/// The seeds that found the defects in `FOUND_DEFECTS`, on SQLite (and MongoDB when configured):
/// a sequence depends on its seed only, so each is the same sequence on either store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_that_found_defects_keep_every_invariant() {
    let scenarios = || {
        FOUND_DEFECTS
            .iter()
            .flat_map(|(_, _, seeds)| seeds.iter().copied())
            .map(generate)
            .collect()
    };
    simulate(StoreKind::Sqlite, scenarios(), 3).await;
    if mongodb_configured() {
        simulate(StoreKind::Mongodb, scenarios(), 3).await;
    }
}
