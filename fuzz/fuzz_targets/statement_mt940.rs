//! Fuzz target: the MT940 reader. Any bytes are read without panicking; whatever it accepts and
//! balances is written back and read again to the same sums.
#![no_main]

use libfuzzer_sys::fuzz_target;
use settle_statements::mt940;
use settle_statements::write::mt940 as write_mt940;

fuzz_target!(|data: &[u8]| {
    let Ok(statements) = mt940::parse(data) else {
        return;
    };
    if statements.iter().any(|s| s.check_balance().is_err()) {
        return;
    }
    let again = mt940::parse(write_mt940(&statements).as_bytes()).expect("what Settle writes, it reads");
    for (a, b) in again.iter().zip(&statements) {
        let sum = |s: &settle_domain::reconcile::Statement| s.entries.iter().map(|e| e.amount_minor).sum::<i64>();
        assert_eq!(sum(a), sum(b));
    }
});
