//! Fuzz target: Settle's payout and provider report readers. Any bytes are read without panicking,
//! and every statement they accept balances (reports state no balances: the entries' sum fits).
#![no_main]

use libfuzzer_sys::fuzz_target;
use settle_statements::{parse_payout_report, parse_provider_report, ParseOptions};

fuzz_target!(|data: &[u8]| {
    let options = ParseOptions {
        business_timezone: chrono_tz::Asia::Aden,
        account: None,
    };
    for statements in [parse_payout_report(data, &options), parse_provider_report(data, &options)]
        .into_iter()
        .flatten()
    {
        assert!(statements.iter().all(|s| s.check_balance().is_ok()));
    }
});
