//! Fuzz target: the OFX reader (1.x SGML and 2.x XML). Any bytes are read without panicking;
//! whatever it accepts is written back as XML and read again to the same sums.
#![no_main]

use libfuzzer_sys::fuzz_target;
use settle_statements::ofx;
use settle_statements::write::{ofx as write_ofx, OfxVersion};

fuzz_target!(|data: &[u8]| {
    let Ok(statements) = ofx::parse(data) else {
        return;
    };
    let again = ofx::parse(write_ofx(&statements, OfxVersion::Xml2).as_bytes())
        .expect("what Settle writes, it reads");
    for (a, b) in again.iter().zip(&statements) {
        let sum = |s: &settle_domain::reconcile::Statement| s.entries.iter().map(|e| e.amount_minor).sum::<i64>();
        assert_eq!(sum(a), sum(b));
    }
});
