//! Fuzz target: the bank CSV reader with a German-style profile (semicolons, comma decimals,
//! debit and credit columns). Any bytes are read without panicking, and every entry it accepts
//! has the profile's currency.
#![no_main]

use libfuzzer_sys::fuzz_target;
use settle_statements::csv_profile::{parse, CsvProfile};

fuzz_target!(|data: &[u8]| {
    let profile = CsvProfile {
        account: "DE89370400440532013000".into(),
        currency: Some("EUR".into()),
        currency_column: None,
        delimiter: Some(';'),
        date_column: "Buchungstag".into(),
        date_format: Some("%d.%m.%Y".into()),
        value_date_column: None,
        amount_column: None,
        debit_column: Some("Soll".into()),
        credit_column: Some("Haben".into()),
        decimal_separator: Some(','),
        thousands_separator: Some('.'),
        reference_columns: vec!["Verwendungszweck".into()],
        description_column: None,
        counterparty_column: None,
        external_id_column: None,
    };
    if let Ok(statements) = parse(data, &profile) {
        assert!(statements
            .iter()
            .flat_map(|s| &s.entries)
            .all(|e| e.currency.code() == "EUR"));
    }
});
