//! Settle's domain: money, the business calendar, fees, the records, the settlement fold, the
//! statistics fold and the idempotency-key rules. Pure: no I/O, no async runtime, no HTTP or database.

pub mod auth;
pub mod calendar;
pub mod compute;
pub mod excerpt;
/// Fee schedules are part of the model (each revision stores the one it used).
pub use model::fees;
pub mod idempotency_key;
pub mod limits;
pub mod model;
pub mod money;
pub mod problem_types;
pub mod reconcile;
pub mod returns;
pub mod secret;
pub mod stats;
pub mod time;
