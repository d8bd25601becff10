//! Amounts as statement formats write them, read exactly into signed minor units: a decimal string
//! with `.` (or `,` in MT940), never more decimals than the currency has.

use settle_domain::money::{Currency, Money};

/// `text` in major units of `currency` → minor units; `,` is read as the decimal mark when
/// `comma_decimal` (MT940 writes `1234,56`).
pub fn parse_amount(text: &str, currency: Currency, comma_decimal: bool) -> Result<i64, String> {
    let text = text.trim();
    let normalised;
    let text = if comma_decimal {
        if text.contains('.') {
            return Err(format!(
                "{text:?} is not an amount (the decimal mark here is ',')"
            ));
        }
        normalised = text.replace(',', ".");
        // MT940 allows a trailing mark without decimals: "100," is 100.
        normalised.strip_suffix('.').unwrap_or(&normalised)
    } else {
        text
    };
    Money::parse_major(text, currency)
        .map(|m| m.minor)
        .map_err(|e| e.to_string())
}
