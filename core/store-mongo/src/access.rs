//! API tokens and four-eyes rerun requests in MongoDB, with the semantics of the SQLite adapter.
//!
//! Every write touches one document, so no multi-document transaction is needed. A token is one
//! `insert_one`; the unique index on `name` makes the first of two concurrent creations of a name
//! win and the other fail with a duplicate key, which is reported as `NameTaken` once the name is
//! found taken (the unique index on `token_hash` only guards against a hash stored twice).
//! Revoking is a compare-and-set on `revoked_at: null`, so a second revocation leaves the first
//! time in place and only reads the token back.
//!
//! Without a multi-document transaction, approving a rerun request and claiming its run are made
//! one step by a reservation: the approver first takes the pending request (`find_one_and_update`
//! on `status: "pending"` and no `approving_token`), so no other approval or rejection can decide
//! it; then claims the run; then marks it approved with the claimed revision, or, if the claim was
//! refused, releases it with the refusal as `last_refusal`. A request is thus never approved
//! without its run. A reservation left by a process that died midway expires after
//! `APPROVAL_RESERVATION_SECONDS`; whoever decides the request next first ends it: approved if the
//! dead approver's run was claimed (revision `settlement_revision + 1`, claimed by the approver
//! after the reservation was taken), else released as pending.
//!
//! Documents: `api_tokens` (`_id` = token id, `name`, `role`, `token_hash` (hex SHA-256, never
//! the token), `created_at`, `created_by`, `revoked_at` DateTime or null); `rerun_requests`
//! (`_id` = request id, `settlement_date` `YYYY-MM-DD`, `reason`, `apply_current_fees` bool,
//! `requested_by`, `requested_at`, `status`, `decided_by`, `decided_at`, `settlement_revision`,
//! `run_revision`, `last_refusal`, and while an approval is in flight `approving_token`,
//! `approving_by`, `approving_at`, `approving_until`).

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::ReturnDocument;
use uuid::Uuid;

use settle_core::model::{ApiToken, RerunRequest, RerunRequestStatus};
use settle_core::store::rerun_approval::{check_claim, is_claim_refusal};
use settle_core::store::{AccessStore, ClaimRequest, RerunApproval, SettlementStore, StoreError};

use super::collections::{API_TOKENS, RERUN_REQUESTS};
use super::documents::{self as d, date_text, instant};
use super::{backend, is_duplicate_key, MongoStore};

/// How long an approval in flight holds its request before another may end it (it takes a claim,
/// a few store calls).
const APPROVAL_RESERVATION_SECONDS: i64 = 60;

fn optional_instant(value: Option<DateTime<Utc>>) -> Bson {
    value
        .map(|v| Bson::DateTime(instant(v)))
        .unwrap_or(Bson::Null)
}

fn api_token(document: &Document) -> Result<ApiToken, StoreError> {
    Ok(ApiToken {
        id: d::parsed(document, "_id")?,
        name: d::text(document, "name")?.to_string(),
        role: d::parsed(document, "role")?,
        token_hash: d::text(document, "token_hash")?.to_string(),
        created_at: d::utc(document, "created_at")?,
        created_by: d::text(document, "created_by")?.to_string(),
        revoked_at: d::optional_utc(document, "revoked_at")?,
    })
}

fn rerun_request(document: &Document) -> Result<RerunRequest, StoreError> {
    Ok(RerunRequest {
        id: d::parsed(document, "_id")?,
        settlement_date: d::parsed(document, "settlement_date")?,
        reason: d::text(document, "reason")?.to_string(),
        apply_current_fees: d::boolean(document, "apply_current_fees")?,
        requested_by: d::text(document, "requested_by")?.to_string(),
        requested_at: d::utc(document, "requested_at")?,
        status: d::parsed(document, "status")?,
        decided_by: d::optional_text(document, "decided_by")?,
        decided_at: d::optional_utc(document, "decided_at")?,
        settlement_revision: optional_revision(document, "settlement_revision")?,
        run_revision: optional_revision(document, "run_revision")?,
        last_refusal: d::optional_text(document, "last_refusal")?,
    })
}

fn optional_revision(document: &Document, field: &str) -> Result<Option<u32>, StoreError> {
    d::optional_integer(document, field)?
        .map(|n| {
            u32::try_from(n)
                .map_err(|e| StoreError::Corrupt(format!("rerun_requests.{field}: {e}")))
        })
        .transpose()
}

fn optional_revision_bson(revision: Option<u32>) -> Bson {
    revision
        .map(|r| Bson::Int64(i64::from(r)))
        .unwrap_or(Bson::Null)
}

/// A token as stored (also what a migration writes).
pub(super) fn token_document(token: &ApiToken) -> Document {
    doc! {
        "_id": token.id.to_string(),
        "name": &token.name,
        "role": token.role.as_str(),
        "token_hash": &token.token_hash,
        "created_at": instant(token.created_at),
        "created_by": &token.created_by,
        "revoked_at": optional_instant(token.revoked_at),
    }
}

/// A rerun request as stored, with no approval in flight (also what a migration writes).
pub(super) fn rerun_request_document(r: &RerunRequest) -> Document {
    doc! {
        "_id": r.id.to_string(),
        "settlement_date": date_text(r.settlement_date),
        "reason": &r.reason,
        "apply_current_fees": r.apply_current_fees,
        "requested_by": &r.requested_by,
        "requested_at": instant(r.requested_at),
        "status": r.status.as_str(),
        "decided_by": r.decided_by.clone().map(Bson::String).unwrap_or(Bson::Null),
        "decided_at": optional_instant(r.decided_at),
        "settlement_revision": optional_revision_bson(r.settlement_revision),
        "run_revision": optional_revision_bson(r.run_revision),
        "last_refusal": r.last_refusal.clone().map(Bson::String).unwrap_or(Bson::Null),
        "approving_token": Bson::Null,
    }
}

/// The fields of an approval in flight, cleared when it ends.
fn no_reservation() -> Document {
    doc! {
        "approving_token": Bson::Null,
        "approving_by": Bson::Null,
        "approving_at": Bson::Null,
        "approving_until": Bson::Null,
    }
}

impl MongoStore {
    /// Ends an approval of `id` whose reservation expired (its process died midway): approved if
    /// its run was claimed, else released as pending with why.
    async fn end_interrupted_approval(
        &self,
        id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let requests = self.collection(RERUN_REQUESTS);
        let Some(document) = requests
            .find_one(doc! {
                "_id": id.to_string(),
                "status": RerunRequestStatus::Pending.as_str(),
                "approving_until": { "$lte": instant(now) },
            })
            .await
            .map_err(backend)?
        else {
            return Ok(());
        };
        let request = rerun_request(&document)?;
        let token = d::text(&document, "approving_token")?.to_string();
        let approver = d::text(&document, "approving_by")?.to_string();
        let since = d::utc(&document, "approving_at")?;
        let claimed = match request.settlement_revision {
            Some(revision) => self
                .settlement(request.settlement_date, Some(revision + 1))
                .await?
                .filter(|s| s.requested_by == approver && s.created_at >= since),
            None => None,
        };
        let mut set = no_reservation();
        match claimed {
            Some(settlement) => set.extend(doc! {
                "status": RerunRequestStatus::Approved.as_str(),
                "decided_by": &approver,
                "decided_at": instant(since),
                "run_revision": i64::from(settlement.revision),
                "last_refusal": Bson::Null,
            }),
            None => set.extend(doc! {
                "last_refusal": format!("the approval by {approver} was interrupted before its run was claimed"),
            }),
        }
        requests
            .update_one(
                doc! { "_id": id.to_string(), "approving_token": &token },
                doc! { "$set": set },
            )
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn token_by(&self, filter: Document) -> Result<Option<ApiToken>, StoreError> {
        self.collection(API_TOKENS)
            .find_one(filter)
            .await
            .map_err(backend)?
            .as_ref()
            .map(api_token)
            .transpose()
    }
}

#[async_trait]
impl AccessStore for MongoStore {
    async fn create_token(&self, token: &ApiToken) -> Result<(), StoreError> {
        match self
            .collection(API_TOKENS)
            .insert_one(token_document(token))
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if is_duplicate_key(&error) => {
                if self.token_by(doc! { "name": &token.name }).await?.is_some() {
                    Err(StoreError::NameTaken(token.name.clone()))
                } else {
                    // The id or the hash is stored already: never expected, never silently kept.
                    Err(backend(error))
                }
            }
            Err(error) => Err(backend(error)),
        }
    }

    async fn token_by_hash(&self, token_hash: &str) -> Result<Option<ApiToken>, StoreError> {
        self.token_by(doc! { "token_hash": token_hash }).await
    }

    async fn tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        self.find_all(API_TOKENS, doc! {}, doc! { "name": 1 }, None, None)
            .await?
            .iter()
            .map(api_token)
            .collect()
    }

    async fn revoke_token(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ApiToken>, StoreError> {
        let revoked = self
            .collection(API_TOKENS)
            .find_one_and_update(
                doc! { "name": name, "revoked_at": Bson::Null },
                doc! { "$set": { "revoked_at": instant(now) } },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(backend)?;
        match revoked {
            Some(document) => api_token(&document).map(Some),
            // Revoked before (the first time stays), or no such token.
            None => self.token_by(doc! { "name": name }).await,
        }
    }

    async fn create_rerun_request(&self, request: &RerunRequest) -> Result<(), StoreError> {
        self.collection(RERUN_REQUESTS)
            .insert_one(rerun_request_document(request))
            .await
            .map_err(backend)?;
        Ok(())
    }

    async fn rerun_request(&self, id: Uuid) -> Result<Option<RerunRequest>, StoreError> {
        self.collection(RERUN_REQUESTS)
            .find_one(doc! { "_id": id.to_string() })
            .await
            .map_err(backend)?
            .as_ref()
            .map(rerun_request)
            .transpose()
    }

    async fn rerun_requests(
        &self,
        status: Option<RerunRequestStatus>,
    ) -> Result<Vec<RerunRequest>, StoreError> {
        let filter = match status {
            Some(status) => doc! { "status": status.as_str() },
            None => doc! {},
        };
        self.find_all(
            RERUN_REQUESTS,
            filter,
            doc! { "requested_at": -1, "_id": -1 },
            None,
            None,
        )
        .await?
        .iter()
        .map(rerun_request)
        .collect()
    }

    async fn approve_rerun_request(
        &self,
        id: Uuid,
        decided_by: &str,
        claim: ClaimRequest,
    ) -> Result<RerunApproval, StoreError> {
        let now = claim.now;
        self.end_interrupted_approval(id, now).await?;
        let found = match self.rerun_request(id).await? {
            Some(found) if found.status == RerunRequestStatus::Pending => found,
            other => return Ok(RerunApproval::NotPending(other)),
        };
        check_claim(&found, &claim)?;
        let requests = self.collection(RERUN_REQUESTS);
        let token = Uuid::new_v4().to_string();
        let reserved = requests
            .find_one_and_update(
                doc! {
                    "_id": id.to_string(),
                    "status": RerunRequestStatus::Pending.as_str(),
                    "approving_token": Bson::Null,
                },
                doc! { "$set": {
                    "approving_token": &token,
                    "approving_by": decided_by,
                    "approving_at": instant(now),
                    "approving_until": instant(now + Duration::seconds(APPROVAL_RESERVATION_SECONDS)),
                } },
            )
            .await
            .map_err(backend)?;
        if reserved.is_none() {
            // Decided meanwhile, or another approval holds it.
            return Ok(RerunApproval::NotPending(self.rerun_request(id).await?));
        }
        let mine = doc! { "_id": id.to_string(), "approving_token": &token };
        let mut set = no_reservation();
        let claimed = self.claim_settlement(claim).await;
        match &claimed {
            Ok(settlement) => set.extend(doc! {
                "status": RerunRequestStatus::Approved.as_str(),
                "decided_by": decided_by,
                "decided_at": instant(now),
                "run_revision": i64::from(settlement.revision),
                "last_refusal": Bson::Null,
            }),
            Err(refusal) if is_claim_refusal(refusal) => {
                set.insert("last_refusal", refusal.to_string());
            }
            // A fault changed nothing: release the request as it was.
            Err(_) => {}
        }
        // If this reservation outlived its expiry, whoever ended it recorded the same outcome.
        requests
            .update_one(mine, doc! { "$set": set })
            .await
            .map_err(backend)?;
        let request = self
            .rerun_request(id)
            .await?
            .ok_or_else(|| StoreError::Backend("a rerun request vanished".into()))?;
        match claimed {
            Ok(settlement) => Ok(RerunApproval::Approved {
                request,
                settlement: Box::new(settlement),
            }),
            Err(refusal) if is_claim_refusal(&refusal) => {
                Ok(RerunApproval::Refused { request, refusal })
            }
            Err(fault) => Err(fault),
        }
    }

    async fn reject_rerun_request(
        &self,
        id: Uuid,
        decided_by: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<RerunRequest>, StoreError> {
        self.end_interrupted_approval(id, now).await?;
        self.collection(RERUN_REQUESTS)
            .find_one_and_update(
                doc! {
                    "_id": id.to_string(),
                    "status": RerunRequestStatus::Pending.as_str(),
                    "approving_token": Bson::Null,
                },
                doc! { "$set": {
                    "status": RerunRequestStatus::Rejected.as_str(),
                    "decided_by": decided_by,
                    "decided_at": instant(now),
                } },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(backend)?
            .as_ref()
            .map(rerun_request)
            .transpose()
    }
}
