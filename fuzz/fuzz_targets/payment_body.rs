//! Fuzz target: the payment API's request bodies. Any JSON, under a fresh Idempotency-Key, goes
//! through the same service the daemon's POST /api/v2/payments calls, on a real SQLite store: it
//! never panics and never answers 5xx; a refusal is a 4xx problem naming a field.
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use settle_core::calendar::BusinessCalendar;
use settle_core::idempotency::{Idempotency, IdempotencyKey, IdempotencySettings};
use settle_core::payments::{Operation, PaymentService};
use settle_store_sqlite::SqliteStore;
use settle_core::time::SystemClock;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    service: PaymentService,
    _folder: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let folder = tempfile::tempdir().expect("a temporary folder");
        let store = runtime.block_on(async {
            SqliteStore::open(folder.path().join("fuzz.db"))
                .await
                .expect("a store")
        });
        let store: settle_core::store::SharedStore = Arc::new(store);
        let idempotency = Idempotency::new(store.clone(), IdempotencySettings::default());
        let service = PaymentService::new(
            store,
            idempotency,
            BusinessCalendar::default(),
            Arc::new(SystemClock),
        );
        Fixture {
            runtime,
            service,
            _folder: folder,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    // Bodies that are not JSON are refused by the HTTP layer before the service (malformed-json).
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    static KEYS: AtomicU64 = AtomicU64::new(0);
    let key = format!("fuzz-{}", KEYS.fetch_add(1, Ordering::Relaxed));
    let key = IdempotencyKey::parse(Some(&key), false).expect("a valid key");
    let fixture = fixture();
    let answer = fixture
        .runtime
        .block_on(fixture.service.execute("fuzz", &key, Operation::Payment, &body))
        .expect("the store works");
    let status = answer.response.status;
    assert!(
        (200..500).contains(&status),
        "{status} for {body}: {}",
        answer.response.body
    );
});
