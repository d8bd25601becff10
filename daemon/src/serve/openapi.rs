//! The OpenAPI 3.1 document of the API (`GET /api/v2/openapi.json`), generated with utoipa from the
//! handlers' annotations and the types they read and answer (`schema`), so that it cannot drift.

use serde_json::{json, Value};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::routes::{admin, callbacks, health, payments, reconciliation, settlements, stats};
use super::schema::{ProblemDetails, ReadProblems};
use settle_core::model::{
    AuditAction, AuditEvent, AuditOutcome, CurrencyTotals, Lease, Notification, NotificationStatus,
    PaymentMethod, Payout, PayoutStatus, RerunRequest, RerunRequestStatus, Role, RunTrigger,
    Settlement, SettlementFigures, SettlementLine, SettlementStatus, TransactionKind,
    TransactionStatus,
};
use settle_core::reconcile::{
    Decision, DecisionAction, DecisionState, Item, ItemSide, ItemStatus, StatementFormat,
    StatementIdentity, StatementKind, WriteOffCategory,
};
use settle_core::store::StoredStatement;

/// The name of the bearer security scheme; each operation's requirement lists its least role.
pub const BEARER: &str = "bearer";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Settle",
        description = "Settle a marketplace's business days exactly once: payments in, settlements, payouts, statistics. Errors are RFC 9457 problems (application/problem+json) with a stable `type`."
    ),
    paths(
        health::healthz,
        health::readyz,
        health::metrics,
        openapi_json,
        settlements::trigger,
        settlements::trigger_date,
        settlements::retry,
        settlements::rerun,
        settlements::rerun_requests,
        settlements::approve,
        settlements::reject,
        settlements::history,
        stats::summary,
        stats::chart_png,
        stats::chart_svg,
        settlements::detail,
        settlements::lines,
        settlements::revisions,
        settlements::payouts,
        settlements::export,
        callbacks::payout_status,
        admin::audit,
        payments::create_payment,
        payments::get_payment,
        payments::create_refund,
        payments::create_chargeback,
        payments::create_adjustment,
        admin::list_tokens,
        admin::create_token,
        admin::revoke_token,
        admin::whoami,
        reconciliation::import,
        reconciliation::statements,
        reconciliation::run,
        reconciliation::items,
        reconciliation::exceptions,
        reconciliation::decisions,
        reconciliation::report,
        reconciliation::create_match,
        reconciliation::create_expectation,
        reconciliation::create_write_off,
        reconciliation::unmatch,
        reconciliation::confirm,
        reconciliation::adjust,
        reconciliation::approve_write_off,
        reconciliation::reject_write_off,
    ),
    components(schemas(
        ProblemDetails,
        Role,
        SettlementStatus,
        RunTrigger,
        RerunRequestStatus,
        TransactionKind,
        TransactionStatus,
        PaymentMethod,
        PayoutStatus,
        NotificationStatus,
        Settlement,
        SettlementFigures,
        SettlementLine,
        CurrencyTotals,
        Lease,
        Payout,
        Notification,
        RerunRequest,
        AuditAction,
        AuditOutcome,
        AuditEvent,
        StatementKind,
        StatementFormat,
        StatementIdentity,
        StoredStatement,
        ItemSide,
        ItemStatus,
        Item,
        DecisionAction,
        DecisionState,
        WriteOffCategory,
        Decision,
    )),
    modifiers(&BearerScheme)
)]
struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token (`settle token create`); the requirement of each operation \
                         names the least role that may call it (viewer < operator < admin)",
                    ))
                    .build(),
            ),
        );
    }
}

/// `GET /api/v2/openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/api/v2/openapi.json",
    summary = "This document",
    responses(
        (status = 200, description = "The OpenAPI 3.1 document", body = Object),
        ReadProblems,
    ),
    security(("bearer" = ["viewer"])),
)]
pub(super) async fn openapi_json(
    caller: super::extract::Caller,
) -> Result<axum::response::Response, super::problem::Problem> {
    use axum::response::IntoResponse;
    caller.require(Role::Viewer)?;
    Ok(axum::Json(document()).into_response())
}

/// The whole document, with `x-settle-role` (the least role) beside each secured operation.
pub fn document() -> Value {
    let mut document = serde_json::to_value(ApiDoc::openapi()).expect("the document serializes");
    document["info"]["version"] = json!(env!("CARGO_PKG_VERSION"));
    if let Some(paths) = document["paths"].as_object_mut() {
        for operations in paths.values_mut() {
            let Some(operations) = operations.as_object_mut() else {
                continue;
            };
            for operation in operations.values_mut() {
                let role = operation["security"][0][BEARER][0].clone();
                if role.is_string() {
                    operation["x-settle-role"] = role;
                }
            }
        }
    }
    document
}
