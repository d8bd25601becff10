//! MongoDB errors classified for the retry policy: the server's own labels, lost connections and
//! server selection are retryable; the rest is not. Kept with the adapter that owns the driver.

use std::fmt;

use settle_core::retry::{Classification, Classify};

/// A driver error as the retry policy sees it.
#[derive(Debug)]
pub struct MongoError(pub mongodb::error::Error);

impl From<mongodb::error::Error> for MongoError {
    fn from(error: mongodb::error::Error) -> Self {
        MongoError(error)
    }
}

impl fmt::Display for MongoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `RetryableWriteError` and `TransientTransactionError` labels, lost connections and server
/// selection (a failover in progress) are retryable; the rest is not.
impl Classify for MongoError {
    fn classify(&self) -> Classification {
        use mongodb::error::{ErrorKind, RETRYABLE_WRITE_ERROR, TRANSIENT_TRANSACTION_ERROR};
        let error = &self.0;
        let transient = error.contains_label(RETRYABLE_WRITE_ERROR)
            || error.contains_label(TRANSIENT_TRANSACTION_ERROR)
            || matches!(
                error.kind.as_ref(),
                ErrorKind::Io(_)
                    | ErrorKind::ConnectionPoolCleared { .. }
                    | ErrorKind::ServerSelection { .. }
            );
        if transient {
            Classification::Retryable { retry_after: None }
        } else {
            Classification::Permanent
        }
    }
}
