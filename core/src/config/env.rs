//! The environment layer: `SETTLE_SECTION__KEY` variables set keys of the file's table (as strings,
//! which the lenient readers accept wherever a number or a flag is expected) before it is read.

use toml::{Table, Value};

use super::Check;

/// Prefix of environment overrides: `SETTLE_BUSINESS__TIMEZONE=Asia/Riyadh` sets `business.timezone`.
pub const ENV_PREFIX: &str = "SETTLE_";
const ENV_SEPARATOR: &str = "__";

/// Keys whose children are currency codes, which are upper case.
const CURRENCY_TABLES: &[&str] = &["fixed", "min", "max", "max_amount"];

/// `SETTLE_FEES__DEFAULT__FIXED__USD=0.30` sets `fees.default.fixed.USD = "0.30"`. Variables
/// without a section separator (`SETTLE_CONFIG`, `SETTLE_DATA_DIR`…) are not configuration keys.
/// Each key set is remembered, so that its problems name the variable.
pub(super) fn apply(check: &mut Check, table: &mut Table, name: &str, value: String) {
    let Some(path) = name.strip_prefix(ENV_PREFIX) else {
        return;
    };
    if !path.contains(ENV_SEPARATOR) {
        return;
    }
    let mut segments: Vec<String> = Vec::new();
    for raw in path.split(ENV_SEPARATOR) {
        let currency_position = segments
            .last()
            .is_some_and(|parent| CURRENCY_TABLES.contains(&parent.as_str()));
        segments.push(if currency_position {
            raw.to_ascii_uppercase()
        } else {
            raw.to_ascii_lowercase()
        });
    }
    let key = segments.join(".");
    check.from_env.insert(key.clone(), name.to_string());
    let (last, parents) = segments.split_last().expect("at least two segments");
    let mut node = table;
    for segment in parents {
        let entry = node
            .entry(segment.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        match entry {
            Value::Table(inner) => node = inner,
            _ => {
                check.problem(&key, format!("{segment} is not a section"));
                return;
            }
        }
    }
    node.insert(last.clone(), Value::String(value));
}
