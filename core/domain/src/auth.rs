//! API tokens: issuing (a random secret shown once), hashing (SHA-256, what the store keeps) and
//! checking a presented `Authorization: Bearer` value. The secret itself is never stored or logged.

use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::model::{ApiToken, Role};
use crate::secret::Secret;

/// Every token starts with this, so a leaked one is recognisable (and greppable) as Settle's.
pub const TOKEN_PREFIX: &str = "stl_";
/// Random bytes per token: 256 bits.
const TOKEN_BYTES: usize = 32;

/// A token just issued: its stored form and the secret to show once.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub token: ApiToken,
    pub secret: Secret,
}

/// Lower-case hex SHA-256 of a presented token.
pub fn hash_token(presented: &str) -> String {
    hex::encode(Sha256::digest(presented.as_bytes()))
}

/// Makes a new token. The secret is `stl_` and 64 hex characters from a CSPRNG seeded by the OS.
pub fn issue(name: &str, role: Role, created_by: &str, now: DateTime<Utc>) -> IssuedToken {
    let mut bytes = [0_u8; TOKEN_BYTES];
    // ThreadRng is a CSPRNG seeded from the operating system.
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
    IssuedToken {
        token: ApiToken {
            id: Uuid::new_v4(),
            name: name.to_string(),
            role,
            token_hash: hash_token(&secret),
            created_at: now,
            created_by: created_by.to_string(),
            revoked_at: None,
        },
        secret: Secret::new(secret),
    }
}

/// Token names: 1 to 64 letters, digits, `.`, `_` or `-`.
pub fn validate_token_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "token name {name:?} must be 1 to 64 letters, digits, '.', '_' or '-'"
        ))
    }
}

/// The token of an `Authorization` header value, if it is a well-formed bearer token.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && token.starts_with(TOKEN_PREFIX) && token.len() < 256)
        .then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_are_random_and_stored_only_as_hashes() {
        let now = Utc::now();
        let a = issue("ops", Role::Operator, "cli:root", now);
        let b = issue("ops", Role::Operator, "cli:root", now);
        assert_ne!(a.secret.expose(), b.secret.expose());
        assert!(a.secret.expose().starts_with(TOKEN_PREFIX));
        assert_eq!(a.secret.expose().len(), TOKEN_PREFIX.len() + 64);
        assert_eq!(a.token.token_hash, hash_token(a.secret.expose()));
        assert!(
            !format!("{:?}", a).contains(a.secret.expose()),
            "the secret never prints"
        );
        assert_eq!(a.token.token_hash.len(), 64);
    }

    #[test]
    fn bearer_headers_are_parsed_strictly() {
        let token = format!("{TOKEN_PREFIX}{}", "a".repeat(64));
        assert_eq!(bearer(&format!("Bearer {token}")), Some(token.as_str()));
        assert_eq!(bearer(&format!("bearer  {token} ")), Some(token.as_str()));
        assert_eq!(bearer(&format!("Basic {token}")), None);
        assert_eq!(bearer("Bearer abc"), None);
        assert_eq!(bearer(""), None);
    }

    #[test]
    fn token_names_are_checked() {
        assert!(validate_token_name("finance-desk.1").is_ok());
        for bad in ["", "has space", "x/y", &"n".repeat(65)] {
            assert!(validate_token_name(bad).is_err(), "{bad:?}");
        }
    }
}
