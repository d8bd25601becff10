//! Fuzz target: the money parser. Any text in any currency is parsed without panicking; an accepted
//! amount prints with exactly the currency's decimals and parses back to the same minor units.
#![no_main]

use libfuzzer_sys::fuzz_target;
use settle_core::money::{Currency, Money};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for &currency in Currency::all() {
        match Money::parse_major(text, currency) {
            Ok(money) => {
                let printed = money.to_string();
                let decimals = printed.split_once('.').map_or(0, |(_, f)| f.len());
                assert_eq!(decimals, currency.exponent() as usize, "{printed}");
                let again = Money::parse_major(&printed, currency).expect("printed amounts parse");
                assert_eq!(again, money, "{text:?} -> {printed}");
            }
            Err(error) => {
                // A clear message that names the value, never the whole of a huge input.
                let message = error.to_string();
                assert!(!message.is_empty());
                assert!(message.len() < 400, "{} bytes", message.len());
            }
        }
    }
});
