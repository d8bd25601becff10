//! Settlements in MongoDB: claims by insert (unique date + revision) or compare-and-set on the
//! revision's lease version; every write under a lease filters on that version (the fence).
//!
//! Lines are written before the revision records them: they carry the lease version that wrote
//! them, and a revision reads only the lines of its `lines_version`, so lines written by a run that
//! lost its lease are never read. A rerun first marks the previous revision `superseded`, which a
//! retry of it can no longer claim.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use mongodb::bson::{doc, Bson, Document};

use settle_core::compute::{ComputedSettlement, PaymentKey};
use settle_core::model::{Fence, PaymentFeeLedger, Settlement, SettlementLine, SettlementStatus};
use settle_core::store::claim::{already_running, decide, ClaimAction};
use settle_core::store::{
    ClaimRequest, HistoryFilter, LineSort, LinesPage, LinesQuery, SettlementStore, StoreError,
};

use super::collections::{SETTLEMENTS, SETTLEMENT_LINES};
use super::documents::{self as d, date_text, instant};
use super::{backend, is_duplicate_key, point, MongoStore};

/// Claims retried after losing a race to another claimant, before reporting what won.
const CLAIM_ATTEMPTS: usize = 8;
/// Lines inserted per request.
const LINE_BATCH: usize = 1_000;

fn revision_filter(date: NaiveDate, revision: u32) -> Document {
    doc! { "settlement_date": date_text(date), "revision": i64::from(revision) }
}

/// The filter of a fenced write: the revision, still running, under this lease version.
fn fence_filter(fence: &Fence) -> Document {
    let mut filter = revision_filter(fence.settlement_date, fence.revision);
    filter.insert("lease_version", fence.lease_version);
    filter.insert("status", SettlementStatus::Running.as_str());
    filter
}

fn new_revision(
    request: &ClaimRequest,
    revision: u32,
    reason: Option<&str>,
) -> Result<Document, StoreError> {
    Ok(doc! {
        "settlement_date": date_text(request.settlement_date),
        "revision": i64::from(revision),
        "status": SettlementStatus::Running.as_str(),
        "trigger": request.trigger.as_str(),
        "requested_by": &request.requested_by,
        "reason": reason.map(str::to_string),
        "calendar": d::to_nested(&request.calendar)?,
        "fee_schedule": d::to_nested(&request.fee_schedule)?,
        "window_start": instant(request.window.start),
        "window_end": instant(request.window.end),
        "lease_owner": &request.owner,
        "lease_expires_at": instant(request.now + request.lease_duration),
        "lease_version": 1_i64,
        "attempts": 1_i64,
        "created_at": instant(request.now),
        "started_at": instant(request.now),
        "computed_at": Bson::Null,
        "completed_at": Bson::Null,
        "error": Bson::Null,
        "superseded": false,
    })
}

impl MongoStore {
    async fn latest_revision(&self, date: NaiveDate) -> Result<Option<Settlement>, StoreError> {
        let found = self
            .find_all(
                SETTLEMENTS,
                doc! { "settlement_date": date_text(date) },
                doc! { "revision": -1 },
                Some(1),
                None,
            )
            .await?;
        found.first().map(d::settlement).transpose()
    }

    async fn is_superseded(&self, date: NaiveDate, revision: u32) -> Result<bool, StoreError> {
        let found = self
            .collection(SETTLEMENTS)
            .find_one(revision_filter(date, revision))
            .await
            .map_err(backend)?;
        Ok(found.is_some_and(|document| document.get_bool("superseded").unwrap_or(false)))
    }

    /// Inserts a brand-new revision; `false` if another claimant inserted it first.
    async fn insert_revision(
        &self,
        request: &ClaimRequest,
        revision: u32,
        reason: Option<&str>,
    ) -> Result<bool, StoreError> {
        match self
            .collection(SETTLEMENTS)
            .insert_one(new_revision(request, revision, reason)?)
            .await
        {
            Ok(_) => Ok(true),
            Err(error) if is_duplicate_key(&error) => Ok(false),
            Err(error) => Err(backend(error)),
        }
    }

    /// Takes over a revision whose lease expired (or that failed): new owner, version + 1.
    async fn take_over(
        &self,
        current: &Settlement,
        request: &ClaimRequest,
    ) -> Result<bool, StoreError> {
        // The compare-and-set covers the whole state the decision read: its fencing version, its
        // status and, for a running revision, a lease still expired. A run that completed (or
        // renewed its lease) after the read is not reopened.
        let mut filter = revision_filter(current.settlement_date, current.revision);
        filter.insert("lease_version", current.lease_version);
        filter.insert("superseded", doc! { "$ne": true });
        filter.insert("status", current.status.as_str());
        if current.status == SettlementStatus::Running {
            filter.insert("lease_expires_at", doc! { "$lte": instant(request.now) });
        }
        let update = doc! {
            "$set": {
                "status": SettlementStatus::Running.as_str(),
                "lease_owner": &request.owner,
                "lease_expires_at": instant(request.now + request.lease_duration),
                "started_at": instant(request.now),
                "error": Bson::Null,
            },
            "$inc": { "lease_version": 1_i64, "attempts": 1_i64 },
        };
        let result = self
            .collection(SETTLEMENTS)
            .update_one(filter, update)
            .await
            .map_err(backend)?;
        Ok(result.matched_count == 1)
    }

    /// One attempt at a claim: `Ok(None)` when a concurrent claimant changed the revision first.
    async fn try_claim(&self, request: &ClaimRequest) -> Result<Option<u32>, StoreError> {
        let date = request.settlement_date;
        let latest = self.latest_revision(date).await?;
        match decide(request, latest.as_ref())? {
            ClaimAction::InsertFirst => {
                // Between the read that found no revision and the insert the unique key decides.
                point("store.claim.before_insert").await?;
                Ok(self.insert_revision(request, 1, None).await?.then_some(1))
            }
            ClaimAction::TakeOver => {
                let current = latest.expect("a takeover has a revision");
                if self.is_superseded(date, current.revision).await? {
                    return Err(StoreError::RevisionMoved {
                        settlement_date: date,
                        expected: current.revision,
                        found: current.revision + 1,
                    });
                }
                // Between the read the decision was made on and its compare-and-set.
                point("store.claim.before_takeover").await?;
                Ok(self
                    .take_over(&current, request)
                    .await?
                    .then_some(current.revision))
            }
            ClaimAction::InsertNext { revision, reason } => {
                // Supersede first, so that no retry can claim the old revision meanwhile.
                let previous = revision - 1;
                let mut filter = revision_filter(date, previous);
                filter.insert(
                    "status",
                    doc! { "$in": [SettlementStatus::Completed.as_str(), SettlementStatus::Failed.as_str()] },
                );
                let marked = self
                    .collection(SETTLEMENTS)
                    .update_one(filter, doc! { "$set": { "superseded": true } })
                    .await
                    .map_err(backend)?;
                if marked.matched_count == 0 {
                    return Ok(None);
                }
                if self
                    .insert_revision(request, revision, Some(reason))
                    .await?
                {
                    Ok(Some(revision))
                } else {
                    Err(StoreError::RevisionMoved {
                        settlement_date: date,
                        expected: previous,
                        found: revision,
                    })
                }
            }
        }
    }

    /// A fenced update: `LeaseLost` unless the revision still runs under the fence's version.
    async fn fenced_update(&self, fence: &Fence, update: Document) -> Result<(), StoreError> {
        let result = self
            .collection(SETTLEMENTS)
            .update_one(fence_filter(fence), update)
            .await
            .map_err(backend)?;
        if result.matched_count == 1 {
            Ok(())
        } else {
            Err(StoreError::LeaseLost(fence.clone()))
        }
    }

    /// Checks the fence without changing anything meaningful.
    pub(crate) async fn check_fence(&self, fence: &Fence) -> Result<(), StoreError> {
        self.fenced_update(fence, doc! { "$set": { "lease_checked": true } })
            .await
    }
}

#[async_trait]
impl SettlementStore for MongoStore {
    async fn claim_settlement(&self, request: ClaimRequest) -> Result<Settlement, StoreError> {
        for _ in 0..CLAIM_ATTEMPTS {
            if let Some(revision) = self.try_claim(&request).await? {
                return self
                    .settlement(request.settlement_date, Some(revision))
                    .await?
                    .ok_or_else(|| StoreError::Backend("a claimed revision vanished".into()));
            }
        }
        // Lost every race: report what holds the date now.
        match self.latest_revision(request.settlement_date).await? {
            Some(current) => Err(already_running(&current)),
            None => Err(StoreError::Backend("could not claim the date".into())),
        }
    }

    async fn renew_lease(
        &self,
        fence: &Fence,
        expires_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.fenced_update(
            fence,
            doc! { "$set": { "lease_expires_at": instant(expires_at) } },
        )
        .await
    }

    async fn save_settlement_result(
        &self,
        fence: &Fence,
        result: &ComputedSettlement,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.check_fence(fence).await?;
        let date = date_text(fence.settlement_date);
        let revision = i64::from(fence.revision);
        let lines = self.collection(SETTLEMENT_LINES);
        // Lines of this lease version: replaced, so a resumed save never adds twice.
        lines
            .delete_many(doc! { "settlement_date": &date, "revision": revision, "lease_version": fence.lease_version })
            .await
            .map_err(backend)?;
        for chunk in result.lines.chunks(LINE_BATCH) {
            let documents: Vec<Document> = chunk
                .iter()
                .map(|line| {
                    let mut document = d::figures_document(&line.figures);
                    document.insert("settlement_date", &date);
                    document.insert("revision", revision);
                    document.insert("lease_version", fence.lease_version);
                    document.insert("merchant_id", &line.merchant_id);
                    document.insert("currency", line.currency.code());
                    document
                })
                .collect();
            lines.insert_many(documents).await.map_err(backend)?;
        }
        // Ledgers before the result: a run stopped in between left returns its successor reuses.
        point("store.save.before_ledgers").await?;
        self.check_fence(fence).await?;
        self.write_fee_ledgers(&result.fee_ledgers).await?;
        let totals: Vec<Document> = result.totals.iter().map(d::totals_document).collect();
        self.fenced_update(
            fence,
            doc! { "$set": { "totals": totals, "computed_at": instant(now), "lines_version": fence.lease_version } },
        )
        .await?;
        // Lines left by runs that lost this revision's lease are never read; drop them.
        lines
            .delete_many(doc! { "settlement_date": &date, "revision": revision, "lease_version": { "$ne": fence.lease_version } })
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn fee_ledgers(
        &self,
        keys: Vec<PaymentKey>,
    ) -> Result<Vec<PaymentFeeLedger>, StoreError> {
        self.read_fee_ledgers(&keys).await
    }

    async fn complete_settlement(
        &self,
        fence: &Fence,
        now: DateTime<Utc>,
    ) -> Result<Settlement, StoreError> {
        // Between the payouts and the completion (a stale holder wakes here with its fence).
        point("store.complete.before_write").await?;
        let mut filter = fence_filter(fence);
        filter.insert("computed_at", doc! { "$ne": Bson::Null });
        let update = doc! {
            "$set": {
                "status": SettlementStatus::Completed.as_str(),
                "completed_at": instant(now),
                "lease_expires_at": instant(now),
                "error": Bson::Null,
            }
        };
        let result = self
            .collection(SETTLEMENTS)
            .update_one(filter, update)
            .await
            .map_err(backend)?;
        if result.matched_count == 0 {
            self.check_fence(fence).await?;
            return Err(StoreError::Backend(
                "a settlement cannot complete before its result is saved".into(),
            ));
        }
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
        self.fenced_update(
            fence,
            doc! { "$set": {
                "status": SettlementStatus::Failed.as_str(),
                "error": error,
                "lease_expires_at": instant(now),
            } },
        )
        .await
    }

    async fn settlement(
        &self,
        settlement_date: NaiveDate,
        revision: Option<u32>,
    ) -> Result<Option<Settlement>, StoreError> {
        match revision {
            None => self.latest_revision(settlement_date).await,
            Some(revision) => self
                .collection(SETTLEMENTS)
                .find_one(revision_filter(settlement_date, revision))
                .await
                .map_err(backend)?
                .as_ref()
                .map(d::settlement)
                .transpose(),
        }
    }

    async fn settlement_revisions(
        &self,
        settlement_date: NaiveDate,
    ) -> Result<Vec<Settlement>, StoreError> {
        self.find_all(
            SETTLEMENTS,
            doc! { "settlement_date": date_text(settlement_date) },
            doc! { "revision": 1 },
            None,
            None,
        )
        .await?
        .iter()
        .map(d::settlement)
        .collect()
    }

    async fn settlement_history(
        &self,
        filter: &HistoryFilter,
    ) -> Result<Vec<Settlement>, StoreError> {
        let mut range = Document::new();
        if let Some(from) = filter.from {
            range.insert("$gte", date_text(from));
        }
        if let Some(to) = filter.to {
            range.insert("$lte", date_text(to));
        }
        let query = if range.is_empty() {
            doc! {}
        } else {
            doc! { "settlement_date": range }
        };
        let documents = self
            .find_all(
                SETTLEMENTS,
                query,
                doc! { "settlement_date": -1, "revision": -1 },
                None,
                None,
            )
            .await?;
        let mut settlements = Vec::with_capacity(documents.len());
        let mut previous_date = None;
        for document in &documents {
            let settlement = d::settlement(document)?;
            // Newest revision first within a date: the first seen is the latest.
            let latest = previous_date != Some(settlement.settlement_date);
            previous_date = Some(settlement.settlement_date);
            if !(filter.all_revisions || latest) {
                continue;
            }
            if filter
                .status
                .is_some_and(|status| status != settlement.status)
            {
                continue;
            }
            settlements.push(settlement);
        }
        let limit = if filter.limit == 0 {
            usize::MAX
        } else {
            filter.limit as usize
        };
        Ok(settlements
            .into_iter()
            .skip(usize::try_from(filter.offset).unwrap_or(usize::MAX))
            .take(limit)
            .collect())
    }

    async fn settlement_lines(
        &self,
        settlement_date: NaiveDate,
        revision: u32,
    ) -> Result<Vec<SettlementLine>, StoreError> {
        let Some(document) = self
            .collection(SETTLEMENTS)
            .find_one(revision_filter(settlement_date, revision))
            .await
            .map_err(backend)?
        else {
            return Ok(Vec::new());
        };
        let Some(lines_version) = d::optional_integer(&document, "lines_version")? else {
            return Ok(Vec::new());
        };
        self.find_all(
            SETTLEMENT_LINES,
            doc! {
                "settlement_date": date_text(settlement_date),
                "revision": i64::from(revision),
                "lease_version": lines_version,
            },
            doc! { "merchant_id": 1, "currency": 1 },
            None,
            None,
        )
        .await?
        .iter()
        .map(d::line)
        .collect()
    }

    async fn settlement_lines_page(
        &self,
        settlement_date: NaiveDate,
        revision: u32,
        query: &LinesQuery,
    ) -> Result<LinesPage, StoreError> {
        let Some(document) = self
            .collection(SETTLEMENTS)
            .find_one(revision_filter(settlement_date, revision))
            .await
            .map_err(backend)?
        else {
            return Ok(LinesPage::default());
        };
        let Some(lines_version) = d::optional_integer(&document, "lines_version")? else {
            return Ok(LinesPage::default());
        };
        let mut filter = doc! {
            "settlement_date": date_text(settlement_date),
            "revision": i64::from(revision),
            "lease_version": lines_version,
        };
        if let Some(text) = query.merchant_contains.as_deref().filter(|t| !t.is_empty()) {
            // A byte-wise substring test: case-sensitive, no pattern characters to escape.
            filter.insert(
                "$expr",
                doc! { "$gte": [{ "$indexOfBytes": ["$merchant_id", text] }, 0] },
            );
        }
        let total = self
            .count_matching(SETTLEMENT_LINES, filter.clone())
            .await?;
        // MongoDB reads a limit of 0 as "no limit" and takes a signed 64-bit skip: an offset
        // beyond it is past any end, as in SQLite.
        if query.limit == 0 || i64::try_from(query.offset).is_err() {
            return Ok(LinesPage {
                items: Vec::new(),
                total,
            });
        }
        let items = self
            .find_all(
                SETTLEMENT_LINES,
                filter,
                lines_order(query.sort, query.descending),
                Some(i64::from(query.limit)),
                Some(query.offset),
            )
            .await?
            .iter()
            .map(d::line)
            .collect::<Result<_, _>>()?;
        Ok(LinesPage { items, total })
    }
}

/// The sort of a page of lines: the key, then merchant_id and currency, all one way (each figure
/// has an index in this order, walked backwards for descending).
fn lines_order(sort: LineSort, descending: bool) -> Document {
    let direction = if descending { -1 } else { 1 };
    let mut order = Document::new();
    if sort != LineSort::MerchantId {
        order.insert(sort.as_str(), direction);
    }
    order.insert("merchant_id", direction);
    order.insert("currency", direction);
    order
}
