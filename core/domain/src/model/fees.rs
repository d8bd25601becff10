//! Fee schedules: a default rule, per-method and per-merchant overrides, exact per-transaction fees.
//! A more specific rule overrides only the settings it names; fees round half away from zero.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::model::PaymentMethod;
use crate::money::{Currency, Money, MoneyError};

/// Amounts per currency in minor units, serialized as `{"USD": "0.30"}` (major-unit strings).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AmountByCurrency(pub BTreeMap<Currency, i64>);

impl AmountByCurrency {
    pub fn get(&self, currency: Currency) -> Option<i64> {
        self.0.get(&currency).copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Serialize for AmountByCurrency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (currency, minor) in &self.0 {
            map.serialize_entry(currency.code(), &Money::new(*minor, *currency).to_string())?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for AmountByCurrency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, String>::deserialize(deserializer)?;
        let mut amounts = BTreeMap::new();
        for (code, value) in raw {
            let currency = Currency::from_code(&code).map_err(serde::de::Error::custom)?;
            let money = Money::parse_major(&value, currency).map_err(serde::de::Error::custom)?;
            amounts.insert(currency, money.minor);
        }
        Ok(AmountByCurrency(amounts))
    }
}

/// One fee rule; every setting optional so that an override names only what it changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeeRule {
    /// Percentage of the amount, e.g. 2.5 for 2.5 %.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rust_decimal::serde::str_option"
    )]
    pub percent: Option<Decimal>,
    /// Fixed amount per transaction, per currency.
    #[serde(default, skip_serializing_if = "AmountByCurrency::is_empty")]
    pub fixed: AmountByCurrency,
    /// Smallest fee per transaction, per currency.
    #[serde(default, skip_serializing_if = "AmountByCurrency::is_empty")]
    pub min: AmountByCurrency,
    /// Largest fee per transaction, per currency.
    #[serde(default, skip_serializing_if = "AmountByCurrency::is_empty")]
    pub max: AmountByCurrency,
    /// Whether a refund returns the percentage part of the fee on the refunded amount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_returns_percent: Option<bool>,
}

/// A merchant's rule, with its own per-method overrides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MerchantFees {
    #[serde(flatten)]
    pub rule: FeeRule,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub methods: BTreeMap<PaymentMethod, FeeRule>,
}

/// The complete fee schedule. Stored with every settlement revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeSchedule {
    pub default: FeeRule,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub methods: BTreeMap<PaymentMethod, FeeRule>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub merchants: BTreeMap<String, MerchantFees>,
}

/// The origin's rate: 2.5 % with no fixed part.
pub const DEFAULT_PERCENT: Decimal = Decimal::from_parts(25, 0, 0, false, 1);

impl Default for FeeSchedule {
    fn default() -> Self {
        FeeSchedule {
            default: FeeRule {
                percent: Some(DEFAULT_PERCENT),
                ..FeeRule::default()
            },
            methods: BTreeMap::new(),
            merchants: BTreeMap::new(),
        }
    }
}

/// The settings that apply to one (merchant, method, currency), every field resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolvedRule {
    pub currency: Currency,
    pub percent: Decimal,
    pub fixed_minor: i64,
    pub min_minor: Option<i64>,
    pub max_minor: Option<i64>,
    pub refund_returns_percent: bool,
}

/// A rule that cannot be applied, named by where it sits in the schedule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct FeeRuleError {
    pub key: String,
    pub message: String,
}

impl FeeSchedule {
    /// The rules that may apply, most specific first.
    fn chain(&self, merchant_id: &str, method: PaymentMethod) -> Vec<&FeeRule> {
        let mut chain = Vec::with_capacity(4);
        if let Some(merchant) = self.merchants.get(merchant_id) {
            if let Some(rule) = merchant.methods.get(&method) {
                chain.push(rule);
            }
            chain.push(&merchant.rule);
        }
        if let Some(rule) = self.methods.get(&method) {
            chain.push(rule);
        }
        chain.push(&self.default);
        chain
    }

    /// Resolves every setting for one merchant, method and currency.
    pub fn resolve(
        &self,
        merchant_id: &str,
        method: PaymentMethod,
        currency: Currency,
    ) -> ResolvedRule {
        let chain = self.chain(merchant_id, method);
        let first =
            |pick: &dyn Fn(&FeeRule) -> Option<i64>| chain.iter().find_map(|rule| pick(rule));
        ResolvedRule {
            currency,
            percent: chain
                .iter()
                .find_map(|rule| rule.percent)
                .unwrap_or(Decimal::ZERO),
            fixed_minor: first(&|rule| rule.fixed.get(currency)).unwrap_or(0),
            min_minor: first(&|rule| rule.min.get(currency)),
            max_minor: first(&|rule| rule.max.get(currency)),
            refund_returns_percent: chain
                .iter()
                .find_map(|rule| rule.refund_returns_percent)
                .unwrap_or(false),
        }
    }

    /// Checks every rule, naming each problem by its configuration key.
    pub fn validate(&self) -> Vec<FeeRuleError> {
        let mut problems = Vec::new();
        let mut rules: Vec<(String, &FeeRule)> = vec![("fees.default".into(), &self.default)];
        for (method, rule) in &self.methods {
            rules.push((format!("fees.methods.{method}"), rule));
        }
        for (merchant_id, merchant) in &self.merchants {
            let key = format!("fees.merchants.{merchant_id:?}");
            if let Err(error) = crate::model::validate_merchant_id(merchant_id) {
                problems.push(FeeRuleError {
                    key: key.clone(),
                    message: error.to_string(),
                });
            }
            rules.push((key.clone(), &merchant.rule));
            for (method, rule) in &merchant.methods {
                rules.push((format!("{key}.methods.{method}"), rule));
            }
        }
        for (key, rule) in rules {
            problems.extend(rule_problems(&key, rule));
        }
        // Bounds may come from different levels: check the resolved pairs too.
        for currency in Currency::all() {
            for method in PaymentMethod::ALL {
                let mut merchants: Vec<&str> = self.merchants.keys().map(String::as_str).collect();
                merchants.push("");
                for merchant_id in merchants {
                    let resolved = self.resolve(merchant_id, *method, *currency);
                    if let (Some(min), Some(max)) = (resolved.min_minor, resolved.max_minor) {
                        if min > max {
                            let scope = if merchant_id.is_empty() {
                                format!("fees (method {method})")
                            } else {
                                format!("fees.merchants.{merchant_id:?} (method {method})")
                            };
                            problems.push(FeeRuleError {
                                key: scope,
                                message: format!(
                                    "the minimum fee {} {currency} exceeds the maximum {} {currency}",
                                    Money::new(min, *currency),
                                    Money::new(max, *currency)
                                ),
                            });
                        }
                    }
                }
            }
        }
        problems.dedup();
        problems
    }
}

fn rule_problems(key: &str, rule: &FeeRule) -> Vec<FeeRuleError> {
    let mut problems = Vec::new();
    if let Some(percent) = rule.percent {
        if percent.is_sign_negative() || percent > Decimal::ONE_HUNDRED {
            problems.push(FeeRuleError {
                key: format!("{key}.percent"),
                message: format!("{percent} must be between 0 and 100"),
            });
        }
    }
    for (name, amounts) in [
        ("fixed", &rule.fixed),
        ("min", &rule.min),
        ("max", &rule.max),
    ] {
        for (currency, minor) in &amounts.0 {
            if *minor < 0 {
                problems.push(FeeRuleError {
                    key: format!("{key}.{name}.{currency}"),
                    message: format!("{} must not be negative", Money::new(*minor, *currency)),
                });
            }
        }
    }
    problems
}

impl ResolvedRule {
    /// The percentage part of the fee on `amount_minor`, unrounded, in major units.
    fn percentage_part(&self, amount_minor: i64) -> Decimal {
        Money::new(amount_minor, self.currency).to_decimal() * self.percent / Decimal::ONE_HUNDRED
    }

    /// The fee charged on a completed payment: percent + fixed, clamped to [min, max], rounded
    /// to the minor unit half away from zero.
    pub fn payment_fee(&self, amount_minor: i64) -> Result<i64, MoneyError> {
        let fixed = Money::new(self.fixed_minor, self.currency).to_decimal();
        let raw = self
            .percentage_part(amount_minor)
            .checked_add(fixed)
            .ok_or(MoneyError::Overflow(self.currency))?;
        let mut fee = Money::from_decimal_rounded(raw, self.currency)?.minor;
        if let Some(min) = self.min_minor {
            fee = fee.max(min);
        }
        if let Some(max) = self.max_minor {
            fee = fee.min(max);
        }
        // The schedule's validation keeps min <= max, so the clamp lands inside both bounds.
        debug_assert!(
            self.min_minor.is_none_or(|min| fee >= min)
                && self.max_minor.is_none_or(|max| fee <= max),
            "fee {fee} outside [{:?}, {:?}]",
            self.min_minor,
            self.max_minor
        );
        Ok(fee)
    }

    /// The fee a refund of `refund_minor` returns, given how much of the payment's fee is still
    /// unreturned. Only the percentage part is ever returned, and never more than was charged.
    pub fn refund_fee_return(
        &self,
        refund_minor: i64,
        unreturned_fee_minor: i64,
    ) -> Result<i64, MoneyError> {
        if !self.refund_returns_percent || unreturned_fee_minor <= 0 {
            return Ok(0);
        }
        let share =
            Money::from_decimal_rounded(self.percentage_part(refund_minor), self.currency)?.minor;
        Ok(share.clamp(0, unreturned_fee_minor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usd() -> Currency {
        Currency::from_code("USD").unwrap()
    }

    fn dec(s: &str) -> Decimal {
        Decimal::from_str_exact(s).unwrap()
    }

    fn amounts(pairs: &[(&str, i64)]) -> AmountByCurrency {
        AmountByCurrency(
            pairs
                .iter()
                .map(|(code, minor)| (Currency::from_code(code).unwrap(), *minor))
                .collect(),
        )
    }

    fn schedule() -> FeeSchedule {
        let mut schedule = FeeSchedule {
            default: FeeRule {
                percent: Some(dec("2.5")),
                fixed: amounts(&[("USD", 30)]),
                ..FeeRule::default()
            },
            ..FeeSchedule::default()
        };
        schedule.methods.insert(
            PaymentMethod::Cash,
            FeeRule {
                percent: Some(dec("1")),
                ..FeeRule::default()
            },
        );
        schedule.merchants.insert(
            "m-big".into(),
            MerchantFees {
                rule: FeeRule {
                    percent: Some(dec("1.5")),
                    max: amounts(&[("USD", 500)]),
                    ..FeeRule::default()
                },
                methods: [(
                    PaymentMethod::Wallet,
                    FeeRule {
                        fixed: amounts(&[("USD", 0)]),
                        ..FeeRule::default()
                    },
                )]
                .into(),
            },
        );
        schedule
    }

    #[test]
    fn the_origin_float_bug_is_gone() {
        // 0.1 + 0.2 style: 2.5 % of 10.10 is 0.2525 exactly, rounded to 0.25.
        let rule = FeeSchedule::default().resolve("m", PaymentMethod::Card, usd());
        assert_eq!(rule.payment_fee(1010).unwrap(), 25);
        // Half away from zero: 2.5 % of 0.50 is 0.0125 -> 0.01; of 0.70 is 0.0175 -> 0.02.
        assert_eq!(rule.payment_fee(50).unwrap(), 1);
        assert_eq!(rule.payment_fee(70).unwrap(), 2);
        // 2.5 % of 1.00 is exactly 0.025 -> 0.03 (half away from zero, not to even).
        assert_eq!(rule.payment_fee(100).unwrap(), 3);
    }

    #[test]
    fn overrides_change_only_what_they_name() {
        let schedule = schedule();
        let card = schedule.resolve("m-small", PaymentMethod::Card, usd());
        assert_eq!((card.percent, card.fixed_minor), (dec("2.5"), 30));
        let cash = schedule.resolve("m-small", PaymentMethod::Cash, usd());
        assert_eq!((cash.percent, cash.fixed_minor), (dec("1"), 30));
        let big_card = schedule.resolve("m-big", PaymentMethod::Card, usd());
        assert_eq!(
            (big_card.percent, big_card.fixed_minor, big_card.max_minor),
            (dec("1.5"), 30, Some(500))
        );
        let big_wallet = schedule.resolve("m-big", PaymentMethod::Wallet, usd());
        assert_eq!(
            (big_wallet.percent, big_wallet.fixed_minor),
            (dec("1.5"), 0)
        );
        // The merchant's own percent wins over the method's.
        let big_cash = schedule.resolve("m-big", PaymentMethod::Cash, usd());
        assert_eq!(big_cash.percent, dec("1.5"));
        // Fixed amounts are per currency: none configured for SAR.
        let sar = Currency::from_code("SAR").unwrap();
        assert_eq!(
            schedule
                .resolve("m-small", PaymentMethod::Card, sar)
                .fixed_minor,
            0
        );
    }

    #[test]
    fn fee_is_clamped_to_min_and_max() {
        let rule = ResolvedRule {
            currency: usd(),
            percent: dec("2"),
            fixed_minor: 0,
            min_minor: Some(50),
            max_minor: Some(1000),
            refund_returns_percent: false,
        };
        assert_eq!(rule.payment_fee(100).unwrap(), 50);
        assert_eq!(rule.payment_fee(10_000).unwrap(), 200);
        assert_eq!(rule.payment_fee(1_000_000).unwrap(), 1000);
    }

    #[test]
    fn refunds_return_at_most_what_was_charged() {
        let mut rule = FeeSchedule::default().resolve("m", PaymentMethod::Card, usd());
        assert_eq!(
            rule.refund_fee_return(1000, 25).unwrap(),
            0,
            "off by default"
        );
        rule.refund_returns_percent = true;
        assert_eq!(rule.refund_fee_return(1000, 25).unwrap(), 25);
        assert_eq!(rule.refund_fee_return(1000, 10).unwrap(), 10);
        assert_eq!(rule.refund_fee_return(1000, 0).unwrap(), 0);
    }

    #[test]
    fn validation_names_each_problem_by_key() {
        let mut schedule = schedule();
        schedule.default.percent = Some(dec("120"));
        schedule.methods.get_mut(&PaymentMethod::Cash).unwrap().min = amounts(&[("USD", 900)]);
        let problems = schedule.validate();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"fees.default.percent"), "{problems:?}");
        assert!(
            problems.iter().any(|p| p
                .message
                .contains("minimum fee 9.00 USD exceeds the maximum 5.00 USD")),
            "{problems:?}"
        );
        assert!(FeeSchedule::default().validate().is_empty());
    }

    #[test]
    fn schedule_snapshot_round_trips_as_json_without_floats() {
        let schedule = schedule();
        let json = serde_json::to_string(&schedule).unwrap();
        assert!(json.contains(r#""percent":"2.5""#), "{json}");
        assert!(json.contains(r#""USD":"0.30""#), "{json}");
        assert_eq!(
            serde_json::from_str::<FeeSchedule>(&json).unwrap(),
            schedule
        );
    }

    proptest! {
        #[test]
        fn fee_matches_exact_rational_arithmetic(
            amount_minor in 1_i64..1_000_000_000_000,
            percent_hundredths in 0_u32..=10_000,
            fixed_minor in 0_i64..10_000,
        ) {
            let rule = ResolvedRule {
                currency: usd(),
                percent: Decimal::new(i64::from(percent_hundredths), 2),
                fixed_minor,
                min_minor: None,
                max_minor: None,
                refund_returns_percent: false,
            };
            let fee = rule.payment_fee(amount_minor).unwrap();
            // In integers: fee*10000 ≈ amount*percent_hundredths + fixed*10000, half away from zero.
            let numerator = i128::from(amount_minor) * i128::from(percent_hundredths) + i128::from(fixed_minor) * 10_000;
            let expected = (numerator + 5_000) / 10_000;
            prop_assert_eq!(i128::from(fee), expected);
        }

        #[test]
        fn refund_returns_never_exceed_the_charged_fee(
            payment_minor in 1_i64..100_000_000,
            refund_parts in proptest::collection::vec(1_i64..1000, 1..6),
            percent_tenths in 0_u32..=1000,
        ) {
            let rule = ResolvedRule {
                currency: usd(),
                percent: Decimal::new(i64::from(percent_tenths), 1),
                fixed_minor: 0,
                min_minor: None,
                max_minor: Some(1_000),
                refund_returns_percent: true,
            };
            let charged = rule.payment_fee(payment_minor).unwrap();
            let total_parts: i64 = refund_parts.iter().sum();
            let mut unreturned = charged;
            for part in &refund_parts {
                let refund = payment_minor * part / total_parts;
                let returned = rule.refund_fee_return(refund, unreturned).unwrap();
                prop_assert!(returned >= 0);
                unreturned -= returned;
                prop_assert!(unreturned >= 0);
            }
        }
    }
}
