//! API tokens and four-eyes rerun requests in MongoDB, with the semantics of the SQLite adapter.
//!
//! Every write touches one document, so no multi-document transaction is needed. A token is one
//! `insert_one`; the unique index on `name` makes the first of two concurrent creations of a name
//! win and the other fail with a duplicate key, which is reported as `NameTaken` once the name is
//! found taken (the unique index on `token_hash` only guards against a hash stored twice).
//! Revoking is a compare-and-set on `revoked_at: null`, so a second revocation leaves the first
//! time in place and only reads the token back. Deciding a rerun request is one
//! `find_one_and_update` filtered on `status: "pending"`: of concurrent deciders exactly one
//! matches, the others find nothing pending and get `None`.
//!
//! Documents: `api_tokens` (`_id` = token id, `name`, `role`, `token_hash` (hex SHA-256, never
//! the token), `created_at`, `created_by`, `revoked_at` DateTime or null); `rerun_requests`
//! (`_id` = request id, `settlement_date` `YYYY-MM-DD`, `reason`, `apply_current_fees` bool,
//! `requested_by`, `requested_at`, `status`, `decided_by`, `decided_at`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::ReturnDocument;
use uuid::Uuid;

use crate::model::{ApiToken, RerunRequest, RerunRequestStatus};
use crate::store::{AccessStore, StoreError};

use super::collections::{API_TOKENS, RERUN_REQUESTS};
use super::documents::{self as d, date_text, instant};
use super::{backend, is_duplicate_key, MongoStore};

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
    })
}

/// A decision is approved or rejected; "deciding" back to pending is a caller's mistake.
fn check_decision(decision: RerunRequestStatus) -> Result<(), StoreError> {
    if decision == RerunRequestStatus::Pending {
        return Err(StoreError::Backend(
            "a rerun request is decided as approved or rejected, not pending".into(),
        ));
    }
    Ok(())
}

impl MongoStore {
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
        let document = doc! {
            "_id": token.id.to_string(),
            "name": &token.name,
            "role": token.role.as_str(),
            "token_hash": &token.token_hash,
            "created_at": instant(token.created_at),
            "created_by": &token.created_by,
            "revoked_at": optional_instant(token.revoked_at),
        };
        match self.collection(API_TOKENS).insert_one(document).await {
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
        let r = request;
        self.collection(RERUN_REQUESTS)
            .insert_one(doc! {
                "_id": r.id.to_string(),
                "settlement_date": date_text(r.settlement_date),
                "reason": &r.reason,
                "apply_current_fees": r.apply_current_fees,
                "requested_by": &r.requested_by,
                "requested_at": instant(r.requested_at),
                "status": r.status.as_str(),
                "decided_by": r.decided_by.clone().map(Bson::String).unwrap_or(Bson::Null),
                "decided_at": optional_instant(r.decided_at),
            })
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

    async fn decide_rerun_request(
        &self,
        id: Uuid,
        decision: RerunRequestStatus,
        decided_by: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<RerunRequest>, StoreError> {
        check_decision(decision)?;
        self.collection(RERUN_REQUESTS)
            .find_one_and_update(
                doc! {
                    "_id": id.to_string(),
                    "status": RerunRequestStatus::Pending.as_str(),
                },
                doc! { "$set": {
                    "status": decision.as_str(),
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
