//! A console command's failure as the UI receives it: `{ "type", "message", … }`, one stable `type`
//! per thing the UI does next (back to connect, show the problem, fix a field). Never the token.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use settle_chart::ChartError;
use settle_client::ClientError;

use crate::credentials::CredentialError;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{0}")]
    InvalidServerUrl(String),
    /// A value the UI sent that the command cannot use; `field` names it.
    #[error("{field}: {message}")]
    InvalidInput {
        field: &'static str,
        message: String,
    },
    /// Any call before `connect` (or after sign out or a 401).
    #[error("not connected to a Settle server: connect first")]
    NotConnected,
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    /// The daemon's answer or the way to it; `type` is the client error's kind.
    #[error(transparent)]
    Daemon(#[from] ClientError),
    #[error("the chart could not be drawn: {0}")]
    Chart(#[from] ChartError),
    /// The export file could not be written; nothing is left at `path`.
    #[error("could not write {path}: {message}")]
    Export { path: String, message: String },
    #[error("the console failed: {0}")]
    Internal(String),
}

impl CommandError {
    pub fn invalid(field: &'static str, message: impl Into<String>) -> CommandError {
        CommandError::InvalidInput {
            field,
            message: message.into(),
        }
    }

    /// The stable `type` the UI switches on.
    pub fn kind(&self) -> &'static str {
        match self {
            CommandError::InvalidServerUrl(_) => "invalid_server_url",
            CommandError::InvalidInput { .. } => "invalid_input",
            CommandError::NotConnected => "not_connected",
            CommandError::Credentials(CredentialError::InvalidToken(_)) => "invalid_token",
            CommandError::Credentials(CredentialError::NoKeyring { .. }) => "no_keyring",
            CommandError::Credentials(CredentialError::Keyring { .. }) => "keyring_failure",
            CommandError::Daemon(error) => error.kind(),
            CommandError::Chart(_) => "chart",
            CommandError::Export { .. } => "export",
            CommandError::Internal(_) => "internal",
        }
    }

    /// True when the daemon refused the token: the UI goes back to the connect screen.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, CommandError::Daemon(ClientError::Unauthorized { .. }))
    }
}

impl Serialize for CommandError {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("type", self.kind())?;
        map.serialize_entry("message", &self.to_string())?;
        match self {
            CommandError::InvalidInput { field, .. } => map.serialize_entry("field", field)?,
            CommandError::Daemon(error) => {
                map.serialize_entry("problem_type", &error.problem_type())?;
                if let ClientError::Problem {
                    retry_after_seconds,
                    instance,
                    ..
                } = error
                {
                    map.serialize_entry("retry_after_seconds", retry_after_seconds)?;
                    map.serialize_entry("instance", instance)?;
                }
            }
            _ => {}
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::TokenSecret;

    #[test]
    fn errors_reach_the_ui_as_a_type_and_a_message() {
        let error = CommandError::from(TokenSecret::new("nope").unwrap_err());
        let json = serde_json::to_value(&error).unwrap();
        assert_eq!(json["type"], "invalid_token");
        assert!(json["message"].as_str().unwrap().contains("stl_"), "{json}");

        let error = CommandError::invalid("from", "2024-02-30 is not a date");
        let json = serde_json::to_value(&error).unwrap();
        assert_eq!(json["type"], "invalid_input");
        assert_eq!(json["field"], "from");
        assert_eq!(json["message"], "from: 2024-02-30 is not a date");
    }

    #[test]
    fn daemon_problems_keep_their_stable_type_and_request_id() {
        let error = CommandError::from(ClientError::Problem {
            status: 409,
            problem_type: "urn:settle:problem:already-running".into(),
            title: "Already running".into(),
            detail: "2024-03-10 is running".into(),
            retry_after_seconds: Some(5),
            instance: Some("urn:settle:request:abc".into()),
        });
        let json = serde_json::to_value(&error).unwrap();
        assert_eq!(json["type"], "problem");
        assert_eq!(json["problem_type"], "urn:settle:problem:already-running");
        assert_eq!(json["retry_after_seconds"], 5);
        assert_eq!(json["instance"], "urn:settle:request:abc");
        assert!(!error.is_unauthorized());
        let unauthorized = CommandError::from(ClientError::Unauthorized {
            detail: "unknown token".into(),
        });
        assert!(unauthorized.is_unauthorized());
        assert_eq!(
            serde_json::to_value(&unauthorized).unwrap()["type"],
            "unauthorized"
        );
    }
}
