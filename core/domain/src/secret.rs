//! Secrets (webhook keys, provider tokens, passwords) as a type that never prints its value:
//! `Debug` and `Display` show `[redacted]`, so a secret cannot leak through logs or error messages.

use std::fmt;

/// A secret string. Read it with `expose` only where it is used (a header, an HMAC key).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Reads a secret from the environment variable `variable`, or else from the systemd credential
/// `credential` (`$CREDENTIALS_DIRECTORY/credential`, as `LoadCredential=` provides). Never from a
/// configuration file. Surrounding whitespace (a trailing newline in a file) is dropped.
pub fn from_environment(variable: &str, credential: &str) -> Option<Secret> {
    if let Ok(value) = std::env::var(variable) {
        let value = value.trim();
        if !value.is_empty() {
            return Some(Secret::new(value));
        }
    }
    let directory = std::env::var_os("CREDENTIALS_DIRECTORY")?;
    let text = std::fs::read_to_string(std::path::Path::new(&directory).join(credential)).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| Secret::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_its_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert!(!format!("{secret:?}").contains("hunter2"));
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn secrets_come_from_a_systemd_credential_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("webhook-secret"), "s3cret\n").unwrap();
        // Only this test touches these variable names.
        std::env::set_var("CREDENTIALS_DIRECTORY", dir.path());
        let found = from_environment("SETTLE_TEST_UNSET_VARIABLE", "webhook-secret");
        std::env::remove_var("CREDENTIALS_DIRECTORY");
        assert_eq!(found.unwrap().expose(), "s3cret");
        assert!(from_environment("SETTLE_TEST_UNSET_VARIABLE", "webhook-secret").is_none());
    }
}
