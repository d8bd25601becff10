//! An HTTP load generator for the API benchmark: C connections, each sending requests back to back
//! for a fixed time, printing throughput and p50/p99 latency as one JSON line.
//!
//! Usage: load URL MODE SECONDS CONNECTIONS [TOKEN]
//!   MODE healthz  GET URL/healthz
//!        new      POST URL/api/v2/payments, a new Idempotency-Key and payment each request
//!        replay   POST URL/api/v2/payments, the same key and body every time (after one warm-up)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Healthz,
    New,
    Replay,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        bail!("usage: load URL MODE SECONDS CONNECTIONS [TOKEN]");
    }
    let base = args[0].trim_end_matches('/').to_string();
    let mode = match args[1].as_str() {
        "healthz" => Mode::Healthz,
        "new" => Mode::New,
        "replay" => Mode::Replay,
        other => bail!("unknown MODE {other:?} (healthz, new, replay)"),
    };
    let seconds: u64 = args[2].parse().context("SECONDS")?;
    let connections: usize = args[3].parse().context("CONNECTIONS")?;
    let token = args.get(4).cloned().unwrap_or_default();
    let run = Arc::new(Run {
        base,
        mode,
        token,
        counter: AtomicU64::new(0),
    });
    if mode == Mode::Replay {
        // The first request executes; every timed one is a replay of it.
        let client = client(1)?;
        let status = run.send(&client, 0).await?;
        if status != 201 {
            bail!("the warm-up payment answered {status}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let run = run.clone();
            tokio::spawn(async move { run.worker(deadline).await })
        })
        .collect();
    let started = Instant::now();
    let mut latencies_us = Vec::new();
    let mut errors = 0_u64;
    for worker in workers {
        let (mut latencies, worker_errors) = worker.await??;
        latencies_us.append(&mut latencies);
        errors += worker_errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies_us.sort_unstable();
    let percentile = |p: usize| {
        latencies_us
            .get((latencies_us.len().saturating_sub(1)) * p / 100)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{}",
        json!({
            "mode": args[1],
            "connections": connections,
            "requests": latencies_us.len(),
            "errors": errors,
            "seconds": elapsed,
            "requests_per_second": latencies_us.len() as f64 / elapsed,
            "p50_ms": percentile(50) as f64 / 1000.0,
            "p99_ms": percentile(99) as f64 / 1000.0,
        })
    );
    Ok(())
}

fn client(connections: usize) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(connections)
        .timeout(Duration::from_secs(30))
        .build()?)
}

struct Run {
    base: String,
    mode: Mode,
    token: String,
    counter: AtomicU64,
}

impl Run {
    /// One connection's loop: latencies of successful requests (µs) and the error count.
    async fn worker(&self, deadline: Instant) -> Result<(Vec<u64>, u64)> {
        let client = client(1)?;
        let mut latencies = Vec::new();
        let mut errors = 0;
        while Instant::now() < deadline {
            let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
            let started = Instant::now();
            match self.send(&client, n).await {
                Ok(status) if status < 300 => {
                    latencies
                        .push(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
                }
                _ => errors += 1,
            }
        }
        Ok((latencies, errors))
    }

    async fn send(&self, client: &reqwest::Client, n: u64) -> Result<u16> {
        let response = match self.mode {
            Mode::Healthz => client.get(format!("{}/healthz", self.base)).send().await?,
            Mode::New | Mode::Replay => {
                let id = if self.mode == Mode::New { n } else { 0 };
                let key = format!("00000000-0000-4000-8000-{id:012}");
                let body = json!({
                    "merchant_id": format!("m-{:05}", id % 5_000),
                    "amount": "12.50",
                    "currency": "USD",
                    "method": "card",
                    "external_ref": format!("bench-{id}"),
                    "occurred_at": "2026-11-20T10:00:00Z",
                });
                client
                    .post(format!("{}/api/v2/payments", self.base))
                    .bearer_auth(&self.token)
                    .header("Idempotency-Key", key)
                    .json(&body)
                    .send()
                    .await?
            }
        };
        let status = response.status().as_u16();
        // Read the body: a request is done when its answer is.
        response.bytes().await?;
        Ok(status)
    }
}
