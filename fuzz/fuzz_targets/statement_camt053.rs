//! Fuzz target: the camt.053 reader. Any bytes are read without panicking; whatever it accepts
//! and the balance check passes is written back and read again to the same entries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use settle_statements::camt053;
use settle_statements::write::{camt053 as write_camt053, Camt053Version};

fuzz_target!(|data: &[u8]| {
    let Ok(statements) = camt053::parse(data) else {
        return;
    };
    if statements.iter().any(|s| s.check_balance().is_err()) {
        return;
    }
    let again = camt053::parse(write_camt053(&statements, Camt053Version::V08).as_bytes())
        .expect("what Settle writes, it reads");
    for (a, b) in again.iter().zip(&statements) {
        let amounts = |s: &settle_domain::reconcile::Statement| {
            s.entries.iter().map(|e| e.amount_minor).sum::<i64>()
        };
        assert_eq!(amounts(a), amounts(b));
    }
});
