//! Streaming, validating import of a transactions CSV. Pass one checks every row (the payment
//! service's rules, the store for conflicting references) and writes nothing; pass two stores the
//! good rows in atomic batches.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::calendar::BusinessCalendar;
use crate::compute::PaymentKey;
use crate::excerpt::excerpt;
use crate::ingest;
use crate::limits::{check_amount_limit, AmountLimits};
use crate::model::NewTransaction;
use crate::money::{Currency, Money};
use crate::returns::{self, ReturnTarget};
use crate::store::{InsertOutcome, StoreError, TransactionStore};
use crate::time::parse_rfc3339;

mod rejects;

/// Columns every file must have, in any order.
pub const REQUIRED_COLUMNS: &[&str] = &[
    "external_ref",
    "merchant_id",
    "kind",
    "status",
    "amount",
    "currency",
    "method",
    "occurred_at",
];
/// Columns a file may have.
pub const OPTIONAL_COLUMNS: &[&str] = &["id", "refund_of"];

/// Rows written per store transaction in pass two: each commit waits for the disk, so fewer and
/// larger batches import faster; a crash between batches leaves whole batches, found as duplicates.
const WRITE_BATCH_ROWS: usize = 20_000;
/// Stored references looked up per store call in pass one.
const LOOKUP_BATCH_ROWS: usize = 10_000;
/// Row errors carried in the error value; the rest are only counted.
const MAX_REPORTED_ERRORS: usize = 1_000;

/// A rejected row: where, which column, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowError {
    /// 1-based line number in the file (the header is line 1).
    pub line: u64,
    pub column: Option<String>,
    pub reason: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.column {
            Some(column) => write!(f, "line {}, column {column}: {}", self.line, self.reason),
            None => write!(f, "line {}: {}", self.line, self.reason),
        }
    }
}

/// Why an import wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {detail}")]
    Io { path: PathBuf, detail: String },
    #[error("{path}: {detail}")]
    Header { path: PathBuf, detail: String },
    #[error("{path}: {invalid_rows} invalid row(s); nothing was imported (use --skip-invalid to import the valid rows)")]
    InvalidRows {
        path: PathBuf,
        invalid_rows: u64,
        /// The first `MAX_REPORTED_ERRORS`, in file order.
        errors: Vec<RowError>,
    },
    #[error("{path} changed while it was being imported ({detail}); import it again: rows already written are recognised as duplicates")]
    Changed { path: PathBuf, detail: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Import settings.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Write the valid rows and send the invalid ones to `FILE.rejects.csv`.
    pub skip_invalid: bool,
    /// The per-transaction maxima the payments API applies (`[payments]`).
    pub amount_limits: AmountLimits,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportReport {
    pub rows: u64,
    pub inserted: u64,
    /// Rows identical to a stored transaction or to an earlier row of the file.
    pub duplicates: u64,
    /// Inserted rows whose date was already settled (they settle on the next open date).
    pub late: u64,
    pub rejected: u64,
    pub rejects_path: Option<PathBuf>,
}

/// Reports progress in bytes read, per pass.
pub trait ImportProgress {
    fn start(&self, pass: &'static str, total_bytes: u64);
    fn advance(&self, bytes_read: u64);
    fn finish(&self);
}

/// Progress that nobody watches.
pub struct NoProgress;

impl ImportProgress for NoProgress {
    fn start(&self, _pass: &'static str, _total_bytes: u64) {}
    fn advance(&self, _bytes_read: u64) {}
    fn finish(&self) {}
}

/// Where `--skip-invalid` writes rejected rows: `FILE.rejects.csv` next to the input.
pub fn rejects_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".rejects.csv");
    path.with_file_name(name)
}

/// Column positions, resolved from the header.
struct Columns {
    names: Vec<String>,
    index: HashMap<&'static str, usize>,
}

impl Columns {
    fn from_header(header: &csv::ByteRecord) -> Result<Columns, String> {
        let mut names = Vec::with_capacity(header.len());
        let mut index = HashMap::new();
        for (position, raw) in header.iter().enumerate() {
            let name = std::str::from_utf8(raw)
                .map_err(|_| format!("header column {} is not valid UTF-8", position + 1))?;
            let name = name.trim_start_matches('\u{feff}').trim().to_string();
            let known = REQUIRED_COLUMNS
                .iter()
                .chain(OPTIONAL_COLUMNS)
                .find(|known| **known == name)
                .ok_or_else(|| {
                    format!(
                        "unknown column {} in the header (expected {} and optionally {})",
                        excerpt(&name),
                        REQUIRED_COLUMNS.join(", "),
                        OPTIONAL_COLUMNS.join(", ")
                    )
                })?;
            if index.insert(*known, position).is_some() {
                return Err(format!(
                    "column {} appears twice in the header",
                    excerpt(&name)
                ));
            }
            names.push(name);
        }
        let missing: Vec<&str> = REQUIRED_COLUMNS
            .iter()
            .copied()
            .filter(|c| !index.contains_key(c))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the header lacks required column(s): {}",
                missing.join(", ")
            ));
        }
        Ok(Columns { names, index })
    }

    /// The field of a column as text; `None` for an absent optional column or an empty field.
    fn field<'r>(
        &self,
        record: &'r csv::ByteRecord,
        column: &'static str,
    ) -> Result<Option<&'r str>, RowError> {
        let Some(position) = self.index.get(column) else {
            return Ok(None);
        };
        let raw = record.get(*position).unwrap_or_default();
        let text = std::str::from_utf8(raw).map_err(|_| RowError {
            line: 0,
            column: Some(column.to_string()),
            reason: "not valid UTF-8".into(),
        })?;
        Ok((!text.is_empty()).then_some(text))
    }

    fn required<'r>(
        &self,
        record: &'r csv::ByteRecord,
        column: &'static str,
    ) -> Result<&'r str, RowError> {
        self.field(record, column)?.ok_or_else(|| RowError {
            line: 0,
            column: Some(column.to_string()),
            reason: "is empty".into(),
        })
    }
}

fn column_error(column: &'static str, reason: impl Into<String>) -> RowError {
    RowError {
        line: 0,
        column: Some(column.to_string()),
        reason: reason.into(),
    }
}

/// Decodes and validates one row.
fn parse_row(columns: &Columns, record: &csv::ByteRecord) -> Result<NewTransaction, RowError> {
    if record.len() != columns.names.len() {
        let unclosed_quote = record.iter().any(|field| field.contains(&b'\n'));
        let reason = if unclosed_quote {
            "a quoted field is not closed (unbalanced quote); it runs into the following lines"
                .to_string()
        } else {
            format!(
                "has {} fields but the header has {}",
                record.len(),
                columns.names.len()
            )
        };
        return Err(RowError {
            line: 0,
            column: None,
            reason,
        });
    }
    let parse_enum = |column: &'static str| -> Result<String, RowError> {
        Ok(columns.required(record, column)?.to_string())
    };
    let currency_text = columns.required(record, "currency")?;
    let currency =
        Currency::from_code(currency_text).map_err(|e| column_error("currency", e.to_string()))?;
    let amount = Money::parse_major(columns.required(record, "amount")?, currency)
        .map_err(|e| column_error("amount", e.to_string()))?;
    let id = columns
        .field(record, "id")?
        .map(|text| {
            Uuid::parse_str(text)
                .map_err(|_| column_error("id", format!("{} is not a UUID", excerpt(text))))
        })
        .transpose()?;
    let occurred_at: DateTime<Utc> = parse_rfc3339(columns.required(record, "occurred_at")?)
        .map_err(|e| column_error("occurred_at", e))?;
    let transaction = NewTransaction {
        id,
        merchant_id: columns.required(record, "merchant_id")?.to_string(),
        kind: parse_enum("kind")?
            .parse()
            .map_err(|e: String| column_error("kind", e))?,
        status: parse_enum("status")?
            .parse()
            .map_err(|e: String| column_error("status", e))?,
        amount_minor: amount.minor,
        currency,
        method: parse_enum("method")?
            .parse()
            .map_err(|e: String| column_error("method", e))?,
        occurred_at,
        external_ref: columns.required(record, "external_ref")?.to_string(),
        refund_of: columns.field(record, "refund_of")?.map(str::to_string),
    };
    transaction.validated().map_err(|e| {
        let column = if e.field == "amount" {
            "amount"
        } else {
            e.field
        };
        column_error(column, e.message)
    })
}

/// A compact fingerprint of a row's content, to spot in-file duplicates without keeping rows.
/// Every field is hashed with its length (or presence) first, so no two rows can run together.
fn fingerprint(transaction: &NewTransaction) -> [u8; 16] {
    let mut hasher = Sha256::new();
    let mut text = |value: &str| {
        hasher.update((value.len() as u64).to_le_bytes());
        hasher.update(value.as_bytes());
    };
    let NewTransaction {
        id,
        merchant_id,
        kind,
        status,
        amount_minor,
        currency,
        method,
        occurred_at,
        external_ref,
        refund_of,
    } = transaction;
    text(merchant_id);
    text(external_ref);
    text(kind.as_str());
    text(status.as_str());
    text(currency.code());
    text(method.as_str());
    text(refund_of.as_deref().map_or("", |r| r));
    hasher.update([u8::from(refund_of.is_some()), u8::from(id.is_some())]);
    hasher.update(id.map(|id| *id.as_bytes()).unwrap_or_default());
    hasher.update(amount_minor.to_le_bytes());
    hasher.update(occurred_at.timestamp().to_le_bytes());
    hasher.update(occurred_at.timestamp_subsec_nanos().to_le_bytes());
    let mut out = [0_u8; 16];
    out.copy_from_slice(&hasher.finalize()[..16]);
    out
}

fn key_hash(transaction: &NewTransaction) -> [u8; 16] {
    reference_hash(&transaction.merchant_id, &transaction.external_ref)
}

/// A compact key for one merchant's reference.
fn reference_hash(merchant_id: &str, external_ref: &str) -> [u8; 16] {
    let mut hasher = Sha256::new();
    hasher.update(merchant_id.as_bytes());
    hasher.update([0]);
    hasher.update(external_ref.as_bytes());
    let mut out = [0_u8; 16];
    out.copy_from_slice(&hasher.finalize()[..16]);
    out
}

/// Counts bytes read, for progress.
struct CountingReader<R> {
    inner: R,
    bytes_read: std::rc::Rc<std::cell::Cell<u64>>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes_read.set(self.bytes_read.get() + n as u64);
        Ok(n)
    }
}

/// An open pass over the file.
pub(super) struct Pass {
    reader: csv::Reader<CountingReader<BufReader<File>>>,
    bytes_read: std::rc::Rc<std::cell::Cell<u64>>,
    columns: Columns,
    /// Set where the CSV broke beyond repair: the pass reads nothing more.
    stopped: bool,
}

/// One step through the file.
pub(super) enum Step {
    /// A record was read; it starts on this line.
    Row(u64),
    /// The CSV itself is broken here; `can_continue` when the next record is still trustworthy.
    Unreadable {
        line: u64,
        error: csv::Error,
        can_continue: bool,
    },
    End,
}

impl Pass {
    /// Reads the next record into `record`.
    pub(super) fn next(&mut self, record: &mut csv::ByteRecord) -> Step {
        let line = self.reader.position().line();
        match self.reader.read_byte_record(record) {
            Ok(false) => Step::End,
            Ok(true) => Step::Row(record.position().map(|p| p.line()).unwrap_or(line)),
            Err(error) => Step::Unreadable {
                line: error.position().map(|p| p.line()).unwrap_or(line),
                // A malformed quote makes the rest of the file unreliable; a short record does not.
                can_continue: matches!(
                    error.kind(),
                    csv::ErrorKind::UnequalLengths { .. } | csv::ErrorKind::Utf8 { .. }
                ),
                error,
            },
        }
    }

    pub(super) fn column_names(&self) -> &[String] {
        &self.columns.names
    }
}

pub(super) fn open_pass(path: &Path) -> Result<Pass, ImportError> {
    let io = |e: std::io::Error| ImportError::Io {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let file = File::open(path).map_err(io)?;
    let bytes_read = std::rc::Rc::new(std::cell::Cell::new(0));
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(CountingReader {
            inner: BufReader::new(file),
            bytes_read: bytes_read.clone(),
        });
    let header = reader.byte_headers().map_err(|e| ImportError::Header {
        path: path.to_path_buf(),
        detail: format!("cannot read the header: {e}"),
    })?;
    if header.is_empty() || (header.len() == 1 && header.get(0) == Some(b"")) {
        return Err(ImportError::Header {
            path: path.to_path_buf(),
            detail: "the file is empty or has no header line".into(),
        });
    }
    let columns = Columns::from_header(header).map_err(|detail| ImportError::Header {
        path: path.to_path_buf(),
        detail,
    })?;
    Ok(Pass {
        reader,
        bytes_read,
        columns,
        stopped: false,
    })
}

/// What pass one decided about each line.
#[derive(Default)]
struct Verdicts {
    rows: u64,
    /// Bad lines and why, by line number.
    rejected: BTreeMap<u64, RowError>,
    /// Lines that repeat an earlier identical row of the file or a stored transaction.
    duplicate_lines: HashSet<u64>,
}

impl Verdicts {
    fn reject(&mut self, error: RowError) {
        self.rejected.entry(error.line).or_insert(error);
    }

    fn is_rejected(&self, line: u64) -> bool {
        self.rejected.contains_key(&line)
    }
}

/// The first row of the file with a reference.
struct SeenRow {
    line: u64,
    /// Its content fingerprint, to tell a repeated row from a conflicting one.
    content: [u8; 16],
    /// What a refund later in the file is checked against, should this row be its payment.
    target: ReturnTarget,
}

/// Pass one: parse every row, apply the payment service's limits and return rules in file order,
/// find in-file and stored conflicts. Writes nothing.
async fn check(
    path: &Path,
    store: &dyn TransactionStore,
    options: &ImportOptions,
    progress: &dyn ImportProgress,
) -> Result<Verdicts, ImportError> {
    let mut pass = open_pass(path)?;
    let total_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    progress.start("checking", total_bytes);
    let mut verdicts = Verdicts::default();
    // In-file references, by key hash.
    let mut seen: HashMap<[u8; 16], SeenRow> = HashMap::new();
    // Refunds and chargebacks first seen in the file, in file order.
    let mut returns_in_file: Vec<(u64, NewTransaction)> = Vec::new();
    let mut pending_lookup: Vec<(u64, NewTransaction)> = Vec::new();
    let mut record = csv::ByteRecord::new();
    loop {
        let line = match pass.next(&mut record) {
            Step::End => break,
            Step::Row(line) => line,
            Step::Unreadable {
                line,
                error,
                can_continue,
            } => {
                verdicts.rows += 1;
                verdicts.reject(RowError {
                    line,
                    column: None,
                    reason: format!("unreadable CSV: {error}"),
                });
                if can_continue {
                    continue;
                }
                break;
            }
        };
        verdicts.rows += 1;
        progress.advance(pass.bytes_read.get());
        let parsed = parse_row(&pass.columns, &record).and_then(|transaction| {
            check_amount_limit(&transaction, &options.amount_limits)
                .map_err(|e| column_error("amount", e.message))?;
            Ok(transaction)
        });
        match parsed {
            Err(error) => verdicts.reject(RowError { line, ..error }),
            Ok(transaction) => {
                let key = key_hash(&transaction);
                let content = fingerprint(&transaction);
                match seen.get(&key) {
                    Some(earlier) if earlier.content == content => {
                        verdicts.duplicate_lines.insert(line);
                    }
                    Some(earlier) => verdicts.reject(RowError {
                        line,
                        column: Some("external_ref".into()),
                        reason: format!(
                            "merchant {} reference {:?} already appears on line {} with different content",
                            transaction.merchant_id, transaction.external_ref, earlier.line
                        ),
                    }),
                    None => {
                        seen.insert(
                            key,
                            SeenRow {
                                line,
                                content,
                                target: ReturnTarget::from(&transaction),
                            },
                        );
                        if returns::returned_payment_ref(&transaction).is_some() {
                            returns_in_file.push((line, transaction.clone()));
                        }
                        pending_lookup.push((line, transaction));
                        if pending_lookup.len() >= LOOKUP_BATCH_ROWS {
                            compare_with_store(store, std::mem::take(&mut pending_lookup), &mut verdicts).await?;
                        }
                    }
                }
            }
        }
    }
    compare_with_store(store, pending_lookup, &mut verdicts).await?;
    check_returns(store, returns_in_file, &seen, &mut verdicts).await?;
    progress.finish();
    Ok(verdicts)
}

/// A payment's stored facts and what its stored completed or pending returns returned.
struct StoredPayment {
    target: ReturnTarget,
    returned_minor: i64,
}

/// Applies the payment service's return rules ([`returns::check_return`]) to the file's new
/// refunds and chargebacks in file order: against a payment earlier in the file or stored, and
/// what the payment's stored returns plus the file's earlier accepted ones already returned.
async fn check_returns(
    store: &dyn TransactionStore,
    returns_in_file: Vec<(u64, NewTransaction)>,
    seen: &HashMap<[u8; 16], SeenRow>,
    verdicts: &mut Verdicts,
) -> Result<(), ImportError> {
    let live: Vec<(u64, NewTransaction)> = returns_in_file
        .into_iter()
        .filter(|(line, _)| {
            !verdicts.is_rejected(*line) && !verdicts.duplicate_lines.contains(line)
        })
        .collect();
    let payment_key = |t: &NewTransaction| -> PaymentKey {
        (
            t.merchant_id.clone(),
            returns::returned_payment_ref(t)
                .unwrap_or_default()
                .to_string(),
        )
    };
    let mut stored: HashMap<PaymentKey, StoredPayment> = HashMap::new();
    let keys: Vec<PaymentKey> = live
        .iter()
        .map(|(_, t)| payment_key(t))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    for chunk in keys.chunks(LOOKUP_BATCH_ROWS) {
        for refunded in store.refunded_payments(chunk.to_vec()).await? {
            let returned_minor = refunded
                .refunds
                .iter()
                .filter(|r| returns::counts_as_returned(r.kind, r.status))
                .fold(0_i64, |sum, r| sum.saturating_add(r.amount_minor));
            stored.insert(
                (
                    refunded.payment.merchant_id.clone(),
                    refunded.payment.external_ref.clone(),
                ),
                StoredPayment {
                    target: ReturnTarget::from(&refunded.payment),
                    returned_minor,
                },
            );
        }
    }
    // What the file's accepted returns returned so far, per payment.
    let mut returned_in_file: HashMap<PaymentKey, i64> = HashMap::new();
    for (line, transaction) in live {
        let key = payment_key(&transaction);
        let earlier_row = seen
            .get(&reference_hash(&key.0, &key.1))
            .filter(|row| row.line < line);
        let accepted_row = earlier_row.filter(|row| !verdicts.is_rejected(row.line));
        let target = accepted_row
            .map(|row| row.target)
            .or_else(|| stored.get(&key).map(|p| p.target));
        if target.is_none() {
            if let Some(row) = earlier_row {
                verdicts.reject(RowError {
                    line,
                    column: Some("refund_of".into()),
                    reason: format!(
                        "its payment {:?} on line {} is itself refused",
                        key.1, row.line
                    ),
                });
                continue;
            }
        }
        let returned_minor = stored
            .get(&key)
            .map_or(0, |p| p.returned_minor)
            .saturating_add(returned_in_file.get(&key).copied().unwrap_or(0));
        match returns::check_return(&transaction, target.as_ref(), returned_minor) {
            Ok(()) => {
                if returns::counts_as_returned(transaction.kind, transaction.status) {
                    let sum = returned_in_file.entry(key).or_insert(0);
                    *sum = sum.saturating_add(transaction.amount_minor);
                }
            }
            Err(refusal) => verdicts.reject(RowError {
                line,
                column: Some(refusal.column().into()),
                reason: refusal.describe(&transaction),
            }),
        }
    }
    Ok(())
}

/// Rows whose reference is already stored: identical ones are duplicates, others are bad rows.
async fn compare_with_store(
    store: &dyn TransactionStore,
    rows: Vec<(u64, NewTransaction)>,
    verdicts: &mut Verdicts,
) -> Result<(), ImportError> {
    if rows.is_empty() {
        return Ok(());
    }
    let keys = rows
        .iter()
        .map(|(_, t)| (t.merchant_id.clone(), t.external_ref.clone()))
        .collect();
    let stored: HashMap<(String, String), _> = store
        .transactions_by_ref(keys)
        .await?
        .into_iter()
        .map(|t| ((t.merchant_id.clone(), t.external_ref.clone()), t))
        .collect();
    for (line, transaction) in rows {
        let key = (
            transaction.merchant_id.clone(),
            transaction.external_ref.clone(),
        );
        if let Some(existing) = stored.get(&key) {
            if transaction.is_recorded_by(existing) {
                verdicts.duplicate_lines.insert(line);
            } else {
                let difference = transaction.first_difference(existing).unwrap_or_default();
                verdicts.reject(RowError {
                    line,
                    column: Some("external_ref".into()),
                    reason: format!(
                        "merchant {} reference {:?} is already stored with different content: {difference}",
                        transaction.merchant_id, transaction.external_ref
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Imports a transactions CSV. All or nothing unless `skip_invalid`.
pub async fn import_csv(
    path: &Path,
    store: &dyn TransactionStore,
    calendar: &BusinessCalendar,
    options: &ImportOptions,
    progress: &dyn ImportProgress,
    now: DateTime<Utc>,
) -> Result<ImportReport, ImportError> {
    let verdicts = check(path, store, options, progress).await?;
    let rejected = verdicts.rejected.len() as u64;
    if rejected > 0 && !options.skip_invalid {
        return Err(ImportError::InvalidRows {
            path: path.to_path_buf(),
            invalid_rows: rejected,
            errors: verdicts
                .rejected
                .into_values()
                .take(MAX_REPORTED_ERRORS)
                .collect(),
        });
    }
    let mut report = ImportReport {
        rows: verdicts.rows,
        rejected,
        duplicates: verdicts.duplicate_lines.len() as u64,
        ..ImportReport::default()
    };
    let rejects = rejects_path(path);
    if rejected > 0 {
        rejects::write_rejects(path, &rejects, &verdicts.rejected).map_err(|e| {
            ImportError::Io {
                path: rejects.clone(),
                detail: e.to_string(),
            }
        })?;
        report.rejects_path = Some(rejects);
    }
    write_rows(path, store, calendar, &verdicts, progress, now, &mut report).await?;
    Ok(report)
}

/// Pass two: store the rows pass one accepted, in atomic batches. The next batch is read and
/// parsed while the current one is written; it is handed to the store only once that one is in.
async fn write_rows(
    path: &Path,
    store: &dyn TransactionStore,
    calendar: &BusinessCalendar,
    verdicts: &Verdicts,
    progress: &dyn ImportProgress,
    now: DateTime<Utc>,
    report: &mut ImportReport,
) -> Result<(), ImportError> {
    let mut pass = open_pass(path)?;
    progress.start(
        "importing",
        std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
    );
    let changed = |detail: String| ImportError::Changed {
        path: path.to_path_buf(),
        detail,
    };
    let mut record = csv::ByteRecord::new();
    let mut batch = next_batch(&mut pass, &mut record, verdicts, progress, &changed)?;
    while !batch.is_empty() {
        let writing = store_batch(store, calendar, batch, now, &changed);
        let reading = async { next_batch(&mut pass, &mut record, verdicts, progress, &changed) };
        let (written, next) = futures::join!(writing, reading);
        let written = written?;
        report.inserted += written.inserted;
        report.duplicates += written.duplicates;
        report.late += written.late;
        batch = next?;
    }
    progress.finish();
    Ok(())
}

/// The next up to `WRITE_BATCH_ROWS` rows pass one accepted; empty at the end of the file.
fn next_batch(
    pass: &mut Pass,
    record: &mut csv::ByteRecord,
    verdicts: &Verdicts,
    progress: &dyn ImportProgress,
    changed: &dyn Fn(String) -> ImportError,
) -> Result<Vec<NewTransaction>, ImportError> {
    let mut batch = Vec::with_capacity(WRITE_BATCH_ROWS);
    while batch.len() < WRITE_BATCH_ROWS && !pass.stopped {
        let line = match pass.next(record) {
            Step::End => break,
            Step::Row(line) => line,
            Step::Unreadable {
                line, can_continue, ..
            } if verdicts.is_rejected(line) => {
                // Pass one stopped reading here too: nothing after it is trustworthy.
                pass.stopped = !can_continue;
                continue;
            }
            Step::Unreadable { line, .. } => {
                return Err(changed(format!("line {line} is now unreadable")))
            }
        };
        progress.advance(pass.bytes_read.get());
        if verdicts.is_rejected(line) || verdicts.duplicate_lines.contains(&line) {
            continue;
        }
        let transaction = parse_row(&pass.columns, record)
            .map_err(|e| changed(format!("line {line}: {}", e.reason)))?;
        batch.push(transaction);
    }
    Ok(batch)
}

async fn store_batch(
    store: &dyn TransactionStore,
    calendar: &BusinessCalendar,
    batch: Vec<NewTransaction>,
    now: DateTime<Utc>,
    changed: &dyn Fn(String) -> ImportError,
) -> Result<InsertOutcome, ImportError> {
    let outcome = ingest::record(store, calendar, batch, now)
        .await
        .map_err(|e| match e {
            ingest::RecordError::Store(error) => ImportError::Store(error),
            ingest::RecordError::Calendar(error) => changed(error.to_string()),
        })?;
    if let Some(conflict) = outcome.conflicts.first() {
        return Err(changed(format!(
            "merchant {} reference {:?} was stored by someone else meanwhile with different content",
            conflict.existing.merchant_id, conflict.existing.external_ref
        )));
    }
    Ok(outcome)
}
