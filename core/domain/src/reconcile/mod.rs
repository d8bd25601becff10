//! Reconciliation in domain terms: statements as exact entries, the ordered matching rules, and the
//! items and decisions that leave people only the exceptions. Pure: the parsers and stores are elsewhere.

pub mod statement;

pub use statement::{
    BalanceError, StatedBalance, Statement, StatementEntry, StatementFormat, StatementIdentity,
    StatementKind,
};
