//! What the daemon client sends and receives: query parameters, and the envelopes around the
//! model records the API serializes (pages, a settlement's detail, accepted runs, rerun outcomes).

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use settle_domain::model::{
    Notification, PaymentMethod, RerunRequest, Role, Settlement, SettlementLine, SettlementStatus,
    TransactionKind, TransactionStatus,
};
use settle_domain::money::Currency;

/// One page of a paged route (`history`, `audit`): `{"items", "page", "per_page", "has_more"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// From 1.
    pub page: u32,
    pub per_page: u32,
    /// True when a next page holds more items.
    pub has_more: bool,
}

/// `GET /finance/settlement/history` parameters. Every one is optional; `Default` asks for the
/// latest revision of every date, newest first, first page of 50.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HistoryQuery {
    pub status: Option<SettlementStatus>,
    /// Settlement dates from this one (inclusive).
    pub from: Option<NaiveDate>,
    /// Settlement dates up to this one (inclusive).
    pub to: Option<NaiveDate>,
    /// Every revision of each date, not only the latest.
    pub all_revisions: bool,
    /// From 1 (the daemon's default: 1).
    pub page: Option<u32>,
    /// 1 to 500 (the daemon's default: 50).
    pub per_page: Option<u32>,
}

impl HistoryQuery {
    pub(super) fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        push(&mut pairs, "status", self.status.map(|s| s.as_str()));
        push(&mut pairs, "from", self.from);
        push(&mut pairs, "to", self.to);
        if self.all_revisions {
            pairs.push(("all_revisions", "true".to_string()));
        }
        push(&mut pairs, "page", self.page);
        push(&mut pairs, "per_page", self.per_page);
        pairs
    }
}

/// How `lines` are sorted (the daemon's default: `merchant_id`, then currency).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineSort {
    #[default]
    MerchantId,
    NetMinor,
    GrossMinor,
    FeesMinor,
    TransactionCount,
}

impl LineSort {
    pub fn as_str(&self) -> &'static str {
        match self {
            LineSort::MerchantId => "merchant_id",
            LineSort::NetMinor => "net_minor",
            LineSort::GrossMinor => "gross_minor",
            LineSort::FeesMinor => "fees_minor",
            LineSort::TransactionCount => "transaction_count",
        }
    }
}

/// Ascending (the daemon's default) or descending.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    #[default]
    Asc,
    Desc,
}

impl SortOrder {
    pub fn as_str(&self) -> &'static str {
        match self {
            SortOrder::Asc => "asc",
            SortOrder::Desc => "desc",
        }
    }
}

/// `GET /finance/settlement/{date}/lines` parameters; `Default` is the latest revision's first
/// 50 lines by merchant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LinesQuery {
    /// A revision (the daemon's default: the latest).
    pub revision: Option<u32>,
    pub sort: Option<LineSort>,
    pub order: Option<SortOrder>,
    /// Only merchants whose id contains this.
    pub q: Option<String>,
    pub page: Option<u32>,
    pub per_page: Option<u32>,
}

impl LinesQuery {
    pub(super) fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        push(&mut pairs, "revision", self.revision);
        push(&mut pairs, "sort", self.sort.map(|s| s.as_str()));
        push(&mut pairs, "order", self.order.map(|o| o.as_str()));
        push(&mut pairs, "q", self.q.as_deref().filter(|q| !q.is_empty()));
        push(&mut pairs, "page", self.page);
        push(&mut pairs, "per_page", self.per_page);
        pairs
    }
}

/// Adds `name=value` when there is a value.
pub(super) fn push(
    pairs: &mut Vec<(&'static str, String)>,
    name: &'static str,
    value: Option<impl ToString>,
) {
    if let Some(value) = value {
        pairs.push((name, value.to_string()));
    }
}

/// A page of a settlement revision's merchant lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinesPage {
    pub settlement_date: NaiveDate,
    /// The revision the lines belong to (the latest unless one was asked for).
    pub revision: u32,
    pub items: Vec<SettlementLine>,
    pub page: u32,
    pub per_page: u32,
    /// Lines matching `q` over every page.
    pub total: u64,
}

/// A transaction as the API shows it (a settlement's late arrivals, `GET /payments/{id}`): the
/// amount in minor units and as a major-unit decimal string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionRecord {
    pub id: Uuid,
    pub merchant_id: String,
    pub kind: TransactionKind,
    pub status: TransactionStatus,
    /// Major units, e.g. `"12.50"`.
    pub amount: String,
    pub amount_minor: i64,
    pub currency: Currency,
    pub method: PaymentMethod,
    pub external_ref: String,
    /// The `external_ref` of the payment a refund or chargeback returns.
    pub refund_of: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// The date whose settlement includes it.
    pub settlement_date: NaiveDate,
    /// True when it arrived after its own date had been settled.
    pub late: bool,
}

/// `GET /finance/settlement/{date}`: one revision with its window, totals and lease, the date's
/// late arrivals and its webhook notifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementDetail {
    pub settlement: Settlement,
    pub late_transactions: Vec<TransactionRecord>,
    pub notifications: Vec<Notification>,
}

/// A run the daemon claimed and continues in the background (trigger, retry, rerun, approval):
/// poll `settlement(date, Some(revision))` until its status is `completed` or `failed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAccepted {
    /// The revision as claimed (`running`).
    pub settlement: Settlement,
    /// The API path of the date, e.g. `/api/v2/finance/settlement/2026-11-23`.
    pub status_url: String,
    /// True when this is the stored answer to an earlier request with the same key
    /// (`Idempotent-Replayed: true`): nothing ran a second time.
    #[serde(default)]
    pub replayed: bool,
}

/// A rerun recorded for a second operator's approval (`[server] require_rerun_approval`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RerunPending {
    pub rerun_request: RerunRequest,
    /// The API path that approves it.
    pub approve_url: String,
    #[serde(default)]
    pub replayed: bool,
}

/// What a rerun did: started a new revision, or (four-eyes) waits for another operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum RerunOutcome {
    /// Boxed: a settlement is much larger than a request.
    Started(Box<RunAccepted>),
    AwaitingApproval(RerunPending),
}

/// `GET /whoami`: the calling token's name and role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Whoami {
    pub name: String,
    pub role: Role,
}

/// `{"items": [...]}` (and whatever else the envelope holds).
#[derive(Deserialize)]
pub(super) struct Items<T> {
    pub items: Vec<T>,
}

/// `{"rerun_request": {...}}`: a rejected request.
#[derive(Deserialize)]
pub(super) struct Decided {
    pub rerun_request: RerunRequest,
}
