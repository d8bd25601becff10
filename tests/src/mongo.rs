//! A fresh database on the suite's MongoDB server (`MONGODB_URI`, or the SecantusDB server
//! `scripts/test.sh` starts as `SETTLE_TEST_MONGODB_URI`), dropped when the test ends.

use settle_core::store::SharedStore;
use settle_store_mongo::MongoStore;

/// A fresh database on the suite's MongoDB server (`MONGODB_URI` or `SETTLE_TEST_MONGODB_URI`),
/// dropped when the test ends, pass or fail.
pub struct FreshDatabase {
    pub uri: String,
    pub name: String,
}

impl FreshDatabase {
    // Making one names a new database on a server: not what `Default` suggests.
    #[allow(clippy::new_without_default)]
    pub fn new() -> FreshDatabase {
        let uri = std::env::var("MONGODB_URI")
            .or_else(|_| std::env::var("SETTLE_TEST_MONGODB_URI"))
            .expect(
                "the MongoDB tests need a server: run ./scripts/test.sh (it starts \
                 SecantusDB), or set MONGODB_URI",
            );
        FreshDatabase {
            uri,
            name: format!("settle_test_{}", uuid::Uuid::new_v4().simple()),
        }
    }

    /// `--store mongodb --mongo-uri URI --mongo-db NAME`.
    pub fn options(&self) -> Vec<String> {
        vec![
            "--store".into(),
            "mongodb".into(),
            "--mongo-uri".into(),
            self.uri.clone(),
            "--mongo-db".into(),
            self.name.clone(),
        ]
    }
}

impl FreshDatabase {
    /// The database opened directly, to check what the binary wrote.
    pub async fn store(&self) -> SharedStore {
        std::sync::Arc::new(
            MongoStore::connect(&self.uri, &self.name)
                .await
                .expect("connect to the test database"),
        )
    }
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        // Tests run on a tokio runtime, which cannot block on another: drop from a plain thread.
        let (uri, name) = (self.uri.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                if let Ok(store) = MongoStore::connect(&uri, &name).await {
                    let _ = store.drop_database().await;
                }
            });
        });
        let _ = dropped.join();
    }
}
