//! The shared store: MongoDB through the official driver, with exactly the semantics of the SQLite
//! adapter. No multi-document transaction is used, so it works on a standalone server too.
//!
//! Where SQLite relies on one database transaction, this adapter relies on single-document
//! compare-and-set (`find_one_and_update` with status, lease or version filters), unique indexes,
//! and writes ordered so that a crash at any point can be resumed. The per-collection rules are
//! documented in each submodule.

mod access;
mod audit;
mod classify;
mod documents;
mod fee_ledgers;
mod idempotency;
mod migration;
mod payouts;
mod reconciliation;
mod settlements;
mod transactions;

use std::collections::BTreeSet;
use std::time::Duration as StdDuration;

use chrono::NaiveDate;
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};

use settle_core::retry::{retry, Idempotence, RetryPolicy};
use settle_core::store::{Store, StoreError};

pub use classify::MongoError;

/// Collection names: one per concept, as in the design.
pub mod collections {
    pub const TRANSACTIONS: &str = "transactions";
    pub const SETTLEMENTS: &str = "settlements";
    pub const SETTLEMENT_LINES: &str = "settlement_lines";
    pub const IDEMPOTENCY_RECORDS: &str = "idempotency_records";
    pub const PAYOUTS: &str = "payouts";
    pub const CARRY_FORWARDS: &str = "carry_forwards";
    pub const MERCHANT_HOLDS: &str = "merchant_holds";
    pub const NOTIFICATIONS: &str = "notifications";
    pub const AUDIT_EVENTS: &str = "audit_events";
    pub const API_TOKENS: &str = "api_tokens";
    pub const RERUN_REQUESTS: &str = "rerun_requests";
    pub const FEE_LEDGERS: &str = "fee_ledgers";
    /// One planning decision per (settlement date, revision, merchant, currency) line.
    pub const LINE_PLANS: &str = "line_plans";
    /// Reconciliation: committed statement files, their entries, decisions and item claims.
    pub const RECON_IMPORTS: &str = "recon_imports";
    pub const RECON_ENTRIES: &str = "recon_entries";
    pub const RECON_DECISIONS: &str = "recon_decisions";
    pub const RECON_CLAIMS: &str = "recon_claims";
}

/// How long the driver looks for a server before an operation fails.
const SERVER_SELECTION_TIMEOUT_MS: u64 = 5_000;
const CONNECT_TIMEOUT_MS: u64 = 5_000;

/// The MongoDB adapter.
#[derive(Clone)]
pub struct MongoStore {
    database: Database,
    /// Retries of idempotent reads (the `database` policy).
    read_policy: RetryPolicy,
    /// The URI with its password replaced, for messages.
    redacted_uri: String,
}

impl std::fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoStore")
            .field("uri", &self.redacted_uri)
            .field("database", &self.database.name())
            .finish()
    }
}

/// Replaces the password of a `mongodb://user:password@host/…` URI with `****`.
pub fn redact_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, hosts)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:****@{hosts}{tail}")
        }
        None => uri.to_string(),
    }
}

/// The host list of a URI, for "cannot reach MongoDB at …" messages.
fn hosts_of(uri: &str) -> String {
    let rest = uri.split_once("://").map(|(_, rest)| rest).unwrap_or(uri);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    authority
        .rsplit('@')
        .next()
        .unwrap_or(authority)
        .to_string()
}

/// Turns a driver error into a store error whose text never holds a secret.
/// Passes the named failpoint between two MongoDB writes (a crash, a stall or an error there).
pub(crate) async fn point(name: &str) -> Result<(), StoreError> {
    settle_core::failpoint::pause(name)
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))
}

pub(crate) fn backend(error: mongodb::error::Error) -> StoreError {
    StoreError::Backend(format!("MongoDB: {error}"))
}

/// True for the server's duplicate-key error (code 11000), however the driver wraps it.
pub(crate) fn is_duplicate_key(error: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    const DUPLICATE_KEY: i32 = 11000;
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == DUPLICATE_KEY,
        ErrorKind::Command(e) => e.code == DUPLICATE_KEY,
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .is_some_and(|errors| errors.iter().any(|e| e.code == DUPLICATE_KEY)),
        _ => false,
    }
}

fn index(keys: Document, unique: bool, partial: Option<Document>) -> IndexModel {
    let mut options = IndexOptions::builder().unique(unique).build();
    options.partial_filter_expression = partial;
    IndexModel::builder().keys(keys).options(options).build()
}

/// The index of a revision's lines ordered by one figure, then merchant_id and currency (walked
/// backwards for descending pages).
fn line_order_index(figure: &str) -> IndexModel {
    let mut keys = doc! { "settlement_date": 1, "revision": 1, "lease_version": 1 };
    keys.insert(figure, 1);
    keys.insert("merchant_id", 1);
    keys.insert("currency", 1);
    index(keys, false, None)
}

impl MongoStore {
    /// Connects, checks the server answers, and creates the indexes (idempotently). The password
    /// may be in the URI (from the environment or a credential); it never appears in errors.
    pub async fn connect(uri: &str, database: &str) -> Result<MongoStore, StoreError> {
        let redacted_uri = redact_uri(uri);
        let unreachable = |detail: String| {
            StoreError::Backend(format!(
                "cannot reach MongoDB at {}: {detail}",
                hosts_of(uri)
            ))
        };
        let mut options = ClientOptions::parse(uri).await.map_err(|e| {
            StoreError::Backend(format!("invalid MongoDB URI {redacted_uri}: {}", e.kind))
        })?;
        options.app_name = Some("settle".into());
        // The URI's own timeouts win; otherwise fail fast rather than hang for the driver's 30 s.
        options
            .server_selection_timeout
            .get_or_insert(StdDuration::from_millis(SERVER_SELECTION_TIMEOUT_MS));
        options
            .connect_timeout
            .get_or_insert(StdDuration::from_millis(CONNECT_TIMEOUT_MS));
        let client = Client::with_options(options).map_err(|e| unreachable(e.kind.to_string()))?;
        let database = client.database(database);
        database
            .run_command(doc! { "ping": 1 })
            .await
            .map_err(|e| unreachable(e.kind.to_string()))?;
        let store = MongoStore {
            database,
            redacted_uri,
            read_policy: RetryPolicy::database(),
        };
        store.create_indexes().await?;
        Ok(store)
    }

    /// Creates every index the adapter relies on; existing ones are left as they are.
    async fn create_indexes(&self) -> Result<(), StoreError> {
        use collections::*;
        let string = |field: &str| doc! { field: { "$type": "string" } };
        let plan: Vec<(&str, Vec<IndexModel>)> = vec![
            (
                TRANSACTIONS,
                vec![
                    index(doc! { "merchant_id": 1, "external_ref": 1 }, true, None),
                    index(doc! { "settlement_date": 1, "_id": 1 }, false, None),
                    index(
                        doc! { "settlement_date": 1, "state": 1, "freeze_token": 1, "_id": 1 },
                        false,
                        None,
                    ),
                    index(doc! { "state": 1, "settlement_date": 1 }, false, None),
                    index(
                        doc! { "merchant_id": 1, "refund_of": 1 },
                        false,
                        Some(string("refund_of")),
                    ),
                    index(
                        doc! { "idempotency_principal": 1, "idempotency_key": 1 },
                        true,
                        Some(string("idempotency_key")),
                    ),
                    index(doc! { "occurred_at": 1 }, false, None),
                ],
            ),
            (
                FEE_LEDGERS,
                vec![index(
                    doc! { "merchant_id": 1, "external_ref": 1 },
                    true,
                    None,
                )],
            ),
            (
                SETTLEMENTS,
                vec![
                    index(doc! { "settlement_date": 1, "revision": 1 }, true, None),
                    index(doc! { "status": 1, "settlement_date": -1 }, false, None),
                ],
            ),
            (
                SETTLEMENT_LINES,
                vec![
                    index(
                        doc! { "settlement_date": 1, "revision": 1, "lease_version": 1, "merchant_id": 1, "currency": 1 },
                        true,
                        None,
                    ),
                    // A revision's lines paged in the order of each figure they sort by.
                    line_order_index("net_minor"),
                    line_order_index("gross_minor"),
                    line_order_index("fees_minor"),
                    line_order_index("transaction_count"),
                ],
            ),
            (
                IDEMPOTENCY_RECORDS,
                vec![
                    index(doc! { "principal": 1, "key": 1 }, true, None),
                    // TTL: the server deletes expired records (lazily: expiry is also checked on read).
                    IndexModel::builder()
                        .keys(doc! { "expires_at": 1 })
                        .options(
                            IndexOptions::builder()
                                .expire_after(StdDuration::from_secs(0))
                                .build(),
                        )
                        .build(),
                ],
            ),
            (
                PAYOUTS,
                vec![
                    index(
                        doc! { "settlement_date": 1, "merchant_id": 1, "currency": 1 },
                        false,
                        None,
                    ),
                    index(doc! { "status": 1, "merchant_id": 1 }, false, None),
                ],
            ),
            (
                CARRY_FORWARDS,
                vec![
                    index(
                        doc! { "origin_date": 1, "origin_revision": 1, "merchant_id": 1, "currency": 1 },
                        true,
                        None,
                    ),
                    index(
                        doc! { "merchant_id": 1, "currency": 1, "applied_date": 1 },
                        false,
                        None,
                    ),
                ],
            ),
            (
                NOTIFICATIONS,
                vec![index(
                    doc! { "settlement_date": 1, "revision": 1, "event": 1 },
                    true,
                    None,
                )],
            ),
            (
                AUDIT_EVENTS,
                vec![
                    index(doc! { "occurred_at": -1, "_id": -1 }, false, None),
                    index(
                        doc! { "subject": 1, "occurred_at": -1, "_id": -1 },
                        false,
                        None,
                    ),
                    index(
                        doc! { "action": 1, "occurred_at": -1, "_id": -1 },
                        false,
                        None,
                    ),
                    index(
                        doc! { "actor": 1, "occurred_at": -1, "_id": -1 },
                        false,
                        None,
                    ),
                ],
            ),
            (
                RECON_ENTRIES,
                vec![index(doc! { "kind": 1, "booking_date": 1 }, false, None)],
            ),
            (
                RECON_DECISIONS,
                vec![
                    index(doc! { "kind": 1, "decided_at": 1, "_id": 1 }, false, None),
                    index(doc! { "settling": 1, "written_at": 1 }, false, None),
                ],
            ),
            (
                RECON_CLAIMS,
                vec![index(doc! { "decision_id": 1 }, false, None)],
            ),
            (
                API_TOKENS,
                vec![
                    index(doc! { "name": 1 }, true, None),
                    index(doc! { "token_hash": 1 }, true, None),
                ],
            ),
            (
                RERUN_REQUESTS,
                vec![
                    index(
                        doc! { "status": 1, "requested_at": -1, "_id": -1 },
                        false,
                        None,
                    ),
                    index(doc! { "requested_at": -1, "_id": -1 }, false, None),
                ],
            ),
        ];
        for (collection, indexes) in plan {
            self.database
                .collection::<Document>(collection)
                .create_indexes(indexes)
                .await
                .map_err(backend)?;
        }
        Ok(())
    }

    pub(crate) fn collection(&self, name: &str) -> Collection<Document> {
        self.database.collection(name)
    }

    /// The database name, for messages.
    pub fn database_name(&self) -> &str {
        self.database.name()
    }

    /// Drops the whole database (tests only use it on their own fresh databases).
    pub async fn drop_database(&self) -> Result<(), StoreError> {
        self.database.drop().await.map_err(backend)
    }

    /// Dates with at least one settlement revision: sealed against new transactions.
    pub(crate) async fn sealed_dates(&self) -> Result<BTreeSet<NaiveDate>, StoreError> {
        let values = self
            .collection(collections::SETTLEMENTS)
            .distinct("settlement_date", doc! {})
            .await
            .map_err(backend)?;
        values
            .into_iter()
            .map(|value| {
                value
                    .as_str()
                    .and_then(|text| text.parse().ok())
                    .ok_or_else(|| StoreError::Corrupt(format!("settlement_date {value}")))
            })
            .collect()
    }

    /// Reads every document a filter matches, in the given order. Reads are idempotent: a
    /// transient failure (a failover, a dropped connection) is retried with the `database` policy.
    pub(crate) async fn find_all(
        &self,
        collection: &str,
        filter: Document,
        sort: Document,
        limit: Option<i64>,
        skip: Option<u64>,
    ) -> Result<Vec<Document>, StoreError> {
        let collection = self.collection(collection);
        let read = |_attempt: u32| {
            let mut find = collection.find(filter.clone()).sort(sort.clone());
            if let Some(limit) = limit {
                find = find.limit(limit);
            }
            if let Some(skip) = skip {
                find = find.skip(skip);
            }
            async move {
                let found = find.await.map_err(MongoError)?;
                found
                    .try_collect::<Vec<Document>>()
                    .await
                    .map_err(MongoError)
            }
        };
        retry(
            &self.read_policy,
            Idempotence::Idempotent,
            "mongodb.find",
            read,
        )
        .await
        .map_err(|error| match error.into_last_error() {
            Some(MongoError(error)) => backend(error),
            None => StoreError::Backend("MongoDB: the read timed out".into()),
        })
    }

    /// Counts the documents a filter matches, retried like [`MongoStore::find_all`].
    pub(crate) async fn count_matching(
        &self,
        collection: &str,
        filter: Document,
    ) -> Result<u64, StoreError> {
        let collection = self.collection(collection);
        let count = |_attempt: u32| {
            let count = collection.count_documents(filter.clone());
            async move { count.await.map_err(MongoError) }
        };
        retry(
            &self.read_policy,
            Idempotence::Idempotent,
            "mongodb.count",
            count,
        )
        .await
        .map_err(|error| match error.into_last_error() {
            Some(MongoError(error)) => backend(error),
            None => StoreError::Backend("MongoDB: the read timed out".into()),
        })
    }
}

impl Store for MongoStore {
    fn kind(&self) -> &'static str {
        "mongodb"
    }
}

/// The MongoDB server of the unit tests: `MONGODB_URI`, else the one `scripts/test.sh` starts.
/// Without either the MongoDB unit tests say so and skip (the contract suite in `tests/` refuses to).
#[cfg(test)]
pub(crate) fn test_server_uri() -> Option<String> {
    let uri = std::env::var("MONGODB_URI")
        .or_else(|_| std::env::var("SETTLE_TEST_MONGODB_URI"))
        .ok();
    if uri.is_none() {
        eprintln!("skipped: no MongoDB server (set MONGODB_URI or run ./scripts/test.sh)");
    }
    uri
}

/// A fresh database on the unit tests' server, or `None` (the test is skipped) without one.
#[cfg(test)]
pub(crate) async fn test_store() -> Option<MongoStore> {
    let uri = test_server_uri()?;
    let name = format!("settle_unit_{}", uuid::Uuid::new_v4().simple());
    Some(
        MongoStore::connect(&uri, &name)
            .await
            .expect("connect to the test server"),
    )
}

#[cfg(test)]
pub(crate) fn test_instant(text: &str) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(text)
        .expect("an RFC 3339 instant")
        .with_timezone(&chrono::Utc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_leave_the_uri_redaction() {
        assert_eq!(
            redact_uri("mongodb://settle:s3cret@db1:27017,db2/settle?replicaSet=rs0"),
            "mongodb://settle:****@db1:27017,db2/settle?replicaSet=rs0"
        );
        assert_eq!(
            redact_uri("mongodb://127.0.0.1:27017/?directConnection=true"),
            "mongodb://127.0.0.1:27017/?directConnection=true"
        );
        assert_eq!(
            redact_uri("mongodb+srv://u:p@cluster.example"),
            "mongodb+srv://u:****@cluster.example"
        );
        assert_eq!(hosts_of("mongodb://u:p@db1:27017,db2/x"), "db1:27017,db2");
    }

    #[tokio::test]
    async fn a_server_that_cannot_be_reached_is_a_retryable_failure() {
        use crate::classify::MongoError;
        use settle_core::retry::{Classification, Classify};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let uri = format!(
            "mongodb://127.0.0.1:{port}/?directConnection=true&serverSelectionTimeoutMS=200"
        );
        let client = Client::with_uri_str(&uri).await.unwrap();
        let error = client
            .database("x")
            .run_command(doc! { "ping": 1 })
            .await
            .unwrap_err();
        assert_eq!(
            MongoError(error).classify(),
            Classification::Retryable { retry_after: None }
        );
        let invalid = ClientOptions::parse("mongodb://[bad").await.unwrap_err();
        assert_eq!(MongoError(invalid).classify(), Classification::Permanent);
    }

    #[tokio::test]
    async fn an_unreachable_server_is_named_without_its_password() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let uri = format!("mongodb://settle:topsecret@127.0.0.1:{port}/?directConnection=true&serverSelectionTimeoutMS=300");
        let error = MongoStore::connect(&uri, "settle")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&format!("cannot reach MongoDB at 127.0.0.1:{port}")),
            "{error}"
        );
        assert!(!error.contains("topsecret"), "{error}");
    }
}
