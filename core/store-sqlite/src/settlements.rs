//! Settlements in SQLite: claims by compare-and-set inside `BEGIN IMMEDIATE`, leases with fencing
//! versions, results and completion written only while the fence holds.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use rusqlite::{params, params_from_iter, Connection};

use settle_core::compute::{ComputedSettlement, PaymentKey};
use settle_core::model::{Fence, PaymentFeeLedger, Settlement, SettlementFigures, SettlementLine};
use settle_core::store::claim::{decide, ClaimAction};
use settle_core::store::{
    ClaimRequest, HistoryFilter, LineSort, LinesPage, LinesQuery, SettlementStore, StoreError,
};

use super::rows::{self, date_text, instant_text, FIGURE_COLUMNS, SETTLEMENT_COLUMNS};
use super::{backend, query_all, query_one, SqliteStore};

pub(super) fn latest_revision(
    connection: &Connection,
    date: NaiveDate,
) -> Result<Option<Settlement>, StoreError> {
    query_one(
        connection,
        &format!(
            "SELECT {SETTLEMENT_COLUMNS} FROM settlements WHERE settlement_date = ?1 ORDER BY revision DESC LIMIT 1"
        ),
        params![date_text(date)],
        rows::settlement,
    )
}

fn settlement_with_totals(
    connection: &Connection,
    date: NaiveDate,
    revision: Option<u32>,
) -> Result<Option<Settlement>, StoreError> {
    let found = match revision {
        None => latest_revision(connection, date)?,
        Some(revision) => query_one(
            connection,
            &format!("SELECT {SETTLEMENT_COLUMNS} FROM settlements WHERE settlement_date = ?1 AND revision = ?2"),
            params![date_text(date), revision],
            rows::settlement,
        )?,
    };
    found.map(|s| with_totals(connection, s)).transpose()
}

pub(super) fn with_totals(
    connection: &Connection,
    mut settlement: Settlement,
) -> Result<Settlement, StoreError> {
    settlement.totals = query_all(
        connection,
        &format!(
            "SELECT currency, merchant_count, {FIGURE_COLUMNS} FROM settlement_totals \
             WHERE settlement_date = ?1 AND revision = ?2 ORDER BY currency"
        ),
        params![date_text(settlement.settlement_date), settlement.revision],
        rows::totals,
    )?;
    Ok(settlement)
}

/// Inserts a brand-new running revision.
fn insert_revision(
    tx: &rusqlite::Transaction,
    request: &ClaimRequest,
    revision: u32,
    reason: Option<&str>,
) -> Result<(), StoreError> {
    let calendar =
        serde_json::to_string(&request.calendar).map_err(|e| StoreError::Backend(e.to_string()))?;
    let fee_schedule = serde_json::to_string(&request.fee_schedule)
        .map_err(|e| StoreError::Backend(e.to_string()))?;
    let now = instant_text(request.now);
    tx.execute(
        &format!(
            "INSERT INTO settlements ({SETTLEMENT_COLUMNS}) VALUES \
             (?1, ?2, 'running', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, 1, 1, ?12, ?12, NULL, NULL, NULL)"
        ),
        params![
            date_text(request.settlement_date),
            revision,
            request.trigger.as_str(),
            request.requested_by,
            reason,
            calendar,
            fee_schedule,
            instant_text(request.window.start),
            instant_text(request.window.end),
            request.owner,
            instant_text(request.now + request.lease_duration),
            now,
        ],
    )
    .map_err(backend)?;
    Ok(())
}

/// Takes over an existing revision: new owner, new lease, fencing version + 1. The write
/// transaction already makes read and write one step; the filter still names the whole state the
/// decision read (version, status, an expired lease), as the MongoDB adapter's must.
fn take_over(
    tx: &rusqlite::Transaction,
    current: &Settlement,
    request: &ClaimRequest,
) -> Result<(), StoreError> {
    let now = instant_text(request.now);
    let changed = tx
        .execute(
            "UPDATE settlements SET status = 'running', lease_owner = ?1, lease_expires_at = ?2, \
             lease_version = lease_version + 1, attempts = attempts + 1, started_at = ?3, error = NULL \
             WHERE settlement_date = ?4 AND revision = ?5 AND lease_version = ?6 AND status = ?7 \
             AND (status != 'running' OR lease_expires_at <= ?3)",
            params![
                request.owner,
                instant_text(request.now + request.lease_duration),
                now,
                date_text(current.settlement_date),
                current.revision,
                current.lease_version,
                current.status.as_str(),
            ],
        )
        .map_err(backend)?;
    if changed != 1 {
        return Err(StoreError::Backend(
            "the revision changed during its claim".into(),
        ));
    }
    Ok(())
}

/// Decides and applies a claim inside the write transaction (which makes it atomic).
pub(super) fn claim(tx: &rusqlite::Transaction, request: &ClaimRequest) -> Result<u32, StoreError> {
    let latest = latest_revision(tx, request.settlement_date)?;
    match decide(request, latest.as_ref())? {
        ClaimAction::InsertFirst => {
            insert_revision(tx, request, 1, None)?;
            Ok(1)
        }
        ClaimAction::TakeOver => {
            let current = latest.expect("a takeover has a revision");
            take_over(tx, &current, request)?;
            Ok(current.revision)
        }
        ClaimAction::InsertNext { revision, reason } => {
            insert_revision(tx, request, revision, Some(reason))?;
            Ok(revision)
        }
    }
}

/// Applies a fenced update; zero rows changed means the lease was lost.
pub(super) fn fenced_update(
    tx: &rusqlite::Transaction,
    fence: &Fence,
    set_clause: &str,
    values: &[&dyn rusqlite::ToSql],
) -> Result<(), StoreError> {
    let sql = format!(
        "UPDATE settlements SET {set_clause} WHERE settlement_date = ?{a} AND revision = ?{b} \
         AND lease_version = ?{c} AND status = 'running'",
        a = values.len() + 1,
        b = values.len() + 2,
        c = values.len() + 3,
    );
    let date = date_text(fence.settlement_date);
    let mut all: Vec<&dyn rusqlite::ToSql> = values.to_vec();
    all.push(&date);
    all.push(&fence.revision);
    all.push(&fence.lease_version);
    let changed = tx.execute(&sql, params_from_iter(all)).map_err(backend)?;
    if changed == 1 {
        Ok(())
    } else {
        Err(StoreError::LeaseLost(fence.clone()))
    }
}

/// Inserts one row of figures (a merchant line or a currency's totals) of a revision.
fn insert_figures(
    tx: &rusqlite::Transaction,
    table: &str,
    key_columns: [&str; 2],
    date: &str,
    revision: u32,
    keys: [&dyn rusqlite::ToSql; 2],
    figures: &SettlementFigures,
) -> Result<(), StoreError> {
    let placeholders = (5..=20)
        .map(|n| format!("?{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "INSERT INTO {table} (settlement_date, revision, {}, {}, {FIGURE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, {placeholders})",
        key_columns[0], key_columns[1]
    );
    let figures = rows::figures_params(figures);
    let mut values: Vec<&dyn rusqlite::ToSql> = vec![&date, &revision, keys[0], keys[1]];
    values.extend(figures.iter().map(|v| v as &dyn rusqlite::ToSql));
    tx.prepare_cached(&sql)
        .and_then(|mut statement| statement.execute(params_from_iter(values)))
        .map_err(backend)?;
    Ok(())
}

#[async_trait]
impl SettlementStore for SqliteStore {
    async fn claim_settlement(&self, request: ClaimRequest) -> Result<Settlement, StoreError> {
        let date = request.settlement_date;
        let revision = self.write(move |tx| claim(tx, &request)).await?;
        self.settlement(date, Some(revision))
            .await?
            .ok_or_else(|| StoreError::Backend("a claimed revision vanished".into()))
    }

    async fn renew_lease(
        &self,
        fence: &Fence,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let fence = fence.clone();
        self.write(move |tx| {
            fenced_update(
                tx,
                &fence,
                "lease_expires_at = ?1",
                &[&instant_text(expires_at)],
            )
        })
        .await
    }

    async fn save_settlement_result(
        &self,
        fence: &Fence,
        result: &ComputedSettlement,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let fence = fence.clone();
        let result = result.clone();
        self.write(move |tx| {
            fenced_update(tx, &fence, "computed_at = ?1", &[&instant_text(now)])?;
            let date = date_text(fence.settlement_date);
            // A resumed run recomputes the same result: replace, never add.
            for table in ["settlement_lines", "settlement_totals"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE settlement_date = ?1 AND revision = ?2"),
                    params![date, fence.revision],
                )
                .map_err(backend)?;
            }
            for line in &result.lines {
                let keys: [&dyn rusqlite::ToSql; 2] = [&line.merchant_id, &line.currency.code()];
                insert_figures(
                    tx,
                    "settlement_lines",
                    ["merchant_id", "currency"],
                    &date,
                    fence.revision,
                    keys,
                    &line.figures,
                )?;
            }
            for total in &result.totals {
                let merchant_count = i64::try_from(total.merchant_count).unwrap_or(i64::MAX);
                let keys: [&dyn rusqlite::ToSql; 2] = [&total.currency.code(), &merchant_count];
                insert_figures(
                    tx,
                    "settlement_totals",
                    ["currency", "merchant_count"],
                    &date,
                    fence.revision,
                    keys,
                    &total.figures,
                )?;
            }
            super::fee_ledgers::write(tx, &result.fee_ledgers)?;
            Ok(())
        })
        .await
    }

    async fn fee_ledgers(
        &self,
        keys: Vec<PaymentKey>,
    ) -> Result<Vec<PaymentFeeLedger>, StoreError> {
        self.read(move |connection| super::fee_ledgers::read(connection, &keys))
            .await
    }

    async fn complete_settlement(
        &self,
        fence: &Fence,
        now: DateTime<Utc>,
    ) -> Result<Settlement, StoreError> {
        let fence_for_write = fence.clone();
        self.write(move |tx| {
            let now = instant_text(now);
            fenced_update(
                tx,
                &fence_for_write,
                "status = 'completed', completed_at = ?1, lease_expires_at = ?1, error = NULL",
                &[&now],
            )?;
            let computed: Option<String> = tx
                .query_row(
                    "SELECT computed_at FROM settlements WHERE settlement_date = ?1 AND revision = ?2",
                    params![date_text(fence_for_write.settlement_date), fence_for_write.revision],
                    |row| row.get(0),
                )
                .map_err(backend)?;
            if computed.is_none() {
                return Err(StoreError::Backend(
                    "a settlement cannot complete before its result is saved".into(),
                ));
            }
            Ok(())
        })
        .await?;
        self.settlement(fence.settlement_date, Some(fence.revision))
            .await?
            .ok_or_else(|| StoreError::Backend("a completed revision vanished".into()))
    }

    async fn fail_settlement(
        &self,
        fence: &Fence,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let fence = fence.clone();
        let error = error.to_string();
        self.write(move |tx| {
            fenced_update(
                tx,
                &fence,
                "status = 'failed', error = ?1, lease_expires_at = ?2",
                &[&error, &instant_text(now)],
            )
        })
        .await
    }

    async fn settlement(
        &self,
        settlement_date: NaiveDate,
        revision: Option<u32>,
    ) -> Result<Option<Settlement>, StoreError> {
        self.read(move |connection| settlement_with_totals(connection, settlement_date, revision))
            .await
    }

    async fn settlement_revisions(
        &self,
        settlement_date: NaiveDate,
    ) -> Result<Vec<Settlement>, StoreError> {
        self.read(move |connection| {
            let revisions = query_all(
                connection,
                &format!("SELECT {SETTLEMENT_COLUMNS} FROM settlements WHERE settlement_date = ?1 ORDER BY revision"),
                params![date_text(settlement_date)],
                rows::settlement,
            )?;
            revisions.into_iter().map(|s| with_totals(connection, s)).collect()
        })
        .await
    }

    async fn settlement_history(
        &self,
        filter: &HistoryFilter,
    ) -> Result<Vec<Settlement>, StoreError> {
        let filter = filter.clone();
        self.read(move |connection| {
            let latest_only = if filter.all_revisions {
                "1 = 1"
            } else {
                "s.revision = (SELECT MAX(revision) FROM settlements WHERE settlement_date = s.settlement_date)"
            };
            let sql = format!(
                "SELECT {columns} FROM settlements s WHERE {latest_only} \
                 AND (?1 IS NULL OR s.settlement_date >= ?1) AND (?2 IS NULL OR s.settlement_date <= ?2) \
                 AND (?3 IS NULL OR s.status = ?3) \
                 ORDER BY s.settlement_date DESC, s.revision DESC LIMIT ?4 OFFSET ?5",
                columns = SETTLEMENT_COLUMNS
                    .split(", ")
                    .map(|c| format!("s.{}", c.trim()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            let limit = if filter.limit == 0 { u32::MAX } else { filter.limit };
            // SQLite's OFFSET is a signed 64-bit integer: an offset beyond it is past any end.
            let Ok(offset) = i64::try_from(filter.offset) else {
                return Ok(Vec::new());
            };
            let found = query_all(
                connection,
                &sql,
                params![
                    filter.from.map(date_text),
                    filter.to.map(date_text),
                    filter.status.map(|s| s.as_str()),
                    limit,
                    offset
                ],
                rows::settlement,
            )?;
            found.into_iter().map(|s| with_totals(connection, s)).collect()
        })
        .await
    }

    async fn settlement_lines(
        &self,
        settlement_date: NaiveDate,
        revision: u32,
    ) -> Result<Vec<SettlementLine>, StoreError> {
        self.read(move |connection| {
            query_all(
                connection,
                &format!(
                    "SELECT merchant_id, currency, {FIGURE_COLUMNS} FROM settlement_lines \
                     WHERE settlement_date = ?1 AND revision = ?2 ORDER BY merchant_id, currency"
                ),
                params![date_text(settlement_date), revision],
                rows::line,
            )
        })
        .await
    }

    async fn settlement_lines_page(
        &self,
        settlement_date: NaiveDate,
        revision: u32,
        query: &LinesQuery,
    ) -> Result<LinesPage, StoreError> {
        let query = query.clone();
        self.read(move |connection| {
            // One snapshot: the count and the page agree.
            let snapshot = connection.unchecked_transaction().map_err(backend)?;
            let date = date_text(settlement_date);
            // `instr`: a plain substring test, case-sensitive, with no pattern characters.
            let contains = query.merchant_contains.filter(|text| !text.is_empty());
            let total: i64 = snapshot
                .prepare_cached(
                    "SELECT COUNT(*) FROM settlement_lines WHERE settlement_date = ?1 \
                     AND revision = ?2 AND (?3 IS NULL OR instr(merchant_id, ?3) > 0)",
                )
                .and_then(|mut statement| {
                    statement.query_row(params![date, revision, contains], |row| row.get(0))
                })
                .map_err(backend)?;
            let total = u64::try_from(total)
                .map_err(|_| StoreError::Corrupt(format!("a count of {total} lines")))?;
            // SQLite's OFFSET is a signed 64-bit integer: an offset beyond it is past any end.
            let offset = i64::try_from(query.offset).ok();
            let items = match offset {
                Some(offset) if query.limit > 0 => query_all(
                    &snapshot,
                    &format!(
                        "SELECT merchant_id, currency, {FIGURE_COLUMNS} FROM settlement_lines \
                         WHERE settlement_date = ?1 AND revision = ?2 \
                         AND (?3 IS NULL OR instr(merchant_id, ?3) > 0) \
                         ORDER BY {order} LIMIT ?4 OFFSET ?5",
                        order = lines_order(query.sort, query.descending),
                    ),
                    params![date, revision, contains, query.limit, offset],
                    rows::line,
                )?,
                _ => Vec::new(),
            };
            Ok(LinesPage { items, total })
        })
        .await
    }
}

/// The ORDER BY of a page of lines: the key, then merchant_id and currency, all one way (each
/// figure has an index in this order, scanned backwards for descending).
fn lines_order(sort: LineSort, descending: bool) -> String {
    let direction = if descending { "DESC" } else { "ASC" };
    let tie_break = format!("merchant_id {direction}, currency {direction}");
    match sort {
        LineSort::MerchantId => tie_break,
        figure => format!("{} {direction}, {tie_break}", figure.as_str()),
    }
}
