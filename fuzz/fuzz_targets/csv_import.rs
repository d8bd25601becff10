//! Fuzz target: the CSV importer on any bytes, against a real SQLite store. It never panics, every
//! refusal is a short message naming a line or the header, and a refused file writes nothing.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use settle_core::calendar::BusinessCalendar;
use settle_core::csv::import::{import_csv, ImportOptions, NoProgress};
use settle_store_sqlite::SqliteStore;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    folder: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| Fixture {
        runtime: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime"),
        folder: tempfile::tempdir().expect("a temporary folder"),
    })
}

fuzz_target!(|data: &[u8]| {
    let fixture = fixture();
    let file = fixture.folder.path().join("input.csv");
    std::fs::write(&file, data).expect("the input written");
    fixture.runtime.block_on(async {
        // A fresh store per input: what one file does is judged alone.
        let database = fixture.folder.path().join("fuzz.db");
        let _ = std::fs::remove_file(&database);
        let store = SqliteStore::open(&database).await.expect("a store");
        let now = "2026-11-20T12:00:00Z".parse().expect("an instant");
        let result = import_csv(
            &file,
            &store,
            &BusinessCalendar::default(),
            &ImportOptions::default(),
            &NoProgress,
            now,
        )
        .await;
        if let Err(error) = result {
            let message = error.to_string();
            assert!(!message.is_empty());
            assert!(message.len() < 4_000, "{} bytes", message.len());
            let count: i64 = rusqlite::Connection::open(&database)
                .and_then(|db| db.query_row("SELECT COUNT(*) FROM transactions", [], |row| row.get(0)))
                .expect("count the stored transactions");
            assert_eq!(count, 0, "a refused file wrote {count} rows: {message}");
        }
    });
});
