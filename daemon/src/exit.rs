//! Exit statuses, one meaning each, so scripts can tell a refusal from a fault.
//! 0 success · 1 the operation failed · 2 bad input or configuration · 3 refused by the current state.

use settle_core::calendar::CalendarError;
use settle_core::config::ConfigError;
use settle_core::csv::ImportError;
use settle_core::reconcile::ReconcileError;
use settle_core::settlement::RunError;
use settle_core::store::StoreError;

pub const FAILED: u8 = 1;
pub const BAD_INPUT: u8 = 2;
pub const REFUSED: u8 = 3;

/// An error the command already explained, carrying its exit status.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl Exit {
    pub fn refused(message: impl Into<String>) -> anyhow::Error {
        Exit {
            code: REFUSED,
            message: message.into(),
        }
        .into()
    }

    pub fn bad_input(message: impl Into<String>) -> anyhow::Error {
        Exit {
            code: BAD_INPUT,
            message: message.into(),
        }
        .into()
    }
}

/// Chooses the exit status of a failed command from the root cause.
pub fn code_for(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(exit) = cause.downcast_ref::<Exit>() {
            return exit.code;
        }
        if cause.downcast_ref::<ConfigError>().is_some() {
            return BAD_INPUT;
        }
        if let Some(import) = cause.downcast_ref::<ImportError>() {
            return match import {
                ImportError::Header { .. } | ImportError::InvalidRows { .. } => BAD_INPUT,
                _ => FAILED,
            };
        }
        if let Some(run) = cause.downcast_ref::<RunError>() {
            return match run {
                RunError::NotSettleable(_) | RunError::Refused(_) => REFUSED,
                RunError::ReasonRequired => BAD_INPUT,
                RunError::Failed { .. } | RunError::Store(_) | RunError::Interrupted { .. } => {
                    FAILED
                }
            };
        }
        if let Some(reconcile) = cause.downcast_ref::<ReconcileError>() {
            return match reconcile {
                ReconcileError::Store(_) => FAILED,
                ReconcileError::ItemTaken { .. }
                | ReconcileError::NotOpen(_)
                | ReconcileError::OwnWriteOff { .. } => REFUSED,
                _ => BAD_INPUT,
            };
        }
        if cause.downcast_ref::<CalendarError>().is_some() {
            return REFUSED;
        }
        if let Some(store) = cause.downcast_ref::<StoreError>() {
            return match store {
                StoreError::Backend(_) | StoreError::Corrupt(_) | StoreError::LeaseLost(_) => {
                    FAILED
                }
                _ => REFUSED,
            };
        }
    }
    FAILED
}
