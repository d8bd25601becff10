//! The configuration file's shape, declared with serde: every section and value is read leniently,
//! keeping its own problem, so that one bad value never hides the next and `config` reports them all.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde::Deserialize;
use toml::value::Datetime;
use toml::{Table, Value};

use crate::calendar::Cutoff;
use crate::limits::MAX_AMOUNT_MINOR_CEILING;
use crate::store::settings::StoreKind;
use crate::telemetry::settings::OtlpProtocol;

/// The whole file (the root table).
#[derive(Deserialize)]
pub(super) struct FileShape {
    pub business: Option<Section<BusinessFile>>,
    pub fees: Option<Section<FeesFile>>,
    pub store: Option<Section<StoreFile>>,
    pub settlement: Option<Section<SettlementFile>>,
    pub data_dir: Option<Field<Text>>,
    pub idempotency: Option<Section<IdempotencyFile>>,
    pub payments: Option<Section<PaymentsFile>>,
    pub payouts: Option<Section<PayoutsFile>>,
    pub notifications: Option<Section<NotificationsFile>>,
    pub retry: Option<Section<RetryFile>>,
    pub server: Option<Section<ServerFile>>,
    pub scheduler: Option<Section<SchedulerFile>>,
    pub telemetry: Option<Section<TelemetryFile>>,
    pub reconciliation: Option<Section<ReconciliationFile>>,
}

/// `[reconciliation]`: the four-eyes amount of write-offs, and the bank CSV profiles (each a table
/// read by the statements crate, which reports its own unknown keys).
#[derive(Deserialize)]
pub(super) struct ReconciliationFile {
    pub approval_above_minor: Option<Field<Int<0, { MAX_AMOUNT_MINOR_CEILING }>>>,
    pub profiles: Option<toml::Value>,
}

#[derive(Deserialize)]
pub(super) struct BusinessFile {
    pub timezone: Option<Field<Text>>,
    pub cutoff: Option<Field<Parsed<Cutoff>>>,
    pub grace_minutes: Option<Field<Int<0, { 24 * 60 }>>>,
}

#[derive(Deserialize)]
pub(super) struct FeesFile {
    pub default: Option<Section<FeeRuleFile>>,
    pub methods: Option<Entries<Section<FeeRuleFile>>>,
    pub merchants: Option<Entries<Section<FeeRuleFile>>>,
}

/// A fee rule; `methods` (its per-method rules) only in a merchant's.
#[derive(Deserialize)]
pub(super) struct FeeRuleFile {
    pub percent: Option<Field<Percent>>,
    pub fixed: Option<Entries<Field<AmountText>>>,
    pub min: Option<Entries<Field<AmountText>>>,
    pub max: Option<Entries<Field<AmountText>>>,
    pub refund_returns_percent: Option<Field<Flag>>,
    pub methods: Option<Entries<Section<FeeRuleFile>>>,
}

#[derive(Deserialize)]
pub(super) struct StoreFile {
    pub kind: Option<Field<Parsed<StoreKind>>>,
    pub path: Option<Field<Text>>,
    pub uri: Option<Field<Text>>,
    pub database: Option<Field<Text>>,
}

#[derive(Deserialize)]
pub(super) struct SettlementFile {
    pub lease_seconds: Option<Field<Int<1, 86_400>>>,
    pub page_size: Option<Field<Int<100, 100_000>>>,
}

#[derive(Deserialize)]
pub(super) struct IdempotencyFile {
    pub retention_hours: Option<Field<Int<1, { 24 * 90 }>>>,
    pub lock_seconds: Option<Field<Int<1, 3_600>>>,
    pub require_uuid_v4: Option<Field<Flag>>,
}

#[derive(Deserialize)]
pub(super) struct PaymentsFile {
    pub max_amount_minor: Option<Field<Int<1, { MAX_AMOUNT_MINOR_CEILING }>>>,
    pub max_amount: Option<Entries<Field<AmountText>>>,
}

#[derive(Deserialize)]
pub(super) struct PayoutsFile {
    pub provider_url: Option<Field<Text>>,
}

#[derive(Deserialize)]
pub(super) struct NotificationsFile {
    pub webhook_url: Option<Field<Text>>,
}

/// `[retry.NAME]`, one per [`crate::retry::PolicyName`].
#[derive(Deserialize)]
pub(super) struct RetryFile {
    pub database: Option<Section<RetryPolicyFile>>,
    pub external_api: Option<Section<RetryPolicyFile>>,
    pub payment: Option<Section<RetryPolicyFile>>,
}

#[derive(Deserialize)]
pub(super) struct RetryPolicyFile {
    pub max_retries: Option<Field<Int<0, 20>>>,
    pub base_delay_ms: Option<Field<Int<0, 600_000>>>,
    pub max_delay_ms: Option<Field<Int<0, 3_600_000>>>,
    pub attempt_timeout_ms: Option<Field<Int<1, 3_600_000>>>,
    pub deadline_ms: Option<Field<Int<1, 86_400_000>>>,
}

#[derive(Deserialize)]
pub(super) struct ServerFile {
    pub listen: Option<Field<Text>>,
    pub tls_cert: Option<Field<Text>>,
    pub tls_key: Option<Field<Text>>,
    pub metrics_require_token: Option<Field<Flag>>,
    pub require_rerun_approval: Option<Field<Flag>>,
    pub body_limit_bytes: Option<Field<Int<1_024, { 64 * 1024 * 1024 }>>>,
    pub request_timeout_ms: Option<Field<Int<100, 600_000>>>,
    pub shutdown_timeout_ms: Option<Field<Int<100, 600_000>>>,
}

#[derive(Deserialize)]
pub(super) struct SchedulerFile {
    pub enabled: Option<Field<Flag>>,
    pub max_catch_up_days: Option<Field<Int<1, 366>>>,
}

/// Headers are deliberately not a field: they are refused with a pointer to the environment.
#[derive(Deserialize)]
pub(super) struct TelemetryFile {
    pub otlp_endpoint: Option<Field<Text>>,
    pub otlp_protocol: Option<Field<Parsed<OtlpProtocol>>>,
    pub environment: Option<Field<Text>>,
    pub export_interval_ms: Option<Field<Int<100, 3_600_000>>>,
}

/// A value converted from the TOML value found at its key, or why it cannot be.
pub(super) trait Leaf: Sized {
    fn from_value(value: Value) -> Result<Self, String>;
}

/// One key's value, or its problem (the key is added by whoever checks it).
pub(super) struct Field<T>(pub Result<T, String>);

impl<'de, T: Leaf> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = unmark(Value::deserialize(deserializer)?, true);
        Ok(Field(T::from_value(value)))
    }
}

/// A table with the fields of `T`: its keys are kept so that the unknown ones can be reported.
pub(super) enum Section<T> {
    Table { keys: Vec<String>, body: T },
    Invalid(String),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Section<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match unmark(Value::deserialize(deserializer)?, false) {
            Value::Table(table) => {
                let keys = table.keys().cloned().collect();
                // Every field is lenient, so this only fails on a bug; it is reported all the same.
                match T::deserialize(Value::Table(table)) {
                    Ok(body) => Section::Table { keys, body },
                    Err(error) => Section::Invalid(error.to_string()),
                }
            }
            other => Section::Invalid(not_a_table(&other)),
        })
    }
}

/// A table of free keys (merchants, methods, currencies), each value read as a `T`, in key order.
pub(super) enum Entries<T> {
    Table(Vec<(String, T)>),
    Invalid(String),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Entries<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(match unmark(Value::deserialize(deserializer)?, false) {
            Value::Table(table) => Entries::Table(
                table
                    .into_iter()
                    .map(|(key, value)| T::deserialize(value).map(|entry| (key, entry)))
                    .collect::<Result<_, _>>()
                    .map_err(de::Error::custom)?,
            ),
            other => Entries::Invalid(not_a_table(&other)),
        })
    }
}

fn not_a_table(value: &Value) -> String {
    format!("expected a table, found {}", value.type_str())
}

/// Reads the whole file (with the environment laid over it).
pub(super) fn read(table: Table) -> Section<FileShape> {
    Section::deserialize(mark(Value::Table(table)))
        .unwrap_or_else(|error| Section::Invalid(error.to_string()))
}

/// `toml::Value`'s deserializer hands a datetime over as a string, which would let one pass where
/// a string is expected and name it wrongly in messages; so [`read`] first wraps each datetime in
/// a table of this one key (which starts with NUL: no file has it) and the readers unwrap it.
const DATETIME: &str = "\u{0}datetime";

fn mark(value: Value) -> Value {
    match value {
        Value::Datetime(datetime) => Value::Table(Table::from_iter([(
            DATETIME.to_string(),
            Value::String(datetime.to_string()),
        )])),
        Value::Table(table) => Value::Table(
            table
                .into_iter()
                .map(|(key, value)| (key, mark(value)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(mark).collect()),
        other => other,
    }
}

/// The datetime a [`mark`]ed value stands for; `deep` also within arrays and tables.
fn unmark(value: Value, deep: bool) -> Value {
    match value {
        Value::Table(table) => {
            if let (1, Some(Value::String(text))) = (table.len(), table.get(DATETIME)) {
                if let Ok(datetime) = text.parse::<Datetime>() {
                    return Value::Datetime(datetime);
                }
            }
            if !deep {
                return Value::Table(table);
            }
            Value::Table(
                table
                    .into_iter()
                    .map(|(key, value)| (key, unmark(value, true)))
                    .collect(),
            )
        }
        Value::Array(items) if deep => {
            Value::Array(items.into_iter().map(|item| unmark(item, true)).collect())
        }
        other => other,
    }
}

/// A string.
pub(super) struct Text(pub String);

impl Leaf for Text {
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::String(text) => Ok(Text(text)),
            other => Err(format!("expected a string, found {}", other.type_str())),
        }
    }
}

/// A string parsed by `T`'s `FromStr` (whose error is the message).
pub(super) struct Parsed<T>(pub T);

impl<T> Leaf for Parsed<T>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    fn from_value(value: Value) -> Result<Self, String> {
        let Text(text) = Text::from_value(value)?;
        text.parse()
            .map(Parsed)
            .map_err(|error: T::Err| error.to_string())
    }
}

/// `true` or `false`; from the environment, the strings `"true"` and `"false"`.
pub(super) struct Flag(pub bool);

impl Leaf for Flag {
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::Boolean(flag) => Ok(Flag(flag)),
            Value::String(text) if text == "true" || text == "false" => Ok(Flag(text == "true")),
            other => Err(format!("expected true or false, found {other}")),
        }
    }
}

/// A whole number from `MIN` to `MAX`, or a string of one (as the environment gives it).
pub(super) struct Int<const MIN: i64, const MAX: i64>(pub i64);

impl<const MIN: i64, const MAX: i64> Leaf for Int<MIN, MAX> {
    fn from_value(value: Value) -> Result<Self, String> {
        let number = match value {
            Value::Integer(number) => number,
            Value::String(text) => text
                .parse::<i64>()
                .map_err(|_| format!("{text:?} is not a whole number"))?,
            other => {
                return Err(format!(
                    "expected a whole number, found {}",
                    other.type_str()
                ))
            }
        };
        if (MIN..=MAX).contains(&number) {
            Ok(Int(number))
        } else {
            Err(format!("{number} is out of range ({MIN} to {MAX})"))
        }
    }
}

/// A percentage: a decimal string (or a whole number), never a float.
pub(super) struct Percent(pub Decimal);

impl Leaf for Percent {
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::String(text) => Decimal::from_str_exact(&text)
                .map(Percent)
                .map_err(|_| format!("{text:?} is not a decimal number such as \"2.5\"")),
            Value::Integer(number) => Ok(Percent(Decimal::from(number))),
            Value::Float(_) => Err(
                "write the percentage as a string, e.g. \"2.5\": TOML floats \
                                    are binary and inexact"
                    .into(),
            ),
            other => Err(format!(
                "expected a decimal string, found {}",
                other.type_str()
            )),
        }
    }
}

/// An amount as written (a decimal string or a whole number, never a float), to be read exactly
/// in the currency its key names.
pub(super) struct AmountText(pub String);

impl Leaf for AmountText {
    fn from_value(value: Value) -> Result<Self, String> {
        match value {
            Value::String(text) => Ok(AmountText(text)),
            Value::Integer(number) => Ok(AmountText(number.to_string())),
            Value::Float(_) => {
                Err("write the amount as a string, e.g. \"0.30\": TOML floats are inexact".into())
            }
            other => Err(format!(
                "expected a decimal string, found {}",
                other.type_str()
            )),
        }
    }
}

/// The field names of a derived struct: serde's own list, the one it passes to
/// `deserialize_struct`, so that the keys a section allows cannot drift from its fields.
pub(super) fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe<'a>(&'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("only the field names were wanted"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowed_keys_are_the_derived_fields() {
        assert_eq!(
            field_names::<SchedulerFile>(),
            ["enabled", "max_catch_up_days"]
        );
        assert_eq!(field_names::<FileShape>().len(), 14);
    }

    #[test]
    fn values_keep_their_own_problems() {
        let table: toml::Table = "enabled = 1\nmax_catch_up_days = \"400\"".parse().unwrap();
        let Section::Table { keys, body } =
            Section::<SchedulerFile>::deserialize(Value::Table(table)).unwrap()
        else {
            panic!("a table");
        };
        assert_eq!(keys, ["enabled", "max_catch_up_days"]);
        assert_eq!(
            body.enabled.unwrap().0.err().as_deref(),
            Some("expected true or false, found 1")
        );
        assert_eq!(
            body.max_catch_up_days.unwrap().0.err().as_deref(),
            Some("400 is out of range (1 to 366)")
        );
    }
}
