//! Payouts, merchant holds and carried-forward amounts in MongoDB, with the semantics of the SQLite
//! adapter: planning is fenced and idempotent per revision, status changes are compare-and-set.
//!
//! No multi-document transaction is used. Planning checks the fence, then decides each line once
//! per revision, whoever plans it: open carry-forwards are applied to the date (per document,
//! `applied_date: null` → this date, tagged with the planner), what the date already settled is
//! read back (payouts not failed, carry-forwards applied to or carried from it), and the decision
//! (the difference, and which applied carry-forwards it counted) is inserted into `line_plans`
//! under the line's unique key (its payout reference) before anything it decides is written. Then
//! the decision is enacted: a payout (`_id` = its reference) or a carry-forward (unique on
//! origin_date, origin_revision, merchant_id, currency), each written once. A planner that finds
//! a decision enacts it (a resumed run, a retry); one whose decision loses to another's (a stale
//! holder, whose fence was checked once before the first write, and the new holder planning at
//! once) takes back the carry-forwards it applied that the winner did not count and enacts the
//! winner's, so no amount is paid or carried twice and no debt is lost. A line planned before
//! decisions were kept (or copied from SQLite) is known by its payout or carry-forward.
//!
//! Holds: `hold_merchant` writes the hold before holding pending payouts, `release_merchant`
//! deletes it before releasing held ones. A plan that read the holds before a concurrent change
//! reads the merchant's hold again after inserting a payout and corrects its status by
//! compare-and-set; the hold's own sweep catches every payout inserted before that change, so no
//! payout is left pending under a hold or held without one. Repeating an interrupted hold or release
//! finishes it.
//!
//! In-flight claims: `claim_payout_send` is one `findOneAndUpdate` whose filter is the whole
//! compare-and-set (status as seen, claim free, expired or the claimer's own); finishing a send
//! filters on the claim too, and unsets it.
//!
//! Documents: `payouts` (`_id` = reference, `settlement_date`, `revision`, `merchant_id`,
//! `currency`, `amount_minor` Int64, `status`, `provider_payout_id`, `attempts`, `last_error`,
//! `created_at`, `updated_at`, and while a sender has it in flight `claimed_by` and
//! `claim_expires_at`); `carry_forwards` (`merchant_id`, `currency`, `amount_minor` Int64,
//! `origin_date`, `origin_revision`, `applied_date`, `applied_revision`, `applied_by`,
//! `created_at`); `line_plans` (`_id` = the line's payout reference, `settlement_date`,
//! `revision`, `merchant_id`, `currency`, `amount_minor` Int64 (the difference decided),
//! `counted` (ids of the applied carry-forwards it counted), `created_at`); `merchant_holds`
//! (`_id` = merchant id, `reason`, `held_by`, `held_at`).

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::ReturnDocument;

use settle_core::model::{
    amount_due, payout_reference, CarryForward, Fence, LineDecision, Payout, PayoutStatus,
    SettlementLine,
};
use settle_core::store::record;
use settle_core::store::{
    MerchantHold, PayoutClaim, PayoutClaimOutcome, PayoutFilter, PayoutPlan, PayoutStore,
    PayoutUpdate, StoreError,
};

use super::collections::{CARRY_FORWARDS, LINE_PLANS, MERCHANT_HOLDS, PAYOUTS};
use super::documents::{self as d, date_text, instant};
use super::{backend, is_duplicate_key, point, MongoStore};

/// Upserts of one hold retried after a duplicate key (two concurrent first holds).
const HOLD_ATTEMPTS: usize = 3;

fn overflow(line: &SettlementLine) -> StoreError {
    StoreError::Backend(format!(
        "payout amounts of {} {} overflow",
        line.merchant_id, line.currency
    ))
}

fn payout(document: &Document) -> Result<Payout, StoreError> {
    record::payout(&d::Fields(document), "_id")
}

fn carry_forward(document: &Document) -> Result<CarryForward, StoreError> {
    record::carry_forward(&d::Fields(document))
}

fn hold(document: &Document) -> Result<MerchantHold, StoreError> {
    Ok(MerchantHold {
        merchant_id: d::text(document, "_id")?.to_string(),
        reason: d::text(document, "reason")?.to_string(),
        held_by: d::text(document, "held_by")?.to_string(),
        held_at: d::utc(document, "held_at")?,
    })
}

impl MongoStore {
    /// The payouts matching `filter`, by date, merchant, currency and revision.
    async fn payouts_in_order(&self, filter: Document) -> Result<Vec<Payout>, StoreError> {
        self.find_all(
            PAYOUTS,
            filter,
            doc! { "settlement_date": 1, "merchant_id": 1, "currency": 1, "revision": 1 },
            None,
            None,
        )
        .await?
        .iter()
        .map(payout)
        .collect()
    }

    /// The sum of `amount_minor` over what `filter` selects, refusing to overflow.
    async fn amount_sum(
        &self,
        collection: &str,
        filter: Document,
        line: &SettlementLine,
    ) -> Result<i64, StoreError> {
        let documents = self
            .find_all(collection, filter, doc! {}, None, None)
            .await?;
        documents.iter().try_fold(0_i64, |sum, document| {
            sum.checked_add(d::integer(document, "amount_minor")?)
                .ok_or_else(|| overflow(line))
        })
    }

    async fn held_merchants(&self) -> Result<BTreeSet<String>, StoreError> {
        self.find_all(MERCHANT_HOLDS, doc! {}, doc! { "_id": 1 }, None, None)
            .await?
            .iter()
            .map(|document| d::text(document, "_id").map(str::to_string))
            .collect()
    }

    /// Applies `update` by compare-and-set on its `from` status and, for a claimed send, on the
    /// claim (which it then releases). Leaving `pending`/`unknown` clears any claim.
    async fn apply_update(
        &self,
        update: &PayoutUpdate,
        claimed_by: Option<&str>,
    ) -> Result<Option<Payout>, StoreError> {
        let mut set = doc! {
            "status": update.to.as_str(),
            "last_error": update.last_error.clone().map(Bson::String).unwrap_or(Bson::Null),
            "updated_at": instant(update.now),
        };
        // A provider id once known is kept when this step learnt none.
        if let Some(id) = &update.provider_payout_id {
            set.insert("provider_payout_id", id);
        }
        if claimed_by.is_some() || !update.to.awaits_sending() {
            set.insert("claimed_by", Bson::Null);
            set.insert("claim_expires_at", Bson::Null);
        }
        let mut filter = doc! { "_id": &update.reference, "status": update.from.as_str() };
        if let Some(claimed_by) = claimed_by {
            filter.insert("claimed_by", claimed_by);
        }
        self.collection(PAYOUTS)
            .find_one_and_update(
                filter,
                doc! { "$set": set, "$inc": { "attempts": i64::from(update.attempts) } },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(backend)?
            .as_ref()
            .map(payout)
            .transpose()
    }

    async fn payout_by_reference(&self, reference: &str) -> Result<Option<Payout>, StoreError> {
        self.collection(PAYOUTS)
            .find_one(doc! { "_id": reference })
            .await
            .map_err(backend)?
            .as_ref()
            .map(payout)
            .transpose()
    }

    /// After inserting a payout with the status the plan's snapshot of holds gave it: reads the
    /// merchant's hold again and moves the payout if a hold or release happened meanwhile.
    async fn follow_hold(
        &self,
        reference: &str,
        merchant_id: &str,
        inserted_as: PayoutStatus,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let current = self
            .collection(MERCHANT_HOLDS)
            .find_one(doc! { "_id": merchant_id })
            .await
            .map_err(backend)?;
        let (to, updated_at) = match (inserted_as, &current) {
            (PayoutStatus::Pending, Some(hold)) => (PayoutStatus::Held, d::utc(hold, "held_at")?),
            (PayoutStatus::Held, None) => (PayoutStatus::Pending, now),
            _ => return Ok(()),
        };
        self.collection(PAYOUTS)
            .update_one(
                doc! { "_id": reference, "status": inserted_as.as_str() },
                doc! { "$set": { "status": to.as_str(), "updated_at": instant(updated_at) } },
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    /// Plans one line: applies open carry-forwards, then pays or carries the difference between
    /// what the date owes the merchant and what it already settled.
    /// Whether this revision already paid or carried the line. A retry leaves such a line alone:
    /// applying carry-forwards opened since would need a second carry-forward of the revision,
    /// which its unique key refuses, and the debt would be lost.
    async fn line_planned(&self, fence: &Fence, line: &SettlementLine) -> Result<bool, StoreError> {
        let reference = payout_reference(
            fence.settlement_date,
            line.currency,
            fence.revision,
            &line.merchant_id,
        );
        let paid = self
            .collection(PAYOUTS)
            .count_documents(doc! { "_id": &reference })
            .await
            .map_err(backend)?;
        if paid > 0 {
            return Ok(true);
        }
        let carried = self
            .collection(CARRY_FORWARDS)
            .count_documents(doc! {
                "merchant_id": &line.merchant_id,
                "currency": line.currency.code(),
                "origin_date": date_text(fence.settlement_date),
                "origin_revision": i64::from(fence.revision),
            })
            .await
            .map_err(backend)?;
        Ok(carried > 0)
    }

    /// Plans one line, once per revision whoever plans it: the decision (pay, carry or nothing,
    /// and which applied carry-forwards it counted) is one document under the line's unique key,
    /// written before anything it decides. A planner that finds a decision enacts it; one whose
    /// decision loses to another's (a stale holder and the new one planning at once) takes back
    /// the carry-forwards it applied that the winner did not count, and enacts the winner's.
    async fn plan_line(
        &self,
        fence: &Fence,
        line: &SettlementLine,
        held: &BTreeSet<String>,
        now: DateTime<Utc>,
        plan: &mut PayoutPlan,
    ) -> Result<(), StoreError> {
        let date = date_text(fence.settlement_date);
        let revision = i64::from(fence.revision);
        let (merchant, currency) = (line.merchant_id.as_str(), line.currency.code());
        let key = payout_reference(
            fence.settlement_date,
            line.currency,
            fence.revision,
            merchant,
        );
        if let Some(decision) = self.line_decision(&key).await? {
            return self.enact(fence, line, &decision, held, now, plan).await;
        }
        // Planned before decisions were kept (or by SQLite before a migration).
        if self.line_planned(fence, line).await? {
            return Ok(());
        }
        // Each open carry-forward is applied by its own compare-and-set (still unapplied → this
        // date), tagged with this planner: one applied by a concurrent plan stays that plan's.
        let planner = uuid::Uuid::new_v4().to_string();
        self.collection(CARRY_FORWARDS)
            .update_many(
                doc! {
                    "merchant_id": merchant,
                    "currency": currency,
                    "applied_date": Bson::Null,
                    "origin_date": { "$ne": &date },
                },
                doc! { "$set": {
                    "applied_date": &date,
                    "applied_revision": revision,
                    "applied_by": &planner,
                } },
            )
            .await
            .map_err(backend)?;
        let applied = self
            .find_all(
                CARRY_FORWARDS,
                doc! { "merchant_id": merchant, "currency": currency, "applied_date": &date },
                doc! { "_id": 1 },
                None,
                None,
            )
            .await?;
        let mut carried_in: i64 = 0;
        let mut counted: Vec<Bson> = Vec::with_capacity(applied.len());
        for document in &applied {
            carried_in = carried_in
                .checked_add(d::integer(document, "amount_minor")?)
                .ok_or_else(|| overflow(line))?;
            counted.push(document.get("_id").cloned().unwrap_or(Bson::Null));
        }
        let paid = self
            .amount_sum(
                PAYOUTS,
                doc! {
                    "settlement_date": &date,
                    "merchant_id": merchant,
                    "currency": currency,
                    "status": { "$ne": PayoutStatus::Failed.as_str() },
                },
                line,
            )
            .await?;
        // Amounts this date already carried forward count as settled: a later revision that raises
        // the net again must pay them back.
        let carried_out = self
            .amount_sum(
                CARRY_FORWARDS,
                doc! { "merchant_id": merchant, "currency": currency, "origin_date": &date },
                line,
            )
            .await?;
        let difference = amount_due(line.figures.net_minor, carried_in, paid, carried_out)
            .ok_or_else(|| overflow(line))?;
        point("store.plan.before_decision").await?;
        let decided = doc! {
            "_id": &key,
            "settlement_date": &date,
            "revision": revision,
            "merchant_id": merchant,
            "currency": currency,
            "amount_minor": difference,
            "counted": counted,
            "created_at": instant(now),
        };
        let decision = match self
            .collection(LINE_PLANS)
            .insert_one(decided.clone())
            .await
        {
            Ok(_) => decided,
            Err(error) if is_duplicate_key(&error) => {
                let winner = self
                    .line_decision(&key)
                    .await?
                    .ok_or_else(|| StoreError::Backend(format!("the plan of {key} vanished")))?;
                let kept = winner.get_array("counted").cloned().unwrap_or_default();
                self.collection(CARRY_FORWARDS)
                    .update_many(
                        doc! { "applied_by": &planner, "_id": { "$nin": kept } },
                        doc! { "$set": {
                            "applied_date": Bson::Null,
                            "applied_revision": Bson::Null,
                            "applied_by": Bson::Null,
                        } },
                    )
                    .await
                    .map_err(backend)?;
                winner
            }
            Err(error) => return Err(backend(error)),
        };
        self.enact(fence, line, &decision, held, now, plan).await
    }

    async fn line_decision(&self, key: &str) -> Result<Option<Document>, StoreError> {
        self.collection(LINE_PLANS)
            .find_one(doc! { "_id": key })
            .await
            .map_err(backend)
    }

    /// Writes what a line's decision says (idempotently: a write done before hits its key).
    async fn enact(
        &self,
        fence: &Fence,
        line: &SettlementLine,
        decision: &Document,
        held: &BTreeSet<String>,
        now: DateTime<Utc>,
        plan: &mut PayoutPlan,
    ) -> Result<(), StoreError> {
        let date = date_text(fence.settlement_date);
        let revision = i64::from(fence.revision);
        let (merchant, currency) = (line.merchant_id.as_str(), line.currency.code());
        let difference = d::integer(decision, "amount_minor")?;
        let decision = LineDecision::of(
            fence.settlement_date,
            fence.revision,
            line,
            difference,
            held.contains(merchant),
        );
        match decision {
            LineDecision::Pay {
                reference,
                amount_minor,
                status,
            } => {
                let inserted = self
                    .collection(PAYOUTS)
                    .insert_one(doc! {
                        "_id": &reference,
                        "settlement_date": &date,
                        "revision": revision,
                        "merchant_id": merchant,
                        "currency": currency,
                        "amount_minor": amount_minor,
                        "status": status.as_str(),
                        "provider_payout_id": Bson::Null,
                        "attempts": 0_i64,
                        "last_error": Bson::Null,
                        "created_at": instant(now),
                        "updated_at": instant(now),
                    })
                    .await;
                match inserted {
                    Ok(_) => {
                        self.follow_hold(&reference, merchant, status, now).await?;
                        plan.created
                            .extend(self.payout_by_reference(&reference).await?);
                    }
                    // Planned before (this revision's reference is taken): nothing new.
                    Err(error) if is_duplicate_key(&error) => {}
                    Err(error) => return Err(backend(error)),
                }
            }
            LineDecision::Carry(carried) => {
                let inserted = self
                    .collection(CARRY_FORWARDS)
                    .insert_one(doc! {
                        "merchant_id": merchant,
                        "currency": currency,
                        "amount_minor": carried.amount_minor,
                        "origin_date": &date,
                        "origin_revision": revision,
                        "applied_date": Bson::Null,
                        "applied_revision": Bson::Null,
                        "created_at": instant(now),
                    })
                    .await;
                match inserted {
                    Ok(_) => plan.carried.push(carried),
                    Err(error) if is_duplicate_key(&error) => {}
                    Err(error) => return Err(backend(error)),
                }
            }
            LineDecision::Nothing => {}
        }
        Ok(())
    }
}

#[async_trait]
impl PayoutStore for MongoStore {
    async fn plan_payouts(
        &self,
        fence: &Fence,
        lines: &[SettlementLine],
        now: DateTime<Utc>,
    ) -> Result<PayoutPlan, StoreError> {
        // Planning is a write under the lease: only the current holder may plan.
        self.check_fence(fence).await?;
        let held = self.held_merchants().await?;
        let mut plan = PayoutPlan::default();
        for line in lines {
            self.plan_line(fence, line, &held, now, &mut plan).await?;
        }
        Ok(plan)
    }

    async fn payouts(&self, settlement_date: NaiveDate) -> Result<Vec<Payout>, StoreError> {
        self.find_all(
            PAYOUTS,
            doc! { "settlement_date": date_text(settlement_date) },
            doc! { "merchant_id": 1, "currency": 1, "revision": 1 },
            None,
            None,
        )
        .await?
        .iter()
        .map(payout)
        .collect()
    }

    async fn payouts_awaiting(
        &self,
        settlement_date: Option<NaiveDate>,
        merchant_id: Option<String>,
    ) -> Result<Vec<Payout>, StoreError> {
        let mut filter = doc! {
            "status": { "$in": [PayoutStatus::Pending.as_str(), PayoutStatus::Unknown.as_str()] },
        };
        if let Some(date) = settlement_date {
            filter.insert("settlement_date", date_text(date));
        }
        if let Some(merchant_id) = merchant_id {
            filter.insert("merchant_id", merchant_id);
        }
        self.payouts_in_order(filter).await
    }

    async fn update_payout(&self, update: &PayoutUpdate) -> Result<Option<Payout>, StoreError> {
        self.apply_update(update, None).await
    }

    async fn claim_payout_send(
        &self,
        claim: &PayoutClaim,
    ) -> Result<PayoutClaimOutcome, StoreError> {
        if !claim.from.awaits_sending() {
            return Ok(PayoutClaimOutcome::Moved);
        }
        let now = instant(claim.now);
        let claimed = self
            .collection(PAYOUTS)
            .find_one_and_update(
                doc! {
                    "_id": &claim.reference,
                    "status": claim.from.as_str(),
                    "$or": [
                        { "claimed_by": Bson::Null },
                        { "claimed_by": &claim.claimed_by },
                        { "claim_expires_at": { "$lte": now } },
                    ],
                },
                doc! { "$set": {
                    "status": PayoutStatus::Unknown.as_str(),
                    "claimed_by": &claim.claimed_by,
                    "claim_expires_at": instant(claim.expires_at),
                    "updated_at": now,
                } },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(backend)?;
        if let Some(document) = claimed {
            return Ok(PayoutClaimOutcome::Claimed(payout(&document)?));
        }
        let current = self
            .collection(PAYOUTS)
            .find_one(doc! { "_id": &claim.reference, "status": claim.from.as_str() })
            .await
            .map_err(backend)?;
        let holder = match &current {
            Some(document) => (
                d::optional_text(document, "claimed_by")?,
                d::optional_utc(document, "claim_expires_at")?,
            ),
            None => (None, None),
        };
        Ok(match holder {
            // Compared at the stored (millisecond) precision, as the filter above did.
            (Some(claimed_by), Some(expires_at))
                if expires_at.timestamp_millis() > claim.now.timestamp_millis() =>
            {
                PayoutClaimOutcome::InFlight {
                    claimed_by,
                    expires_at,
                }
            }
            _ => PayoutClaimOutcome::Moved,
        })
    }

    async fn finish_payout_send(
        &self,
        update: &PayoutUpdate,
        claimed_by: &str,
    ) -> Result<Option<Payout>, StoreError> {
        self.apply_update(update, Some(claimed_by)).await
    }

    async fn payouts_with_status(&self, filter: &PayoutFilter) -> Result<Vec<Payout>, StoreError> {
        let mut query = doc! { "status": filter.status.as_str() };
        if let Some(date) = filter.settlement_date {
            query.insert("settlement_date", date_text(date));
        }
        if let Some(before) = filter.updated_before {
            query.insert("updated_at", doc! { "$lt": instant(before) });
        }
        self.payouts_in_order(query).await
    }

    async fn hold_merchant(&self, hold: &MerchantHold) -> Result<u64, StoreError> {
        // The hold first: a plan that inserts a payout after this sees it (see `follow_hold`).
        let document = doc! {
            "_id": &hold.merchant_id,
            "reason": &hold.reason,
            "held_by": &hold.held_by,
            "held_at": instant(hold.held_at),
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .collection(MERCHANT_HOLDS)
                .replace_one(doc! { "_id": &hold.merchant_id }, document.clone())
                .upsert(true)
                .await
            {
                Ok(_) => break,
                Err(error) if is_duplicate_key(&error) && attempt < HOLD_ATTEMPTS => continue,
                Err(error) => return Err(backend(error)),
            }
        }
        let held = self
            .collection(PAYOUTS)
            .update_many(
                doc! { "merchant_id": &hold.merchant_id, "status": PayoutStatus::Pending.as_str() },
                doc! { "$set": { "status": PayoutStatus::Held.as_str(), "updated_at": instant(hold.held_at) } },
            )
            .await
            .map_err(backend)?;
        Ok(held.modified_count)
    }

    async fn release_merchant(
        &self,
        merchant_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<u64>, StoreError> {
        // The hold goes first: a plan that inserts a payout after this sees it gone (see
        // `follow_hold`). Payouts still held without a hold (a release interrupted after its
        // delete) are released too, so repeating an interrupted release finishes it.
        let removed = self
            .collection(MERCHANT_HOLDS)
            .delete_one(doc! { "_id": merchant_id })
            .await
            .map_err(backend)?
            .deleted_count;
        let released = self
            .collection(PAYOUTS)
            .update_many(
                doc! { "merchant_id": merchant_id, "status": PayoutStatus::Held.as_str() },
                doc! { "$set": { "status": PayoutStatus::Pending.as_str(), "updated_at": instant(now) } },
            )
            .await
            .map_err(backend)?
            .modified_count;
        Ok((removed > 0 || released > 0).then_some(released))
    }

    async fn merchant_holds(&self) -> Result<Vec<MerchantHold>, StoreError> {
        self.find_all(MERCHANT_HOLDS, doc! {}, doc! { "_id": 1 }, None, None)
            .await?
            .iter()
            .map(hold)
            .collect()
    }

    async fn carry_forwards(&self, open_only: bool) -> Result<Vec<CarryForward>, StoreError> {
        let filter = if open_only {
            doc! { "applied_date": Bson::Null }
        } else {
            doc! {}
        };
        self.find_all(
            CARRY_FORWARDS,
            filter,
            doc! { "merchant_id": 1, "currency": 1, "origin_date": 1, "origin_revision": 1 },
            None,
            None,
        )
        .await?
        .iter()
        .map(carry_forward)
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;
    use settle_core::calendar::BusinessCalendar;
    use settle_core::model::fees::FeeSchedule;
    use settle_core::model::{RunTrigger, SettlementFigures};
    use settle_core::money::Currency;
    use settle_core::store::{ClaimMode, ClaimRequest, SettlementStore};

    async fn store() -> Option<MongoStore> {
        super::super::test_store().await
    }

    fn at(text: &str) -> DateTime<Utc> {
        super::super::test_instant(text)
    }

    fn line(merchant: &str, net_minor: i64) -> SettlementLine {
        SettlementLine {
            merchant_id: merchant.into(),
            currency: Currency::from_code("USD").unwrap(),
            figures: SettlementFigures {
                net_minor,
                ..SettlementFigures::default()
            },
        }
    }

    async fn running(store: &MongoStore, date: &str, now: DateTime<Utc>) -> Fence {
        let settlement_date: NaiveDate = date.parse().unwrap();
        let calendar = BusinessCalendar::default();
        store
            .claim_settlement(ClaimRequest {
                settlement_date,
                mode: ClaimMode::Run,
                owner: "unit".into(),
                requested_by: "cli:unit".into(),
                trigger: RunTrigger::Manual,
                now,
                lease_duration: Duration::seconds(60),
                window: calendar.window(settlement_date).unwrap(),
                calendar,
                fee_schedule: FeeSchedule::default(),
            })
            .await
            .unwrap()
            .fence()
    }

    fn hold(merchant: &str, now: DateTime<Utc>) -> MerchantHold {
        MerchantHold {
            merchant_id: merchant.into(),
            reason: "review".into(),
            held_by: "cli:unit".into(),
            held_at: now,
        }
    }

    #[tokio::test]
    async fn a_plan_with_a_stale_view_of_holds_follows_the_current_one() {
        let Some(store) = store().await else { return };
        let now = at("2024-03-11T00:00:00Z");
        let fence = running(&store, "2024-03-10", now).await;
        store.hold_merchant(&hold("m-new-hold", now)).await.unwrap();
        // The plan read the holds before `m-new-hold` was held and after `m-released` was released.
        let stale: BTreeSet<String> = ["m-released".to_string()].into();
        let mut plan = PayoutPlan::default();
        for l in [line("m-new-hold", 100), line("m-released", 200)] {
            store
                .plan_line(&fence, &l, &stale, now, &mut plan)
                .await
                .unwrap();
        }
        let statuses: Vec<_> = plan
            .created
            .iter()
            .map(|p| (p.merchant_id.as_str(), p.status))
            .collect();
        assert_eq!(
            statuses,
            [
                ("m-new-hold", PayoutStatus::Held),
                ("m-released", PayoutStatus::Pending)
            ]
        );
        store.drop_database().await.unwrap();
    }

    #[tokio::test]
    async fn a_resumed_plan_pays_only_what_is_left() {
        let Some(store) = store().await else { return };
        let now = at("2024-03-11T00:00:00Z");
        let d1 = running(&store, "2024-03-10", now).await;
        store
            .plan_payouts(&d1, &[line("m-1", -500)], now)
            .await
            .unwrap();
        let d2 = running(&store, "2024-03-11", now).await;
        // Interrupted after applying the carry-forward, before paying.
        store
            .collection(CARRY_FORWARDS)
            .update_many(
                doc! {},
                doc! { "$set": { "applied_date": "2024-03-11", "applied_revision": 1_i64 } },
            )
            .await
            .unwrap();
        let plan = store
            .plan_payouts(&d2, &[line("m-1", 800), line("m-2", 10)], now)
            .await
            .unwrap();
        let paid: Vec<_> = plan
            .created
            .iter()
            .map(|p| (p.merchant_id.as_str(), p.amount_minor))
            .collect();
        assert_eq!(paid, [("m-1", 300), ("m-2", 10)]);
        let again = store
            .plan_payouts(&d2, &[line("m-1", 800), line("m-2", 10)], now)
            .await
            .unwrap();
        assert_eq!(again, PayoutPlan::default());
        store.drop_database().await.unwrap();
    }

    #[tokio::test]
    async fn updates_keep_a_known_provider_id_and_holds_round_trip() {
        let Some(store) = store().await else { return };
        let now = at("2024-03-11T00:00:00Z");
        let fence = running(&store, "2024-03-10", now).await;
        let plan = store
            .plan_payouts(&fence, &[line("m-1", 100)], now)
            .await
            .unwrap();
        let reference = plan.created[0].reference.clone();
        let step = |from, to, id: Option<&str>, error: Option<&str>| PayoutUpdate {
            reference: reference.clone(),
            from,
            to,
            provider_payout_id: id.map(str::to_string),
            attempts: 1,
            last_error: error.map(str::to_string),
            now: now + Duration::minutes(1),
        };
        let sent = store
            .update_payout(&step(
                PayoutStatus::Pending,
                PayoutStatus::Unknown,
                Some("po_1"),
                Some("timeout"),
            ))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (sent.attempts, sent.last_error.as_deref()),
            (1, Some("timeout"))
        );
        let again = store
            .update_payout(&step(PayoutStatus::Unknown, PayoutStatus::Sent, None, None))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (
                again.status,
                again.attempts,
                again.provider_payout_id.as_deref(),
                again.last_error.clone()
            ),
            (PayoutStatus::Sent, 2, Some("po_1"), None)
        );
        assert_eq!(again.updated_at, now + Duration::minutes(1));
        assert_eq!(
            store.payouts(fence.settlement_date).await.unwrap(),
            vec![again]
        );

        assert_eq!(store.release_merchant("m-2", now).await.unwrap(), None);
        let plan = store
            .plan_payouts(&fence, &[line("m-2", 100)], now)
            .await
            .unwrap();
        assert_eq!(store.hold_merchant(&hold("m-2", now)).await.unwrap(), 1);
        assert_eq!(store.hold_merchant(&hold("m-2", now)).await.unwrap(), 0);
        assert_eq!(
            store.merchant_holds().await.unwrap(),
            vec![hold("m-2", now)]
        );
        assert!(store
            .payouts_awaiting(None, Some("m-2".into()))
            .await
            .unwrap()
            .is_empty());
        assert_eq!(store.release_merchant("m-2", now).await.unwrap(), Some(1));
        let awaiting = store
            .payouts_awaiting(None, Some("m-2".into()))
            .await
            .unwrap();
        assert_eq!(awaiting[0].reference, plan.created[0].reference);
        store.drop_database().await.unwrap();
    }
}
