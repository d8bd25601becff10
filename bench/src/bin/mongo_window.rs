//! Measures the two ways of reading a settlement window from MongoDB: streaming the frozen
//! transactions through the Rust fold (exact, fees per transaction) against `$match` + `$group`.
//!
//! Usage: `cargo run --release -p settle-bench --bin mongo_window -- URI [TRANSACTIONS] [MERCHANTS]`
//! It creates and drops its own database. The numbers are printed as a Markdown table.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use chrono::{Duration, NaiveDate, Utc};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use settle_core::calendar::BusinessCalendar;
use settle_core::fees::FeeSchedule;
use settle_core::ingest;
use settle_core::model::{
    NewTransaction, PaymentMethod, RunTrigger, TransactionKind, TransactionStatus,
};
use settle_core::money::Currency;
use settle_core::settlement::SettlementComputation;
use settle_core::store::{ClaimMode, ClaimRequest, SharedStore};
use settle_store_mongo::MongoStore;

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let uri = args
        .next()
        .context("usage: mongo_window URI [TRANSACTIONS] [MERCHANTS]")?;
    let transactions: usize = args
        .next()
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(200_000);
    let merchants: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(5_000);
    let database = format!("settle_bench_{}", uuid::Uuid::new_v4().simple());
    let store = MongoStore::connect(&uri, &database).await?;
    let shared: SharedStore = Arc::new(store.clone());
    let calendar = BusinessCalendar::default();
    let date: NaiveDate = "2026-10-15".parse()?;
    let window = calendar.window(date)?;
    let usd = Currency::from_code("USD")?;

    let started = Instant::now();
    let span_ms = (window.end - window.start).num_milliseconds();
    let mut batch = Vec::with_capacity(5_000);
    for n in 0..transactions {
        batch.push(NewTransaction {
            id: None,
            merchant_id: format!("m-{:05}", n % merchants),
            kind: TransactionKind::Payment,
            status: TransactionStatus::Completed,
            amount_minor: 100 + (n as i64 * 7919) % 100_000,
            currency: usd,
            method: PaymentMethod::Card,
            occurred_at: window.start + Duration::milliseconds((n as i64 * 104_729) % span_ms),
            external_ref: format!("bench-{n}"),
            refund_of: None,
        });
        if batch.len() == 5_000 {
            ingest::record(
                shared.as_ref(),
                &calendar,
                std::mem::take(&mut batch),
                Utc::now(),
            )
            .await?;
        }
    }
    ingest::record(shared.as_ref(), &calendar, batch, Utc::now()).await?;
    let loaded_seconds = started.elapsed().as_secs_f64();

    let settlement = shared
        .claim_settlement(ClaimRequest {
            settlement_date: date,
            mode: ClaimMode::Run,
            owner: "bench".into(),
            requested_by: "bench".into(),
            trigger: RunTrigger::Manual,
            now: Utc::now(),
            lease_duration: Duration::minutes(30),
            calendar,
            fee_schedule: FeeSchedule::default(),
            window,
        })
        .await?;
    let fence = settlement.fence();
    let frozen = shared
        .freeze_transactions(&fence)
        .await?
        .context("the MongoDB store counts what it freezes")?;

    // 1. Streaming: pages of frozen transactions folded in Rust (what a run does).
    let started = Instant::now();
    let schedule = FeeSchedule::default();
    let mut fold = SettlementComputation::new(&schedule);
    let mut stream = shared.run_transactions(&fence, 5_000);
    while let Some(tx) = stream.try_next().await? {
        fold.add(&tx, None)?;
    }
    drop(stream);
    let streamed = fold.finish()?;
    let streaming_seconds = started.elapsed().as_secs_f64();

    // 2. Pushdown: $match + $group with an Int64 $sum, per merchant and currency.
    let started = Instant::now();
    let pipeline = vec![
        doc! { "$match": { "settlement_date": date.to_string(), "state": "frozen" } },
        doc! { "$group": {
            "_id": { "merchant_id": "$merchant_id", "currency": "$currency" },
            "gross_minor": { "$sum": "$amount_minor" },
            "count": { "$sum": 1 },
        } },
    ];
    let groups: Vec<Document> = mongodb::Client::with_uri_str(&uri)
        .await?
        .database(&database)
        .collection::<Document>("transactions")
        .aggregate(pipeline)
        .await?
        .try_collect()
        .await?;
    let pushdown_seconds = started.elapsed().as_secs_f64();
    let pushed_gross: i64 = groups
        .iter()
        .map(|g| g.get_i64("gross_minor").unwrap_or_default())
        .sum();
    let streamed_gross: i64 = streamed.totals.iter().map(|t| t.figures.gross_minor).sum();

    println!("| method | transactions | lines | seconds | transactions/s | exact gross | fees |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| cursor streaming + Rust fold | {frozen} | {} | {streaming_seconds:.2} | {:.0} | {} | per transaction, exact |",
        streamed.lines.len(),
        frozen as f64 / streaming_seconds,
        streamed_gross
    );
    println!(
        "| `$match` + `$group` (Int64 `$sum`) | {frozen} | {} | {pushdown_seconds:.2} | {:.0} | {} | not computable (rounding per transaction) |",
        groups.len(),
        frozen as f64 / pushdown_seconds,
        pushed_gross
    );
    println!(
        "\nloaded {transactions} transactions in {loaded_seconds:.1} s; database {database} dropped"
    );
    store.drop_database().await?;
    Ok(())
}
