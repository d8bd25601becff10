//! Writes the benchmark workload as a transactions CSV on stdout: N transactions of one business
//! day (Asia/Aden) for M merchants, deterministic, with the mix of a real day (see `row`).
//!
//! Usage: workload DATE [TRANSACTIONS] [MERCHANTS]   (defaults 1,000,000 and 5,000)

use std::io::{BufWriter, Write};

use anyhow::{bail, Context, Result};
use chrono::NaiveDate;

const CURRENCIES: [&str; 3] = ["USD", "SAR", "YER"];
const METHODS: [&str; 3] = ["card", "wallet", "cash"];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(date) = args.first() else {
        bail!("usage: workload DATE [TRANSACTIONS] [MERCHANTS]");
    };
    let date: NaiveDate = date.parse().context("DATE is YYYY-MM-DD")?;
    let transactions: u64 = args
        .get(1)
        .map_or(Ok(1_000_000), |n| n.parse())
        .context("TRANSACTIONS")?;
    let merchants: u64 = args
        .get(2)
        .map_or(Ok(5_000), |n| n.parse())
        .context("MERCHANTS")?;
    if merchants == 0 {
        bail!("MERCHANTS must be at least 1");
    }
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
    writeln!(
        out,
        "external_ref,merchant_id,kind,status,amount,currency,method,occurred_at,refund_of"
    )?;
    for n in 0..transactions {
        row(&mut out, date, n, merchants)?;
    }
    out.flush()?;
    Ok(())
}

/// Transaction `n`: the `s`-th (`n / M`) of merchant `n % M`, which has one currency. Of each
/// merchant's transactions 4 % are failed payments, 1 % cancelled, 5 % refunds of that merchant's
/// previous transaction (always a completed payment), the rest completed payments.
fn row(out: &mut impl Write, date: NaiveDate, n: u64, merchants: u64) -> Result<()> {
    let merchant = n % merchants;
    let currency = CURRENCIES[(merchant % 3) as usize];
    let method = METHODS[(n / merchants % 3) as usize];
    // Seconds into the business day (UTC+3), spread over the day.
    let second = (n * 7_919) % 86_400;
    let (hour, minute, sec) = (second / 3600, second / 60 % 60, second % 60);
    let decimals = if currency == "YER" { "00" } else { "50" };
    let major = 5 + (n * 31) % 495;
    let sequence = n / merchants;
    let (kind, status, refund_of) = if sequence % 25 == 0 {
        ("payment", "failed", String::new())
    } else if sequence % 100 == 1 {
        ("payment", "cancelled", String::new())
    } else if sequence % 20 == 19 {
        // Transaction `sequence - 1` of this merchant is ≡ 18 (mod 20): a completed payment.
        ("refund", "completed", format!("t{}", n - merchants))
    } else {
        ("payment", "completed", String::new())
    };
    let amount = if kind == "refund" {
        format!("1.{decimals}")
    } else {
        format!("{major}.{decimals}")
    };
    writeln!(
        out,
        "t{n},m-{merchant:05},{kind},{status},{amount},{currency},{method},{date}T{hour:02}:{minute:02}:{sec:02}+03:00,{refund_of}"
    )?;
    Ok(())
}
