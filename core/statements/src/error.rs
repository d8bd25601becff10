//! Why a statement file was refused: where (a line, or an element path) and which field, with a
//! message a person can act on. Nothing of a refused file is kept.

use std::fmt;

/// A refusal naming its place: `line 12, field amount: …` or `Stmt[1]/Ntry[3]/Amt: …`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatementError {
    /// `line N` (1-based; a CSV header is line 1) or an element path such as `Stmt[1]/Ntry[3]`.
    pub at: String,
    pub field: Option<String>,
    pub message: String,
}

impl StatementError {
    pub fn new(at: impl Into<String>, field: Option<&str>, message: impl Into<String>) -> Self {
        StatementError {
            at: at.into(),
            field: field.map(str::to_string),
            message: message.into(),
        }
    }

    /// A problem of the file as a whole.
    pub fn file(message: impl Into<String>) -> Self {
        StatementError::new("file", None, message)
    }
}

impl fmt::Display for StatementError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}, field {field}: {}", self.at, self.message),
            None => write!(f, "{}: {}", self.at, self.message),
        }
    }
}

impl std::error::Error for StatementError {}
