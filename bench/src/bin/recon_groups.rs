//! Times the matcher on batched bank debits: N debits, each the sum of one date's payouts in one
//! currency (M payouts in all), matched by the default rules (the group rule finds them).
//!
//! Usage: recon_groups [DEBITS] [PAYOUTS]   (defaults 1,000 and 50,000). Prints
//! `seconds matched peak_rss_mb` on one line: the matcher's time, the debits matched, and the
//! process's peak resident memory.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use chrono::{Days, NaiveDate};
use settle_core::money::Currency;
use settle_core::reconcile::{matcher, MatchRule, OurRecord, TheirEntry};

/// Deterministic amounts: a 64-bit linear congruential generator (Knuth's MMIX constants).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, low: i64, high: i64) -> i64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        low + ((self.0 >> 33) % (high - low) as u64) as i64
    }
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let debits: usize = args
        .first()
        .map_or(Ok(1_000), |n| n.parse())
        .context("DEBITS")?;
    let payouts: usize = args
        .get(1)
        .map_or(Ok(50_000), |n| n.parse())
        .context("PAYOUTS")?;
    if debits == 0 || payouts < 2 * debits {
        bail!("need at least one debit and two payouts per debit");
    }
    let currencies: Vec<Currency> = ["USD", "SAR", "YER"]
        .iter()
        .map(|c| Currency::from_code(c))
        .collect::<Result<_, _>>()?;
    let first = NaiveDate::from_ymd_opt(2026, 1, 1).expect("a date");
    let per_debit = payouts / debits;
    let mut lcg = Lcg(20_261_204);
    let mut ours = Vec::with_capacity(payouts);
    let mut theirs = Vec::with_capacity(debits);
    for batch in 0..debits {
        let currency = currencies[batch % currencies.len()];
        let date = first + Days::new((batch / currencies.len()) as u64);
        let mut sum = 0i64;
        for n in 0..per_debit {
            let amount = lcg.next(1_000, 500_000);
            sum += amount;
            let reference = format!("{date}.{currency}.r1.m-{batch:04}-{n:03}");
            ours.push(OurRecord {
                id: reference.clone(),
                amount_minor: -amount,
                currency,
                date,
                references: vec![reference],
            });
        }
        theirs.push(TheirEntry {
            id: format!("bank#{batch}"),
            amount_minor: -sum,
            currency,
            booking_date: date + Days::new(1),
            value_date: None,
            references: vec![],
            external_id: Some(format!("BNK-{batch}")),
        });
    }
    let rules = MatchRule::defaults();
    let started = Instant::now();
    let outcome = matcher::run(&rules, &ours, &theirs, &[]);
    let seconds = started.elapsed().as_secs_f64();
    let matched = outcome
        .matches
        .iter()
        .filter(|m| m.ours.len() == per_debit && m.difference_minor == 0)
        .count();
    println!("{seconds:.3} {matched} {:.1}", peak_rss_mb());
    Ok(())
}
