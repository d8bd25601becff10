//! The commands the UI may invoke (granted in `capabilities/`): thin wrappers that check their
//! input and keep the API token in the OS keyring. No command ever hands the token back to the UI.

use std::net::IpAddr;
use std::sync::Mutex;

use serde::{Serialize, Serializer};
use url::{Host, Url};

use crate::credentials::{CredentialError, CredentialStore, TokenSecret, SERVICE};

/// What the window is connected to; the token itself stays in the keyring.
#[derive(Debug, Default)]
pub struct ConsoleState {
    server_url: Mutex<Option<String>>,
}

/// The answer to a successful `connect`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Connection {
    /// The normalised server URL, also the token's account in the keyring.
    pub server_url: String,
    /// Where the token is kept, for the UI to say so.
    pub keyring: &'static str,
}

/// A command's failure as the UI receives it: `{ "type": "…", "message": "…" }`, one stable
/// `type` per kind, as the daemon's problem+json does.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    InvalidServerUrl(String),
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    #[error("the keyring task failed: {0}")]
    Internal(String),
}

impl CommandError {
    fn kind(&self) -> &'static str {
        match self {
            CommandError::InvalidServerUrl(_) => "invalid_server_url",
            CommandError::Credentials(CredentialError::InvalidToken(_)) => "invalid_token",
            CommandError::Credentials(CredentialError::NoKeyring { .. }) => "no_keyring",
            CommandError::Credentials(CredentialError::Keyring { .. }) => "keyring_failure",
            CommandError::Internal(_) => "internal",
        }
    }
}

impl Serialize for CommandError {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut problem = serializer.serialize_struct("CommandError", 2)?;
        problem.serialize_field("type", self.kind())?;
        problem.serialize_field("message", &self.to_string())?;
        problem.end()
    }
}

/// Checks the server URL and keeps the token for it in the OS keyring; with no token typed, uses
/// the one already kept for that server.
///
/// A stub until `settle_core::client` exists: it will then also ask the daemon who the token
/// belongs to before keeping it.
#[tauri::command(rename_all = "snake_case")]
pub async fn connect(
    state: tauri::State<'_, ConsoleState>,
    server_url: String,
    token: String,
) -> Result<Connection, CommandError> {
    let server_url = normalize_server_url(&server_url)?;
    let typed_token = if token.trim().is_empty() {
        None
    } else {
        Some(TokenSecret::new(&token)?)
    };
    let keyring = {
        let server_url = server_url.clone();
        // Keyring calls block (D-Bus, possibly an unlock prompt): keep them off the UI thread.
        run_blocking(move || {
            let store = CredentialStore::open(SERVICE)?;
            match typed_token {
                Some(token) => store.store(&server_url, &token)?,
                None => {
                    store
                        .load(&server_url)?
                        .ok_or(CredentialError::InvalidToken(
                            "enter the API token: none is kept for this server yet",
                        ))?;
                }
            }
            Ok(store.backend().name())
        })
        .await?
    };
    *state.server_url.lock().expect("console state lock") = Some(server_url.clone());
    Ok(Connection {
        server_url,
        keyring,
    })
}

/// Forgets the connected server's token: removed from the keyring, the window back to connect.
#[tauri::command(rename_all = "snake_case")]
pub async fn sign_out(state: tauri::State<'_, ConsoleState>) -> Result<(), CommandError> {
    let server_url = state.server_url.lock().expect("console state lock").take();
    if let Some(server_url) = server_url {
        run_blocking(move || {
            CredentialStore::open(SERVICE)?.delete(&server_url)?;
            Ok(())
        })
        .await?;
    }
    Ok(())
}

async fn run_blocking<T: Send + 'static>(
    task: impl FnOnce() -> Result<T, CredentialError> + Send + 'static,
) -> Result<T, CommandError> {
    tauri::async_runtime::spawn_blocking(task)
        .await
        .map_err(|error| CommandError::Internal(error.to_string()))?
        .map_err(CommandError::from)
}

/// The server URL as the keyring account: `https://host[:port][/prefix]`, without a trailing
/// slash, so one server has one token however its URL was typed. Plain `http` only to this
/// machine: a token must not cross the network in clear text.
pub fn normalize_server_url(typed: &str) -> Result<String, CommandError> {
    let invalid = |why: &str| CommandError::InvalidServerUrl(why.to_string());
    let typed = typed.trim();
    if typed.is_empty() {
        return Err(invalid(
            "enter the server URL, for example https://settle.example.com:8443",
        ));
    }
    let url = Url::parse(typed).map_err(|error| {
        CommandError::InvalidServerUrl(format!(
            "{typed:?} is not a URL ({error}); write it as https://host:port"
        ))
    })?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(invalid("the server URL starts with https://"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(
            "the server URL must not carry a user name or password: the token goes in its own field",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("the server URL has no query (?…) or fragment (#…)"));
    }
    let host = url
        .host()
        .ok_or_else(|| invalid("the server URL names no host"))?;
    if url.scheme() == "http" && !is_loopback(&host) {
        return Err(invalid(
            "use https:// for another machine (plain http:// only for localhost): the token must not travel in clear text",
        ));
    }
    Ok(format!(
        "{}{}",
        url.origin().ascii_serialization(),
        url.path().trim_end_matches('/')
    ))
}

fn is_loopback(host: &Host<&str>) -> bool {
    match host {
        Host::Domain(name) => name.eq_ignore_ascii_case("localhost"),
        Host::Ipv4(address) => IpAddr::V4(*address).is_loopback(),
        Host::Ipv6(address) => IpAddr::V6(*address).is_loopback(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_are_normalised_to_one_account_per_server() {
        for (typed, account) in [
            (
                " https://Settle.Example.com:8443/ ",
                "https://settle.example.com:8443",
            ),
            (
                "https://settle.example.com:443",
                "https://settle.example.com",
            ),
            (
                "https://proxy.example.com/settle/",
                "https://proxy.example.com/settle",
            ),
            ("http://localhost:8080", "http://localhost:8080"),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
            ("http://[::1]:8080", "http://[::1]:8080"),
        ] {
            assert_eq!(normalize_server_url(typed).unwrap(), account, "{typed}");
        }
    }

    #[test]
    fn unsafe_or_malformed_server_urls_are_refused_with_a_reason() {
        for (typed, reason) in [
            ("", "enter the server URL"),
            ("settle.example.com", "not a URL"),
            ("ftp://settle.example.com", "starts with https://"),
            (
                "https://admin:pw@settle.example.com",
                "user name or password",
            ),
            ("https://settle.example.com/?token=x", "no query"),
            (
                "http://settle.example.com",
                "plain http:// only for localhost",
            ),
            ("http://10.0.0.5:8080", "plain http:// only for localhost"),
        ] {
            let message = normalize_server_url(typed).unwrap_err().to_string();
            assert!(message.contains(reason), "{typed:?}: {message}");
        }
    }

    #[test]
    fn errors_reach_the_ui_as_a_type_and_a_message() {
        let error = CommandError::from(TokenSecret::new("nope").unwrap_err());
        let json = serde_json::to_value(&error).unwrap();
        assert_eq!(json["type"], "invalid_token");
        assert!(json["message"].as_str().unwrap().contains("stl_"), "{json}");
    }
}
