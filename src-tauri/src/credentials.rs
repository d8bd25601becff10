//! The console's API token in the operating system's keyring (service `settle-console`, account =
//! the server URL): Secret Service on Linux, keyutils as its fallback, Credential Manager, Keychain.

use std::fmt;

use keyring::Entry;

/// The keyring service every console token is filed under; the account is the server URL.
pub const SERVICE: &str = "settle-console";

use settle_domain::auth::TOKEN_PREFIX;
/// The daemon rejects bearer tokens of 256 bytes or more (`settle_domain::auth::bearer`).
const TOKEN_MAX_BYTES: usize = 255;

/// An API token. It prints as `[redacted]` and leaves only through [`TokenSecret::expose`], so it
/// cannot reach a log, an error message or the UI by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSecret(String);

impl TokenSecret {
    /// Accepts a token as pasted (surrounding whitespace dropped) if it has the shape of a Settle
    /// token; the daemon decides whether it is valid.
    pub fn new(pasted: &str) -> Result<TokenSecret, CredentialError> {
        let token = pasted.trim();
        if token.is_empty() {
            return Err(CredentialError::InvalidToken("enter the API token"));
        }
        if !token.starts_with(TOKEN_PREFIX) {
            return Err(CredentialError::InvalidToken(
                "Settle tokens start with `stl_` (create one with `settle token create`)",
            ));
        }
        if token.len() > TOKEN_MAX_BYTES || !token.bytes().all(|byte| byte.is_ascii_graphic()) {
            return Err(CredentialError::InvalidToken(
                "a Settle token is `stl_` and 64 hexadecimal digits, without spaces",
            ));
        }
        Ok(TokenSecret(token.to_string()))
    }

    /// The token itself, for the `Authorization` header and the keyring; nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret([redacted])")
    }
}

/// Why a token could not be kept, found or removed. No variant carries the token.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("the API token is not valid: {0}")]
    InvalidToken(&'static str),
    #[error(
        "no OS keyring is available to keep the API token, and the console never writes it to a \
         file ({reasons}). Start a Secret Service provider (GNOME Keyring, KWallet, KeePassXC) in \
         your desktop session and unlock it, then connect again."
    )]
    NoKeyring { reasons: String },
    #[error("the OS keyring ({backend}) could not {action} the API token: {message}")]
    Keyring {
        backend: &'static str,
        action: &'static str,
        message: String,
    },
}

/// The platform store a [`CredentialStore`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The freedesktop Secret Service over D-Bus (GNOME Keyring, KWallet, KeePassXC): persistent.
    #[cfg(target_os = "linux")]
    SecretService,
    /// The kernel's keyutils, in the session keyring: lost at reboot, so only the fallback.
    #[cfg(target_os = "linux")]
    Keyutils,
    /// The platform's own store: Credential Manager on Windows, Keychain on macOS.
    #[cfg(not(target_os = "linux"))]
    Native,
}

impl Backend {
    /// The stores to try, best first.
    #[cfg(target_os = "linux")]
    const PREFERENCE: &'static [Backend] = &[Backend::SecretService, Backend::Keyutils];
    #[cfg(not(target_os = "linux"))]
    const PREFERENCE: &'static [Backend] = &[Backend::Native];

    pub fn name(self) -> &'static str {
        match self {
            #[cfg(target_os = "linux")]
            Backend::SecretService => "Secret Service",
            #[cfg(target_os = "linux")]
            Backend::Keyutils => "keyutils session keyring",
            #[cfg(not(target_os = "linux"))]
            Backend::Native => "platform keyring",
        }
    }

    /// Whether this store can be used now; the error says why not.
    fn probe(self, service: &str) -> Result<(), String> {
        match self {
            #[cfg(target_os = "linux")]
            Backend::SecretService => linux::probe_secret_service(service),
            #[cfg(target_os = "linux")]
            Backend::Keyutils => linux::probe_keyutils(),
            #[cfg(not(target_os = "linux"))]
            Backend::Native => {
                let _ = service;
                Ok(())
            }
        }
    }

    fn entry(self, service: &str, account: &str) -> keyring::Result<Entry> {
        match self {
            #[cfg(target_os = "linux")]
            Backend::SecretService => Ok(Entry::new_with_credential(Box::new(
                keyring::secret_service::SsCredential::new_with_target(None, service, account)?,
            ))),
            #[cfg(target_os = "linux")]
            Backend::Keyutils => Ok(Entry::new_with_credential(Box::new(
                keyring::keyutils::KeyutilsCredential::new_with_target(None, service, account)?,
            ))),
            #[cfg(not(target_os = "linux"))]
            Backend::Native => Entry::new(service, account),
        }
    }
}

/// Tokens of one keyring service, one per server URL, in the first usable store.
#[derive(Debug, Clone)]
pub struct CredentialStore {
    service: String,
    backend: Backend,
}

impl CredentialStore {
    /// The best store available now, or [`CredentialError::NoKeyring`] saying why none is; there is
    /// deliberately no file fallback.
    pub fn open(service: &str) -> Result<CredentialStore, CredentialError> {
        let mut reasons = Vec::new();
        for &backend in Backend::PREFERENCE {
            match CredentialStore::open_backend(service, backend) {
                Ok(store) => return Ok(store),
                Err(reason) => reasons.push(format!("{}: {reason}", backend.name())),
            }
        }
        Err(CredentialError::NoKeyring {
            reasons: reasons.join("; "),
        })
    }

    /// This store if it can be used now; the error says why not.
    fn open_backend(service: &str, backend: Backend) -> Result<CredentialStore, String> {
        backend.probe(service)?;
        Ok(CredentialStore {
            service: service.to_string(),
            backend,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Keeps `token` for `server_url`, replacing the one kept before.
    pub fn store(&self, server_url: &str, token: &TokenSecret) -> Result<(), CredentialError> {
        self.entry(server_url, "store")?
            .set_password(token.expose())
            .map_err(|error| self.failure("store", error))
    }

    /// The token kept for `server_url`, if any.
    pub fn load(&self, server_url: &str) -> Result<Option<TokenSecret>, CredentialError> {
        match self.entry(server_url, "load")?.get_password() {
            Ok(token) => Ok(Some(TokenSecret(token))),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(error) => Err(self.failure("load", error)),
        }
    }

    /// Removes the token kept for `server_url`; false if there was none.
    pub fn delete(&self, server_url: &str) -> Result<bool, CredentialError> {
        match self.entry(server_url, "delete")?.delete_credential() {
            Ok(()) => Ok(true),
            Err(keyring::Error::NoEntry) => Ok(false),
            Err(error) => Err(self.failure("delete", error)),
        }
    }

    fn entry(&self, server_url: &str, action: &'static str) -> Result<Entry, CredentialError> {
        self.backend
            .entry(&self.service, server_url)
            .map_err(|error| self.failure(action, error))
    }

    /// Describes a keyring error without its payload: `BadEncoding` carries the stored bytes.
    fn failure(&self, action: &'static str, error: keyring::Error) -> CredentialError {
        let message = match error {
            keyring::Error::BadEncoding(_) => "the stored token is not UTF-8 text".to_string(),
            keyring::Error::NoStorageAccess(_) => {
                format!("{error} (the keyring is locked or has no default collection: unlock it)")
            }
            other => other.to_string(),
        };
        CredentialError::Keyring {
            backend: self.backend.name(),
            action,
            message,
        }
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use keyring::secret_service::SsCredential;
    use linux_keyutils::{KeyRing, KeyRingIdentifier};

    /// An account no token is ever filed under: searching for it shows whether the Secret
    /// Service answers on the session bus.
    const PROBE_ACCOUNT: &str = "settle-console keyring probe";

    pub(super) fn probe_secret_service(service: &str) -> Result<(), String> {
        let credential = SsCredential::new_with_target(None, service, PROBE_ACCOUNT)
            .map_err(|error| error.to_string())?;
        match keyring::credential::CredentialApi::get_password(&credential) {
            Ok(_) | Err(keyring::Error::NoEntry) | Err(keyring::Error::Ambiguous(_)) => Ok(()),
            Err(error) => Err(format!("not reachable on the D-Bus session bus ({error})")),
        }
    }

    /// Without a session keyring of its own, a process's `@s` is the user-session keyring, where
    /// keyring-rs's writes fail with a misleading `NoEntry` and leave a stray key: refuse that.
    pub(super) fn probe_keyutils() -> Result<(), String> {
        let session = KeyRing::from_special_id(KeyRingIdentifier::Session, false)
            .map_err(|error| format!("no session keyring ({error:?})"))?;
        let user_session = KeyRing::from_special_id(KeyRingIdentifier::UserSession, false)
            .map_err(|error| format!("no user-session keyring ({error:?})"))?;
        if session == user_session {
            return Err(
                "this process has no session keyring of its own (no login session; \
                 `keyctl session -` starts one)"
                    .to_string(),
            );
        }
        Ok(())
    }
}

/// Real keyrings for the tests below (shared with the console's integration tests).
#[cfg(test)]
#[path = "../tests/console/keyring_session.rs"]
mod keyring_session;

#[cfg(test)]
mod tests {
    //! The store tests run against real keyrings: each re-runs itself (the test binary, filtered
    //! to that one test) inside `keyctl session -` or a `dbus-run-session` with an unlocked
    //! gnome-keyring-daemon, so a plain `cargo test` exercises the real stores. They fail, never
    //! skip, when those programs are missing: ./scripts/test.sh installs them (Debian packages
    //! keyutils, dbus, gnome-keyring, libsecret-tools).

    use std::path::Path;
    use std::process::Command;

    use super::keyring_session::{self, Session};
    use super::*;

    const SERVER_URL: &str = "https://settle.example.com:8443";
    const OTHER_SERVER_URL: &str = "http://127.0.0.1:8080";

    /// Runs `body` inside `session` (see `keyring_session::inside`).
    fn inside(session: Session, test: &str, body: impl FnOnce()) {
        keyring_session::inside(session, &format!("credentials::tests::{test}"), body);
    }

    /// A keyring service of this run alone: keyutils keys outlive the process.
    fn unique_service() -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("{SERVICE}-test-{}-{nanos}", std::process::id())
    }

    fn token(suffix: &str) -> TokenSecret {
        TokenSecret::new(&format!("{TOKEN_PREFIX}{suffix}")).unwrap()
    }

    /// Store, overwrite, one token per server, delete: what the console does with a store.
    fn keeps_loads_and_deletes(store: &CredentialStore, check_outside: impl Fn(&str) -> String) {
        assert!(store.load(SERVER_URL).unwrap().is_none());
        store.store(SERVER_URL, &token("first")).unwrap();
        assert_eq!(store.load(SERVER_URL).unwrap(), Some(token("first")));
        assert_eq!(
            check_outside(SERVER_URL),
            "stl_first",
            "seen by the store's own tool"
        );

        store.store(SERVER_URL, &token("second")).unwrap();
        assert_eq!(store.load(SERVER_URL).unwrap(), Some(token("second")));
        assert!(store.load(OTHER_SERVER_URL).unwrap().is_none());
        store.store(OTHER_SERVER_URL, &token("other")).unwrap();

        assert!(store.delete(SERVER_URL).unwrap());
        assert!(store.load(SERVER_URL).unwrap().is_none());
        assert!(!store.delete(SERVER_URL).unwrap());
        assert_eq!(store.load(OTHER_SERVER_URL).unwrap(), Some(token("other")));
        assert!(store.delete(OTHER_SERVER_URL).unwrap());
    }

    fn run(program: &str, args: &[&str]) -> String {
        let output = Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|error| {
                panic!("cannot run {program} ({error}): run ./scripts/test.sh")
            });
        assert!(output.status.success(), "{program} {args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    }

    #[test]
    fn keyutils_keeps_loads_and_deletes_tokens() {
        inside(
            Session::Keyutils,
            "keyutils_keeps_loads_and_deletes_tokens",
            || {
                let service = unique_service();
                let store = CredentialStore::open(&service).unwrap();
                assert_eq!(store.backend(), Backend::Keyutils, "no Secret Service here");
                keeps_loads_and_deletes(&store, |account| {
                    let description = format!("keyring-rs:{account}@{service}");
                    let key = run("keyctl", &["search", "@s", "user", &description]);
                    run("keyctl", &["pipe", key.trim()])
                });
            },
        );
    }

    #[test]
    fn secret_service_keeps_loads_and_deletes_tokens_and_no_file_holds_them() {
        let test = "secret_service_keeps_loads_and_deletes_tokens_and_no_file_holds_them";
        inside(Session::GnomeKeyring, test, || {
            let service = unique_service();
            let store = CredentialStore::open(&service).unwrap();
            assert_eq!(store.backend(), Backend::SecretService);
            keeps_loads_and_deletes(&store, |account| {
                run(
                    "secret-tool",
                    &["lookup", "service", &service, "username", account],
                )
            });

            store.store(SERVER_URL, &token("kept-encrypted")).unwrap();
            let home = std::env::var_os(keyring_session::HOME_VARIABLE).unwrap();
            assert_no_file_contains(Path::new(&home), b"stl_kept-encrypted");
            assert!(store.delete(SERVER_URL).unwrap());
        });
    }

    fn assert_no_file_contains(directory: &Path, needle: &[u8]) {
        for entry in std::fs::read_dir(directory).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                assert_no_file_contains(&path, needle);
            } else if let Ok(bytes) = std::fs::read(&path) {
                assert!(
                    !bytes.windows(needle.len()).any(|window| window == needle),
                    "{} holds the token in plain text",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn without_a_session_bus_secret_service_is_unavailable_and_says_why() {
        let test = "without_a_session_bus_secret_service_is_unavailable_and_says_why";
        inside(Session::NoDbus, test, || {
            let reason = CredentialStore::open_backend(&unique_service(), Backend::SecretService)
                .unwrap_err();
            assert!(reason.contains("D-Bus session bus"), "{reason}");
            // Whatever else is available, the error of a store that cannot be opened is clear.
            if let Err(error) = CredentialStore::open(&unique_service()) {
                let message = error.to_string();
                assert!(message.contains("no OS keyring is available"), "{message}");
                assert!(message.contains("never writes it to a file"), "{message}");
                assert!(
                    message.contains("Secret Service: not reachable"),
                    "{message}"
                );
            }
        });
    }

    #[test]
    fn a_token_never_prints() {
        let secret = token(&"ab12".repeat(16));
        assert_eq!(format!("{secret:?}"), "TokenSecret([redacted])");
        let nested = format!("{:?}", Some((SERVER_URL, secret.clone())));
        assert!(!nested.contains(secret.expose()), "{nested}");
    }

    #[test]
    fn tokens_are_checked_for_shape_before_they_are_kept() {
        let hex = "0123456789abcdef".repeat(4);
        let pasted = format!("  stl_{hex}\n");
        assert_eq!(
            TokenSecret::new(&pasted).unwrap().expose(),
            format!("stl_{hex}")
        );
        for bad in [
            "",
            "   ",
            "abc",
            "stl_with space",
            &format!("stl_{}", "a".repeat(252)),
        ] {
            let error = TokenSecret::new(bad).unwrap_err();
            assert!(matches!(error, CredentialError::InvalidToken(_)), "{bad:?}");
        }
    }

    #[test]
    fn a_keyring_error_never_carries_the_stored_bytes() {
        let store = CredentialStore {
            service: SERVICE.to_string(),
            backend: Backend::PREFERENCE[0],
        };
        let error = store.failure("load", keyring::Error::BadEncoding(b"stl_secret".to_vec()));
        assert!(!format!("{error:?} {error}").contains("stl_secret"));
    }
}
