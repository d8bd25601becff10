//! Idempotency keys (the `Idempotency-Key` header, per the IETF draft) and the request
//! fingerprint: pure rules, shared by the daemon that checks a key and the client that sends one.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Longest key accepted, in characters.
pub const MAX_KEY_LENGTH: usize = 255;

/// Why an `Idempotency-Key` header was refused (a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the Idempotency-Key header is required")]
    Missing,
    #[error("the Idempotency-Key is empty")]
    Empty,
    #[error(
        "the Idempotency-Key is {length} characters long; at most {MAX_KEY_LENGTH} are allowed"
    )]
    TooLong { length: usize },
    #[error(
        "the Idempotency-Key has a character that is not visible ASCII at position {position}"
    )]
    InvalidCharacter { position: usize },
    #[error("the Idempotency-Key is not a valid quoted string (RFC 8941): {0}")]
    BadQuotedString(&'static str),
    #[error("the Idempotency-Key must be a UUID version 4 (require_uuid_v4 is on)")]
    NotUuidV4,
}

/// A valid idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses a header value: a bare token (`abc-123`) or an RFC 8941 quoted string (`"abc-123"`);
    /// both mean the same key. Keys are 1 to 255 visible ASCII characters.
    pub fn parse(header: Option<&str>, require_uuid_v4: bool) -> Result<IdempotencyKey, KeyError> {
        let raw = header
            .ok_or(KeyError::Missing)?
            .trim_matches(|c| c == ' ' || c == '\t');
        let key = if raw.starts_with('"') {
            unquote(raw)?
        } else {
            raw.to_string()
        };
        if key.is_empty() {
            return Err(KeyError::Empty);
        }
        let length = key.chars().count();
        if length > MAX_KEY_LENGTH {
            return Err(KeyError::TooLong { length });
        }
        if let Some(position) = key.chars().position(|c| !c.is_ascii_graphic()) {
            return Err(KeyError::InvalidCharacter {
                position: position + 1,
            });
        }
        if require_uuid_v4 {
            let uuid = uuid::Uuid::parse_str(&key).map_err(|_| KeyError::NotUuidV4)?;
            if uuid.get_version_num() != 4 {
                return Err(KeyError::NotUuidV4);
            }
        }
        Ok(IdempotencyKey(key))
    }

    /// A new random key (UUID v4). A console dialog makes one when it opens and sends it with
    /// every submission, so that a double click or a retry after a lost answer runs once.
    pub fn fresh() -> IdempotencyKey {
        IdempotencyKey::parse(Some(&uuid::Uuid::new_v4().to_string()), true)
            .expect("a UUID v4 is a valid idempotency key")
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// RFC 8941 sf-string: `"` … `"`, with `\"` and `\\` the only escapes.
fn unquote(raw: &str) -> Result<String, KeyError> {
    let inner = raw
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .filter(|_| raw.len() >= 2)
        .ok_or(KeyError::BadQuotedString("it lacks its closing quote"))?;
    let mut key = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped @ ('"' | '\\')) => key.push(escaped),
                _ => {
                    return Err(KeyError::BadQuotedString(
                        "only \\\" and \\\\ may be escaped",
                    ))
                }
            },
            '"' => return Err(KeyError::BadQuotedString("an inner quote must be escaped")),
            other => key.push(other),
        }
    }
    Ok(key)
}

/// SHA-256 of the canonical request: method, concrete path and canonical JSON body (keys sorted,
/// no whitespace), so that key order and spacing never matter but another path or body does.
pub fn fingerprint(method: &str, path: &str, body: &Value) -> String {
    let mut canonical = String::new();
    canonical.push_str(&method.to_ascii_uppercase());
    canonical.push('\n');
    canonical.push_str(path);
    canonical.push('\n');
    write_canonical_json(body, &mut canonical);
    hex::encode(Sha256::digest(canonical.as_bytes()))
}

fn write_canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (index, (key, value)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical_json(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_canonical_json(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bare_and_quoted_keys_mean_the_same() {
        let bare = IdempotencyKey::parse(Some("abc-123"), false).unwrap();
        let quoted = IdempotencyKey::parse(Some("\"abc-123\""), false).unwrap();
        assert_eq!(bare, quoted);
        let escaped = IdempotencyKey::parse(Some(r#""a\"b\\c""#), false).unwrap();
        assert_eq!(escaped.as_str(), r#"a"b\c"#);
    }

    #[test]
    fn bad_keys_are_refused_with_a_reason() {
        assert_eq!(IdempotencyKey::parse(None, false), Err(KeyError::Missing));
        assert_eq!(IdempotencyKey::parse(Some(""), false), Err(KeyError::Empty));
        assert_eq!(
            IdempotencyKey::parse(Some("\"\""), false),
            Err(KeyError::Empty)
        );
        assert_eq!(
            IdempotencyKey::parse(Some(&"k".repeat(256)), false),
            Err(KeyError::TooLong { length: 256 })
        );
        assert!(IdempotencyKey::parse(Some(&"k".repeat(255)), false).is_ok());
        assert_eq!(
            IdempotencyKey::parse(Some("ab\u{7}c"), false),
            Err(KeyError::InvalidCharacter { position: 3 })
        );
        assert_eq!(
            IdempotencyKey::parse(Some("has space"), false),
            Err(KeyError::InvalidCharacter { position: 4 })
        );
        assert!(matches!(
            IdempotencyKey::parse(Some("\"open"), false),
            Err(KeyError::BadQuotedString(_))
        ));
        assert!(matches!(
            IdempotencyKey::parse(Some(r#""a\nb""#), false),
            Err(KeyError::BadQuotedString(_))
        ));
        assert!(matches!(
            IdempotencyKey::parse(Some("café"), false),
            Err(KeyError::InvalidCharacter { .. })
        ));
    }

    #[test]
    fn the_strict_switch_requires_a_uuid_v4() {
        let v4 = uuid::Uuid::new_v4().to_string();
        assert!(IdempotencyKey::parse(Some(&v4), true).is_ok());
        assert_eq!(
            IdempotencyKey::parse(Some("order-1"), true),
            Err(KeyError::NotUuidV4)
        );
        let v1_shaped = "6fa459ea-ee8a-1ca4-894e-db77e160355e";
        assert_eq!(
            IdempotencyKey::parse(Some(v1_shaped), true),
            Err(KeyError::NotUuidV4)
        );
    }

    #[test]
    fn fingerprints_ignore_key_order_and_spacing_but_not_content_or_path() {
        let a: Value = serde_json::from_str(
            r#"{"amount":"12.50","merchant_id":"m-1","nested":{"b":1,"a":[1,2]}}"#,
        )
        .unwrap();
        let b: Value =
            serde_json::from_str("{ \"nested\": {\"a\": [1, 2], \"b\": 1},\n \"merchant_id\": \"m-1\", \"amount\": \"12.50\" }")
                .unwrap();
        assert_eq!(
            fingerprint("POST", "/api/v2/payments", &a),
            fingerprint("post", "/api/v2/payments", &b)
        );
        let other_amount =
            json!({"amount": "12.51", "merchant_id": "m-1", "nested": {"b": 1, "a": [1, 2]}});
        assert_ne!(
            fingerprint("POST", "/p", &a),
            fingerprint("POST", "/p", &other_amount)
        );
        assert_ne!(
            fingerprint("POST", "/api/v2/payments/A/refunds", &a),
            fingerprint("POST", "/api/v2/payments/B/refunds", &a)
        );
        let reordered_array =
            json!({"amount": "12.50", "merchant_id": "m-1", "nested": {"b": 1, "a": [2, 1]}});
        assert_ne!(
            fingerprint("POST", "/p", &a),
            fingerprint("POST", "/p", &reordered_array)
        );
    }
}
