//! Money as integer minor units of an ISO 4217 currency, with exact parsing and rounding.
//! Nothing here ever touches binary floating point: amounts are `i64` minor units, computed in `Decimal`.

use std::fmt;
use std::str::FromStr;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::excerpt::excerpt;

/// More integer digits than `i64::MAX` has (19) can never fit; longer inputs are refused before
/// any arithmetic, whatever the currency.
const MAX_INTEGER_DIGITS: usize = 19;

/// An ISO 4217 currency Settle knows, with the number of digits of its minor unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency {
    code: &'static str,
    exponent: u32,
}

/// The currencies Settle accepts, with their ISO 4217 minor-unit exponents.
const KNOWN_CURRENCIES: &[Currency] = &[
    Currency::known("AED", 2),
    Currency::known("BHD", 3),
    Currency::known("EGP", 2),
    Currency::known("EUR", 2),
    Currency::known("GBP", 2),
    Currency::known("JOD", 3),
    Currency::known("JPY", 0),
    Currency::known("KWD", 3),
    Currency::known("OMR", 3),
    Currency::known("QAR", 2),
    Currency::known("SAR", 2),
    Currency::known("USD", 2),
    Currency::known("YER", 2),
];

impl Currency {
    const fn known(code: &'static str, exponent: u32) -> Self {
        Currency { code, exponent }
    }

    /// Looks up an ISO 4217 code (upper case, as ISO writes it).
    pub fn from_code(code: &str) -> Result<Currency, MoneyError> {
        KNOWN_CURRENCIES
            .iter()
            .find(|c| c.code == code)
            .copied()
            .ok_or_else(|| MoneyError::UnknownCurrency(code.to_string()))
    }

    /// Every currency Settle accepts.
    pub fn all() -> &'static [Currency] {
        KNOWN_CURRENCIES
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Digits of the minor unit: 2 for USD (cents), 3 for KWD (fils), 0 for JPY.
    pub fn exponent(&self) -> u32 {
        self.exponent
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl FromStr for Currency {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::from_code(s)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Currency::from_code(&code).map_err(serde::de::Error::custom)
    }
}

/// Why an amount or currency was refused. Every message names the offending value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown currency {} (expected an ISO 4217 code such as USD, SAR or YER)", excerpt(.0))]
    UnknownCurrency(String),
    #[error("{} is not a decimal amount: {reason}", excerpt(.value))]
    Malformed { value: String, reason: &'static str },
    #[error("{} has {decimals} decimal places but {currency} allows {allowed}", excerpt(.value))]
    TooManyDecimals {
        value: String,
        decimals: usize,
        currency: Currency,
        allowed: u32,
    },
    #[error("{} is too large to be stored as {currency} minor units", excerpt(.value))]
    TooLarge { value: String, currency: Currency },
    #[error("cannot combine {left} with {right}")]
    CurrencyMismatch { left: Currency, right: Currency },
    #[error("amount overflow in {0}")]
    Overflow(Currency),
}

/// An exact amount: a count of minor units of one currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(minor: i64, currency: Currency) -> Money {
        Money { minor, currency }
    }

    pub fn zero(currency: Currency) -> Money {
        Money { minor: 0, currency }
    }

    /// Parses a major-unit decimal string such as `"12.50"` exactly.
    ///
    /// Accepted: an optional leading `-`, digits, and optionally `.` followed by at most the
    /// currency's number of decimals. Refused: exponents, signs other than one leading `-`,
    /// spaces, thousands separators, commas as decimal points, `NaN`, empty strings.
    pub fn parse_major(value: &str, currency: Currency) -> Result<Money, MoneyError> {
        let malformed = |reason| MoneyError::Malformed {
            value: value.to_string(),
            reason,
        };
        if value.is_empty() {
            return Err(malformed("it is empty"));
        }
        let unsigned = value.strip_prefix('-').unwrap_or(value);
        let (integer, fraction) = match unsigned.split_once('.') {
            Some((integer, fraction)) => (integer, Some(fraction)),
            None => (unsigned, None),
        };
        if integer.is_empty() {
            return Err(malformed("digits are required before the decimal point"));
        }
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(integer) {
            return Err(malformed(
                "only digits, one leading '-' and one '.' are allowed (no spaces, exponents or separators)",
            ));
        }
        let fraction = fraction.unwrap_or("");
        if unsigned.contains('.') && fraction.is_empty() {
            return Err(malformed("digits are required after the decimal point"));
        }
        if !all_digits(fraction) {
            return Err(malformed(
                "only digits, one leading '-' and one '.' are allowed (no spaces, exponents or separators)",
            ));
        }
        if fraction.len() > currency.exponent as usize {
            return Err(MoneyError::TooManyDecimals {
                value: value.to_string(),
                decimals: fraction.len(),
                currency,
                allowed: currency.exponent,
            });
        }
        let too_large = || MoneyError::TooLarge {
            value: value.to_string(),
            currency,
        };
        if integer.trim_start_matches('0').len() > MAX_INTEGER_DIGITS {
            return Err(too_large());
        }
        let decimal = Decimal::from_str_exact(value).map_err(|_| too_large())?;
        Money::from_decimal_exact(decimal, currency).ok_or_else(too_large)
    }

    /// Converts an exact major-unit decimal; `None` if it has too many decimals or overflows.
    fn from_decimal_exact(major: Decimal, currency: Currency) -> Option<Money> {
        let scaled = major.checked_mul(Decimal::from(10_i64.pow(currency.exponent)))?;
        if !scaled.fract().is_zero() {
            return None;
        }
        i64::try_from(scaled)
            .ok()
            .map(|minor| Money { minor, currency })
    }

    /// Rounds a major-unit decimal to the currency's minor unit, half away from zero.
    pub fn from_decimal_rounded(major: Decimal, currency: Currency) -> Result<Money, MoneyError> {
        let rounded =
            major.round_dp_with_strategy(currency.exponent, RoundingStrategy::MidpointAwayFromZero);
        Money::from_decimal_exact(rounded, currency).ok_or(MoneyError::Overflow(currency))
    }

    /// The amount in major units, exactly (12.50 for 1250 USD cents).
    pub fn to_decimal(&self) -> Decimal {
        Decimal::new(self.minor, self.currency.exponent)
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        self.minor
            .checked_add(other.minor)
            .map(|minor| Money::new(minor, self.currency))
            .ok_or(MoneyError::Overflow(self.currency))
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        self.minor
            .checked_sub(other.minor)
            .map(|minor| Money::new(minor, self.currency))
            .ok_or(MoneyError::Overflow(self.currency))
    }

    fn same_currency(self, other: Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch {
                left: self.currency,
                right: other.currency,
            })
        }
    }
}

/// Formats minor units of a currency as a major-unit decimal string with all its decimals
/// ("12.50", "-0.005", "100").
pub fn format_minor(minor: i64, currency: Currency) -> String {
    Money::new(minor, currency).to_string()
}

impl fmt::Display for Money {
    /// The major-unit decimal string with exactly the currency's decimals, without the code.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let exponent = self.currency.exponent;
        let magnitude = self.minor.unsigned_abs();
        let sign = if self.minor < 0 { "-" } else { "" };
        if exponent == 0 {
            return write!(f, "{sign}{magnitude}");
        }
        let unit = 10_u64.pow(exponent);
        write!(
            f,
            "{sign}{}.{:0width$}",
            magnitude / unit,
            magnitude % unit,
            width = exponent as usize
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usd() -> Currency {
        Currency::from_code("USD").unwrap()
    }

    #[test]
    fn exponents_follow_iso_4217() {
        for (code, exponent) in [
            ("YER", 2),
            ("SAR", 2),
            ("USD", 2),
            ("EUR", 2),
            ("AED", 2),
            ("EGP", 2),
            ("KWD", 3),
            ("JPY", 0),
        ] {
            assert_eq!(
                Currency::from_code(code).unwrap().exponent(),
                exponent,
                "{code}"
            );
        }
    }

    #[test]
    fn unknown_and_lower_case_codes_are_refused() {
        assert!(matches!(
            Currency::from_code("XXX"),
            Err(MoneyError::UnknownCurrency(_))
        ));
        assert!(Currency::from_code("usd").is_err());
    }

    #[test]
    fn parses_exact_amounts() {
        assert_eq!(Money::parse_major("12.50", usd()).unwrap().minor, 1250);
        assert_eq!(Money::parse_major("12.5", usd()).unwrap().minor, 1250);
        assert_eq!(Money::parse_major("12", usd()).unwrap().minor, 1200);
        assert_eq!(Money::parse_major("-0.01", usd()).unwrap().minor, -1);
        assert_eq!(Money::parse_major("007.10", usd()).unwrap().minor, 710);
        let kwd = Currency::from_code("KWD").unwrap();
        assert_eq!(Money::parse_major("1.234", kwd).unwrap().minor, 1234);
        let jpy = Currency::from_code("JPY").unwrap();
        assert_eq!(Money::parse_major("1500", jpy).unwrap().minor, 1500);
    }

    #[test]
    fn refuses_inexact_or_malformed_amounts_naming_the_value() {
        let too_precise = Money::parse_major("12.345", usd()).unwrap_err();
        assert!(matches!(
            too_precise,
            MoneyError::TooManyDecimals { decimals: 3, .. }
        ));
        assert!(too_precise.to_string().contains("\"12.345\""));
        let jpy = Currency::from_code("JPY").unwrap();
        assert!(Money::parse_major("10.5", jpy).is_err());
        for bad in [
            "1e3", "NaN", "", " 12", "12 ", "12,5", "--1", "+1", "1.", ".5", "1.2.3", "1_000",
            "inf", "-", "٣",
        ] {
            let error = Money::parse_major(bad, usd()).unwrap_err();
            assert!(
                error.to_string().contains(&format!("{bad:?}")),
                "message for {bad:?} must name it: {error}"
            );
        }
    }

    #[test]
    fn overflow_is_an_error_never_a_wrap() {
        assert!(matches!(
            Money::parse_major("92233720368547758.08", usd()),
            Err(MoneyError::TooLarge { .. })
        ));
        assert_eq!(
            Money::parse_major("92233720368547758.07", usd())
                .unwrap()
                .minor,
            i64::MAX
        );
        assert!(Money::parse_major("99999999999999999999999999999", usd()).is_err());
        let max = Money::new(i64::MAX, usd());
        assert_eq!(
            max.checked_add(Money::new(1, usd())),
            Err(MoneyError::Overflow(usd()))
        );
        let min = Money::new(i64::MIN, usd());
        assert!(min.checked_sub(Money::new(1, usd())).is_err());
    }

    #[test]
    fn arithmetic_refuses_mixed_currencies() {
        let sar = Currency::from_code("SAR").unwrap();
        assert!(matches!(
            Money::new(1, usd()).checked_add(Money::new(1, sar)),
            Err(MoneyError::CurrencyMismatch { .. })
        ));
    }

    #[test]
    fn rounds_half_away_from_zero() {
        let d = |s: &str| Decimal::from_str_exact(s).unwrap();
        assert_eq!(
            Money::from_decimal_rounded(d("0.125"), usd())
                .unwrap()
                .minor,
            13
        );
        assert_eq!(
            Money::from_decimal_rounded(d("-0.125"), usd())
                .unwrap()
                .minor,
            -13
        );
        assert_eq!(
            Money::from_decimal_rounded(d("0.124999"), usd())
                .unwrap()
                .minor,
            12
        );
        assert_eq!(
            Money::from_decimal_rounded(d("0.135"), usd())
                .unwrap()
                .minor,
            14
        );
    }

    #[test]
    fn formats_with_all_decimals() {
        assert_eq!(Money::new(1250, usd()).to_string(), "12.50");
        assert_eq!(Money::new(-5, usd()).to_string(), "-0.05");
        assert_eq!(
            Money::new(i64::MIN, usd()).to_string(),
            "-92233720368547758.08"
        );
        let kwd = Currency::from_code("KWD").unwrap();
        assert_eq!(Money::new(1, kwd).to_string(), "0.001");
        let jpy = Currency::from_code("JPY").unwrap();
        assert_eq!(Money::new(-1500, jpy).to_string(), "-1500");
    }

    fn any_currency() -> impl Strategy<Value = Currency> {
        proptest::sample::select(Currency::all().to_vec())
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(minor in any::<i64>(), currency in any_currency()) {
            let money = Money::new(minor, currency);
            prop_assert_eq!(Money::parse_major(&money.to_string(), currency).unwrap(), money);
        }

        #[test]
        fn decimal_round_trip_is_exact(minor in any::<i64>(), currency in any_currency()) {
            let money = Money::new(minor, currency);
            prop_assert_eq!(Money::from_decimal_rounded(money.to_decimal(), currency).unwrap(), money);
        }

        #[test]
        fn checked_add_agrees_with_wide_arithmetic(a in any::<i64>(), b in any::<i64>()) {
            let sum = Money::new(a, usd()).checked_add(Money::new(b, usd()));
            match i64::try_from(i128::from(a) + i128::from(b)) {
                Ok(expected) => prop_assert_eq!(sum.unwrap().minor, expected),
                Err(_) => prop_assert!(sum.is_err()),
            }
        }

        #[test]
        fn rounding_error_is_at_most_half_a_minor_unit(
            minor in -1_000_000_000_i64..1_000_000_000,
            extra_digits in 0_u32..6,
            noise in 0_i64..1_000_000,
        ) {
            // A value with more decimals than the currency has, as a fee computation produces.
            let scale = usd().exponent() + extra_digits;
            let value = Decimal::new(minor * 10_i64.pow(extra_digits) + noise % 10_i64.pow(extra_digits), scale);
            let rounded = Money::from_decimal_rounded(value, usd()).unwrap().to_decimal();
            let half_unit = Decimal::new(5, usd().exponent() + 1);
            prop_assert!((rounded - value).abs() <= half_unit);
        }
    }
}
