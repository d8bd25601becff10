//! The types the API document is made of beside the domain's: problems by status, parameters,
//! request bodies the payments service parses, and the JSON answers the handlers build.

use std::collections::BTreeMap;

use serde_json::json;
use utoipa::openapi::{RefOr, Response};
use utoipa::{IntoParams, ToSchema};

use super::problem::types;
use settle_core::idempotency::{IDEMPOTENCY_CONFLICT, IDEMPOTENCY_KEY_REUSED};
use settle_core::model::{
    AuditEvent, Notification, PaymentMethod, Payout, RerunRequest, Role, Settlement,
    SettlementLine, TransactionKind, TransactionStatus,
};
use settle_core::payments::problems as payment_problems;
use settle_core::reconcile::{Decision, Item, StatementKind};
use settle_core::store::StoredStatement;

// --- problems ----------------------------------------------------------------------------------

/// An RFC 9457 problem, as every error is answered.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ProblemDetails {
    /// A stable URI naming the kind of error (`urn:settle:problem:…`).
    #[schema(rename = "type")]
    problem_type: String,
    title: String,
    status: u16,
    /// For people; never a stack trace or a secret.
    detail: String,
    /// The request id, `urn:settle:request:…`.
    instance: Option<String>,
    /// The request member at fault, for validation refusals.
    field: Option<String>,
    /// The members at fault, when a refusal is about more than one.
    fields: Option<Vec<String>>,
}

/// Which problems an operation may answer with, by status.
#[derive(Default)]
struct ProblemSet(BTreeMap<u16, Vec<&'static str>>);

impl ProblemSet {
    fn with(mut self, status: u16, kinds: &[&'static str]) -> Self {
        let entry = self.0.entry(status).or_default();
        for kind in kinds {
            if !entry.contains(kind) {
                entry.push(kind);
            }
        }
        self
    }

    /// Every operation: the server failed (500), the store did not answer or the request took
    /// too long (503).
    fn base() -> Self {
        ProblemSet::default().with(500, &[types::INTERNAL]).with(
            503,
            &[
                types::UNAVAILABLE,
                types::REQUEST_TIMEOUT,
                payment_problems::STORE_UNAVAILABLE,
            ],
        )
    }

    /// A token is required (401) and may lack the role (403).
    fn secured(self) -> Self {
        self.with(401, &[types::UNAUTHORIZED])
            .with(403, &[types::FORBIDDEN])
    }

    /// A query string or a path parameter that is not what the document says (400).
    fn parameters(self) -> Self {
        self.with(400, &[types::INVALID_REQUEST])
    }

    /// POST: the `Idempotency-Key` is missing or bad (400), its first request is still running
    /// (409) or it was used for another request (422).
    fn idempotent(self) -> Self {
        self.with(400, &[types::IDEMPOTENCY_KEY_INVALID])
            .with(409, &[IDEMPOTENCY_CONFLICT])
            .with(422, &[IDEMPOTENCY_KEY_REUSED])
    }

    /// A JSON body: malformed (400), too large (413), not JSON (415), the wrong shape (422).
    fn json_body(self) -> Self {
        self.with(400, &[types::MALFORMED_JSON, types::INVALID_REQUEST])
            .with(413, &[types::BODY_TOO_LARGE])
            .with(415, &[types::UNSUPPORTED_MEDIA_TYPE])
            .with(422, &[types::INVALID_REQUEST])
    }

    fn responses(self) -> BTreeMap<String, RefOr<Response>> {
        self.0
            .into_iter()
            .map(|(status, kinds)| {
                let reason = axum::http::StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("Error");
                let response = json!({
                    "description": format!("{reason}: a problem of type {}", kinds.join(", ")),
                    "content": {
                        "application/problem+json": {
                            "schema": {
                                "allOf": [
                                    { "$ref": "#/components/schemas/ProblemDetails" },
                                    {
                                        "type": "object",
                                        "properties": {
                                            "type": { "type": "string", "enum": kinds },
                                            "status": { "type": "integer", "enum": [status] },
                                        },
                                    },
                                ],
                            },
                        },
                    },
                });
                let response: Response =
                    serde_json::from_value(response).expect("a problem response");
                (status.to_string(), RefOr::T(response))
            })
            .collect()
    }
}

/// Declares marker types whose responses are the problems an operation may answer with.
macro_rules! problems {
    ($($(#[$meta:meta])* $name:ident => $set:expr;)+) => {
        $(
            $(#[$meta])*
            pub struct $name;

            impl utoipa::IntoResponses for $name {
                fn responses() -> BTreeMap<String, RefOr<Response>> {
                    $set.responses()
                }
            }
        )+
    };
}

/// Why a run could not be claimed (409) or the date cannot be settled (422).
fn run_refusals(set: ProblemSet) -> ProblemSet {
    set.with(
        409,
        &[
            types::DATE_STILL_OPEN,
            types::ALREADY_SETTLED,
            types::ALREADY_RUNNING,
            types::REVISION_FAILED,
            types::NOTHING_TO_DO,
            types::REVISION_MOVED,
            types::CONFLICT,
        ],
    )
    .with(422, &[types::INVALID_REQUEST])
}

/// A four-eyes refusal (403), an unknown request (404), a decided or stale one (409).
fn approval_refusals(set: ProblemSet) -> ProblemSet {
    run_refusals(set)
        .with(403, &[types::APPROVAL_REFUSED])
        .with(404, &[types::NOT_FOUND])
        .with(409, &[types::CONFLICT, types::REVISION_MOVED])
}

/// A payment operation's refusals (the payments service's own problem types).
fn payment_refusals(set: ProblemSet) -> ProblemSet {
    set.with(
        409,
        &[
            payment_problems::EXTERNAL_REF_CONFLICT,
            payment_problems::RETURNS_IN_FLIGHT,
        ],
    )
    .with(422, &[payment_problems::INVALID_REQUEST])
}

problems! {
    /// Public routes: only the server's own failures.
    PublicProblems => ProblemSet::base();
    /// `/metrics` may be configured to need a token.
    MetricsProblems => ProblemSet::base().with(401, &[types::UNAUTHORIZED]);
    /// A read without parameters.
    ReadProblems => ProblemSet::base().secured();
    /// A read with a query string or path parameters (400 when one is bad).
    QueryProblems => ProblemSet::base().secured().parameters();
    /// A read of something that may not exist.
    LookupProblems => ProblemSet::base().secured().parameters().with(404, &[types::NOT_FOUND]);
    /// A chart: nothing to draw (404), a size it cannot draw (422).
    ChartProblems => ProblemSet::base()
        .secured()
        .parameters()
        .with(404, &[types::NOT_FOUND])
        .with(422, &[types::INVALID_REQUEST]);
    /// The CSV export: no such revision (404), not completed (409).
    ExportProblems => ProblemSet::base()
        .secured()
        .parameters()
        .with(404, &[types::NOT_FOUND])
        .with(409, &[types::CONFLICT]);
    /// The audit trail: an unknown action, a bad instant or from after to (400, naming the
    /// parameters).
    AuditProblems => ProblemSet::base()
        .secured()
        .parameters();
    /// Trigger and retry.
    RunProblems => run_refusals(ProblemSet::base().secured().parameters().idempotent());
    /// A rerun: a JSON body, and four-eyes refusals.
    RerunProblems => approval_refusals(ProblemSet::base().secured().parameters().idempotent().json_body());
    /// Approving or rejecting a rerun request.
    DecisionProblems => approval_refusals(ProblemSet::base().secured().parameters().idempotent());
    /// Recording a payment or an adjustment.
    PaymentProblems => payment_refusals(ProblemSet::base().secured().idempotent().json_body());
    /// A refund or a chargeback: also the payment may not exist (404) or not be returnable (422).
    ReturnProblems => payment_refusals(ProblemSet::base().secured().parameters().idempotent().json_body())
        .with(404, &[payment_problems::PAYMENT_NOT_FOUND])
        .with(422, &[payment_problems::PAYMENT_NOT_REFUNDABLE, payment_problems::REFUND_EXCEEDS_PAYMENT]);
    /// The provider's callback: off without its secret (404), a bad signature (401), an unknown
    /// payout (404).
    CallbackProblems => ProblemSet::base()
        .secured()
        .idempotent()
        .json_body()
        .with(401, &[types::BAD_SIGNATURE])
        .with(404, &[types::NOT_FOUND])
        .with(409, &[types::CONFLICT]);
    /// Creating a token: the name is taken (409).
    TokenProblems => ProblemSet::base()
        .secured()
        .idempotent()
        .json_body()
        .with(409, &[types::CONFLICT]);
    /// Revoking a token that does not exist (404).
    RevokeProblems => ProblemSet::base().secured().parameters().with(404, &[types::NOT_FOUND]);
    /// Importing a statement file: a bad parameter (400), a file too large (413), a file that
    /// cannot be read, does not balance or names an unknown profile (422, naming line and field).
    StatementImportProblems => reconciliation_refusals(ProblemSet::base().secured().parameters().idempotent())
        .with(413, &[types::BODY_TOO_LARGE]);
    /// A run or a person's decision on items: an unknown item (404), an item decided already (409).
    ReconciliationActionProblems => reconciliation_refusals(ProblemSet::base().secured().idempotent().json_body());
    /// A decision on a decision: unknown (404), not open to it (409), one's own write-off (403).
    ReconciliationDecisionProblems => reconciliation_refusals(ProblemSet::base().secured().parameters().idempotent().json_body())
        .with(403, &[types::APPROVAL_REFUSED]);
}

/// Reconciliation refusals: unknown items or decisions (404), taken items or decisions not open to
/// the action (409), requests the rules refuse (422).
fn reconciliation_refusals(set: ProblemSet) -> ProblemSet {
    set.with(404, &[types::NOT_FOUND])
        .with(409, &[types::CONFLICT])
        .with(422, &[types::INVALID_REQUEST])
}

// --- parameters --------------------------------------------------------------------------------

/// The key that makes a POST safe to retry: the same key and request answer the first answer.
#[derive(IntoParams)]
#[into_params(names("Idempotency-Key"), parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyKeyHeader(
    /// 1 to 255 visible ASCII characters (a UUID is usual); not starting with a quote.
    #[param(
        pattern = r#"^[!#-~][!-~]{0,254}$"#,
        min_length = 1,
        max_length = 255,
        example = "6f1c2b9e-4d3a-4c8e-9b7f-0a1d2e3f4a5b"
    )]
    String,
);

/// A settlement date in the path.
#[derive(IntoParams)]
#[into_params(names("date"), parameter_in = Path)]
#[allow(dead_code)]
pub struct DatePath(
    /// A business date, `YYYY-MM-DD`.
    #[param(format = Date, example = "2024-03-10")]
    String,
);

/// A transaction id in the path.
#[derive(IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
#[allow(dead_code)]
pub struct PaymentIdPath(
    /// The payment's id (a UUID).
    #[param(format = Uuid)]
    String,
);

/// A rerun request id in the path.
#[derive(IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
#[allow(dead_code)]
pub struct RequestIdPath(
    /// The rerun request's id (a UUID).
    #[param(format = Uuid)]
    String,
);

/// A reconciliation decision id in the path.
#[derive(IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
#[allow(dead_code)]
pub struct DecisionIdPath(
    /// The decision's id (`man-…` for a person's, `auto-…` for a rule's).
    #[param(
        min_length = 1,
        max_length = 200,
        example = "man-0193b1c2d3e4f5a6b7c8d9e0f1a2b3c4"
    )]
    String,
);

/// A token name in the path.
#[derive(IntoParams)]
#[into_params(names("name"), parameter_in = Path)]
#[allow(dead_code)]
pub struct TokenNamePath(
    /// 1 to 64 letters, digits, '.', '_' or '-'.
    #[param(pattern = r"^[A-Za-z0-9._-]{1,64}$", example = "ci-bot")]
    String,
);

// --- request bodies (the payments service parses these; documented here) -----------------------

/// A currency Settle accepts (ISO 4217).
#[derive(ToSchema, serde::Deserialize)]
#[allow(dead_code, clippy::upper_case_acronyms)]
pub enum CurrencyCode {
    AED,
    BHD,
    EGP,
    EUR,
    GBP,
    JOD,
    JPY,
    KWD,
    OMR,
    QAR,
    SAR,
    USD,
    YER,
}

/// `POST /api/v2/payments`.
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct PaymentRequest {
    #[schema(
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
        max_length = 64,
        example = "m-0042"
    )]
    merchant_id: String,
    /// An exact decimal string in major units: greater than zero, with no more decimals than the
    /// currency has and within the configured maximum (else 422).
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", example = "12.50")]
    amount: String,
    currency: CurrencyCode,
    method: PaymentMethod,
    #[schema(
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$",
        max_length = 128,
        example = "ord-1"
    )]
    external_ref: String,
    /// RFC 3339, with an offset.
    #[schema(format = DateTime, example = "2024-03-10T12:00:00+00:00")]
    occurred_at: String,
    /// `completed` unless given.
    status: Option<TransactionStatus>,
}

/// `POST /api/v2/payments/{id}/refunds` and `/chargebacks`: merchant and currency are the
/// payment's.
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ReturnRequest {
    /// An exact decimal string in major units, greater than zero.
    #[schema(pattern = r"^[0-9]+(\.[0-9]+)?$", example = "5.00")]
    amount: String,
    #[schema(
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$",
        max_length = 128,
        example = "ref-1"
    )]
    external_ref: String,
    #[schema(format = DateTime, example = "2024-03-11T12:00:00+00:00")]
    occurred_at: String,
    /// Kept in the audit trail.
    reason: Option<String>,
}

/// `POST /api/v2/adjustments`: signed; negative is a debit to the merchant.
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct AdjustmentRequest {
    #[schema(
        pattern = r"^[A-Za-z0-9][A-Za-z0-9._:-]*$",
        max_length = 64,
        example = "m-0042"
    )]
    merchant_id: String,
    /// An exact, non-zero decimal string in major units.
    #[schema(pattern = r"^-?[0-9]+(\.[0-9]+)?$", example = "-3.00")]
    amount: String,
    currency: CurrencyCode,
    #[schema(
        pattern = r"^[^\s\x00-\x1f\x7f-\x9f]([^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$",
        max_length = 128,
        example = "adj-1"
    )]
    external_ref: String,
    #[schema(format = DateTime, example = "2024-03-10T12:00:00+00:00")]
    occurred_at: String,
    /// Required: why the merchant is credited or debited.
    #[schema(pattern = r"\S", example = "goodwill")]
    reason: String,
}

/// `POST /api/v2/tokens`.
#[derive(ToSchema, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct TokenRequest {
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$", example = "ci-bot")]
    name: String,
    role: Role,
}

// --- responses ---------------------------------------------------------------------------------

/// `GET /healthz`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Liveness {
    #[schema(example = "alive")]
    status: String,
}

/// The store as readiness sees it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct StoreReadiness {
    /// `sqlite` or `mongodb`.
    kind: String,
    reachable: bool,
}

/// `GET /readyz`.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Readiness {
    /// `ready` or `not ready`.
    status: String,
    store: StoreReadiness,
    /// `alive`, `stopped` or `disabled`.
    scheduler: String,
    /// The scheduler's last tick, when it runs.
    last_tick: Option<chrono::DateTime<chrono::Utc>>,
}

/// A recorded transaction.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TransactionView {
    id: uuid::Uuid,
    merchant_id: String,
    kind: TransactionKind,
    status: TransactionStatus,
    /// Major units, exact.
    amount: String,
    amount_minor: i64,
    currency: String,
    method: PaymentMethod,
    external_ref: String,
    /// For refunds and chargebacks: the payment's external_ref.
    refund_of: Option<String>,
    occurred_at: chrono::DateTime<chrono::Utc>,
    created_at: chrono::DateTime<chrono::Utc>,
    settlement_date: chrono::NaiveDate,
    late: bool,
}

/// A claimed run, settling in the background.
#[derive(ToSchema, serde::Deserialize)]
#[allow(dead_code)]
pub struct RunStarted {
    settlement: Settlement,
    /// Where to follow it.
    status_url: String,
    /// The approved request, when the run comes from one.
    rerun_request: Option<RerunRequest>,
}

/// A rerun that awaits a second operator's approval.
#[derive(ToSchema, serde::Deserialize)]
#[allow(dead_code)]
pub struct RerunAwaitingApproval {
    rerun_request: RerunRequest,
    approve_url: String,
}

/// What a rerun answers: the run (no approval needed) or the request (four eyes).
#[derive(ToSchema, serde::Deserialize)]
#[serde(untagged)]
#[allow(dead_code, clippy::large_enum_variant)]
pub enum RerunAccepted {
    Started(RunStarted),
    Requested(RerunAwaitingApproval),
}

/// A rejected rerun request.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RerunDecided {
    rerun_request: RerunRequest,
}

/// Rerun requests.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RerunRequestList {
    items: Vec<RerunRequest>,
}

/// One page of settlements.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct HistoryPage {
    items: Vec<Settlement>,
    #[schema(minimum = 1)]
    page: u32,
    #[schema(minimum = 1, maximum = 500)]
    per_page: u32,
    has_more: bool,
}

/// A settlement with its late transactions and notifications.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct SettlementDetail {
    settlement: Settlement,
    late_transactions: Vec<TransactionView>,
    notifications: Vec<Notification>,
}

/// One page of a revision's merchant lines.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct LinesPage {
    settlement_date: chrono::NaiveDate,
    revision: u32,
    items: Vec<SettlementLine>,
    #[schema(minimum = 1)]
    page: u32,
    #[schema(minimum = 1, maximum = 500)]
    per_page: u32,
    total: u64,
}

/// Every revision of a date.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct RevisionList {
    settlement_date: chrono::NaiveDate,
    items: Vec<Settlement>,
}

/// The payouts of a date.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PayoutList {
    settlement_date: chrono::NaiveDate,
    items: Vec<Payout>,
}

/// The payout a callback updated.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct CallbackApplied {
    payout: Payout,
}

/// One page of the audit trail.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct AuditPage {
    items: Vec<AuditEvent>,
    #[schema(minimum = 1)]
    page: u32,
    #[schema(minimum = 1, maximum = 500)]
    per_page: u32,
    has_more: bool,
}

/// An API token as shown: never its secret or hash.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TokenView {
    id: uuid::Uuid,
    name: String,
    role: Role,
    created_at: chrono::DateTime<chrono::Utc>,
    created_by: String,
    revoked_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A new token: its secret is shown this once.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TokenCreated {
    id: uuid::Uuid,
    name: String,
    role: Role,
    created_at: chrono::DateTime<chrono::Utc>,
    created_by: String,
    revoked_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The secret itself (the store keeps only its hash).
    token: String,
}

/// API tokens.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TokenList {
    items: Vec<TokenView>,
}

/// The calling token.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct WhoAmI {
    name: String,
    role: Role,
}

/// How merchant lines may be sorted.
#[derive(ToSchema)]
#[allow(dead_code, non_camel_case_types)]
pub enum LineSort {
    merchant_id,
    net_minor,
    gross_minor,
    fees_minor,
    transaction_count,
}

/// Ascending or descending.
#[derive(ToSchema)]
#[allow(dead_code, non_camel_case_types)]
pub enum SortOrder {
    asc,
    desc,
}

// --- reconciliation answers --------------------------------------------------------------------

/// One statement of an imported file, and whether this import added it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct StatementImported {
    #[schema(value_type = String, pattern = "^(imported|already_imported)$")]
    outcome: String,
    statement: StoredStatement,
}

/// What importing a file did.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct StatementsImported {
    statements: Vec<StatementImported>,
    /// Entries this import added (none for statements imported before).
    entries_imported: u32,
}

/// The statements imported.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct StatementList {
    items: Vec<StoredStatement>,
}

/// What a run decided for one kind.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct KindRunView {
    kind: StatementKind,
    matches: u32,
    /// Matches a person must confirm (a difference beyond tolerance).
    matches_to_review: u32,
    duplicates: u32,
    /// Decided by someone else while the run computed: left to them.
    skipped: u32,
}

/// What a run decided, and how many exceptions are open after it.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ReconciliationRun {
    kinds: Vec<KindRunView>,
    open_exceptions: u64,
}

/// An item with its kind, and whether it is an exception people must work.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ItemView {
    kind: StatementKind,
    exception: bool,
    #[schema(inline)]
    #[serde(flatten)]
    item: Item,
}

/// One page of items.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ItemPage {
    items: Vec<ItemView>,
    #[schema(minimum = 1)]
    page: u32,
    #[schema(minimum = 1, maximum = 500)]
    per_page: u32,
    total: u64,
}

/// Decisions.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DecisionList {
    items: Vec<Decision>,
}

/// The decision a request recorded.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct DecisionRecorded {
    decision: Decision,
}
