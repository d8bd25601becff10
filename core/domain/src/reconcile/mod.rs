//! Reconciliation in domain terms: statements as exact entries, the ordered matching rules, and the
//! matcher that leaves people only the exceptions. Pure: the parsers and stores are elsewhere.

pub mod decision;
pub mod items;
pub mod matcher;
pub mod rules;
pub mod statement;

pub use decision::{
    ours_key, theirs_key, Decision, DecisionAction, DecisionState, WriteOffCategory, MANUAL_RULE,
};
pub use items::{item_states, Item, ItemSide, ItemStatus};
pub use matcher::{Duplicate, MatchDecision, MatchOutcome, OurRecord, TheirEntry};
pub use rules::{MatchRule, RuleKind, Tolerance};
pub use statement::{
    BalanceError, StatedBalance, Statement, StatementEntry, StatementFormat, StatementIdentity,
    StatementKind,
};
