//! API tokens and four-eyes rerun requests in SQLite. Tokens are kept only as SHA-256 hashes, under
//! unique names; each write is one `BEGIN IMMEDIATE` transaction, so a name check and its insert
//! cannot interleave with another writer, and deciding a rerun request is a compare-and-set on
//! `status = 'pending'`: of concurrent deciders exactly one changes the row. An approval claims
//! the request's run in the same transaction, so it is approved exactly when its run was claimed.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{params, Connection};
use uuid::Uuid;

use settle_core::model::{ApiToken, RerunRequest, RerunRequestStatus};
use settle_core::store::rerun_approval::{check_claim, is_claim_refusal};
use settle_core::store::{AccessStore, ClaimRequest, RerunApproval, SettlementStore, StoreError};

use super::rows::{self, date_text, instant_text, API_TOKEN_COLUMNS, RERUN_REQUEST_COLUMNS};
use super::{backend, query_all, query_one, settlements, SqliteStore};

fn token_by_name(connection: &Connection, name: &str) -> Result<Option<ApiToken>, StoreError> {
    query_one(
        connection,
        &format!("SELECT {API_TOKEN_COLUMNS} FROM api_tokens WHERE name = ?1"),
        params![name],
        rows::api_token,
    )
}

fn rerun_request_by_id(
    connection: &Connection,
    id: Uuid,
) -> Result<Option<RerunRequest>, StoreError> {
    query_one(
        connection,
        &format!("SELECT {RERUN_REQUEST_COLUMNS} FROM rerun_requests WHERE id = ?1"),
        params![id.to_string()],
        rows::rerun_request,
    )
}

/// What the approval's write transaction decided.
enum Decided {
    NotPending(Option<RerunRequest>),
    Refused(StoreError),
    Approved(u32),
}

#[async_trait]
impl AccessStore for SqliteStore {
    async fn create_token(&self, token: &ApiToken) -> Result<(), StoreError> {
        let token = token.clone();
        self.write(move |tx| {
            // Under the write lock: nobody can take the name between this check and the insert.
            if token_by_name(tx, &token.name)?.is_some() {
                return Err(StoreError::NameTaken(token.name));
            }
            tx.execute(
                "INSERT INTO api_tokens (id, name, role, token_hash, created_at, created_by, revoked_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    token.id.to_string(),
                    token.name,
                    token.role.as_str(),
                    token.token_hash,
                    instant_text(token.created_at),
                    token.created_by,
                    token.revoked_at.map(instant_text)
                ],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn token_by_hash(&self, token_hash: &str) -> Result<Option<ApiToken>, StoreError> {
        let token_hash = token_hash.to_string();
        self.read(move |connection| {
            query_one(
                connection,
                &format!("SELECT {API_TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = ?1"),
                params![token_hash],
                rows::api_token,
            )
        })
        .await
    }

    async fn tokens(&self) -> Result<Vec<ApiToken>, StoreError> {
        self.read(move |connection| {
            query_all(
                connection,
                &format!("SELECT {API_TOKEN_COLUMNS} FROM api_tokens ORDER BY name"),
                [],
                rows::api_token,
            )
        })
        .await
    }

    async fn revoke_token(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ApiToken>, StoreError> {
        let name = name.to_string();
        self.write(move |tx| {
            // COALESCE: a second revocation keeps the first time.
            tx.execute(
                "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, ?1) WHERE name = ?2",
                params![instant_text(now), name],
            )
            .map_err(backend)?;
            token_by_name(tx, &name)
        })
        .await
    }

    async fn create_rerun_request(&self, request: &RerunRequest) -> Result<(), StoreError> {
        let r = request.clone();
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO rerun_requests (id, settlement_date, reason, apply_current_fees, \
                 requested_by, requested_at, status, decided_by, decided_at, settlement_revision, \
                 run_revision, last_refusal) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                params![
                    r.id.to_string(),
                    date_text(r.settlement_date),
                    r.reason,
                    i64::from(r.apply_current_fees),
                    r.requested_by,
                    instant_text(r.requested_at),
                    r.status.as_str(),
                    r.decided_by,
                    r.decided_at.map(instant_text),
                    r.settlement_revision,
                    r.run_revision,
                    r.last_refusal
                ],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn rerun_request(&self, id: Uuid) -> Result<Option<RerunRequest>, StoreError> {
        self.read(move |connection| rerun_request_by_id(connection, id))
            .await
    }

    async fn rerun_requests(
        &self,
        status: Option<RerunRequestStatus>,
    ) -> Result<Vec<RerunRequest>, StoreError> {
        self.read(move |connection| {
            query_all(
                connection,
                &format!(
                    "SELECT {RERUN_REQUEST_COLUMNS} FROM rerun_requests \
                     WHERE (?1 IS NULL OR status = ?1) ORDER BY requested_at DESC, id DESC"
                ),
                params![status.map(|s| s.as_str())],
                rows::rerun_request,
            )
        })
        .await
    }

    async fn approve_rerun_request(
        &self,
        id: Uuid,
        decided_by: &str,
        claim: ClaimRequest,
    ) -> Result<RerunApproval, StoreError> {
        let decided_by = decided_by.to_string();
        let now = claim.now;
        // One write transaction: the pending check, the claim and the approval commit together.
        let decided = self
            .write(move |tx| {
                let request = match rerun_request_by_id(tx, id)? {
                    Some(request) if request.status == RerunRequestStatus::Pending => request,
                    other => return Ok(Decided::NotPending(other)),
                };
                check_claim(&request, &claim)?;
                // A refusal comes from the claim's decision, before it writes anything.
                match settlements::claim(tx, &claim) {
                    Ok(revision) => {
                        tx.execute(
                            "UPDATE rerun_requests SET status = 'approved', decided_by = ?1, \
                             decided_at = ?2, run_revision = ?3, last_refusal = NULL WHERE id = ?4",
                            params![decided_by, instant_text(now), revision, id.to_string()],
                        )
                        .map_err(backend)?;
                        Ok(Decided::Approved(revision))
                    }
                    Err(refusal) if is_claim_refusal(&refusal) => {
                        tx.execute(
                            "UPDATE rerun_requests SET last_refusal = ?1 WHERE id = ?2",
                            params![refusal.to_string(), id.to_string()],
                        )
                        .map_err(backend)?;
                        Ok(Decided::Refused(refusal))
                    }
                    Err(fault) => Err(fault),
                }
            })
            .await?;
        let reread = || async {
            self.rerun_request(id)
                .await?
                .ok_or_else(|| StoreError::Backend("a rerun request vanished".into()))
        };
        Ok(match decided {
            Decided::NotPending(request) => RerunApproval::NotPending(request),
            Decided::Refused(refusal) => RerunApproval::Refused {
                request: reread().await?,
                refusal,
            },
            Decided::Approved(revision) => {
                let request = reread().await?;
                let settlement = self
                    .settlement(request.settlement_date, Some(revision))
                    .await?
                    .ok_or_else(|| StoreError::Backend("a claimed revision vanished".into()))?;
                RerunApproval::Approved {
                    request,
                    settlement: Box::new(settlement),
                }
            }
        })
    }

    async fn reject_rerun_request(
        &self,
        id: Uuid,
        decided_by: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<RerunRequest>, StoreError> {
        let decided_by = decided_by.to_string();
        self.write(move |tx| {
            let changed = tx
                .execute(
                    "UPDATE rerun_requests SET status = 'rejected', decided_by = ?1, decided_at = ?2 \
                     WHERE id = ?3 AND status = 'pending'",
                    params![decided_by, instant_text(now), id.to_string()],
                )
                .map_err(backend)?;
            if changed == 0 {
                return Ok(None);
            }
            rerun_request_by_id(tx, id)
        })
        .await
    }
}
