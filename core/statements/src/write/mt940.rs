//! MT940 written from statements: one message per statement, every entry a `:61:` with its entry
//! date, and its description as `:86:`.

use std::fmt::Write;

use settle_domain::money::{format_minor, Currency};
use settle_domain::reconcile::{StatedBalance, Statement};

fn amount(minor: i64, currency: Currency) -> String {
    let text = format_minor(minor.abs(), currency);
    if text.contains('.') {
        text.replace('.', ",")
    } else {
        format!("{text},")
    }
}

fn balance(tag: &str, b: &StatedBalance, currency: Currency) -> String {
    format!(
        ":{tag}:{}{}{}{}\r\n",
        if b.amount_minor < 0 { "D" } else { "C" },
        b.date.format("%y%m%d"),
        currency.code(),
        amount(b.amount_minor, currency)
    )
}

/// The statements as MT940 messages (CRLF lines, each message ended by `-`).
pub fn mt940(statements: &[Statement]) -> String {
    let mut out = String::new();
    for s in statements {
        let _ = write!(
            out,
            ":20:SETTLE\r\n:25:{}\r\n:28C:{}\r\n",
            s.identity.account, s.identity.sequence
        );
        let zero = StatedBalance {
            amount_minor: 0,
            date: s.identity.period_start,
        };
        out.push_str(&balance(
            "60F",
            s.opening_balance.as_ref().unwrap_or(&zero),
            s.currency,
        ));
        for e in &s.entries {
            let mark = match (e.amount_minor < 0, e.reversal) {
                (false, false) => "C",
                (true, false) => "D",
                (true, true) => "RC",
                (false, true) => "RD",
            };
            let customer = e.references.first().map(String::as_str).unwrap_or("NONREF");
            let bank = e
                .external_id
                .as_ref()
                .map(|id| format!("//{id}"))
                .unwrap_or_default();
            let _ = write!(
                out,
                ":61:{}{}{mark}{}NTRF{customer}{bank}\r\n",
                e.value_date.unwrap_or(e.booking_date).format("%y%m%d"),
                e.booking_date.format("%m%d"),
                amount(e.amount_minor, e.currency),
            );
            if !e.description.is_empty() {
                let _ = write!(out, ":86:{}\r\n", e.description);
            }
        }
        let closing = StatedBalance {
            amount_minor: s.opening_balance.map_or(0, |b| b.amount_minor)
                + s.entries.iter().map(|e| e.amount_minor).sum::<i64>(),
            date: s.identity.period_end,
        };
        out.push_str(&balance(
            "62F",
            s.closing_balance.as_ref().unwrap_or(&closing),
            s.currency,
        ));
        out.push_str("-\r\n");
    }
    out
}
