//! The OpenAPI 3.1 document of the API (`GET /api/v2/openapi.json`), generated from one table of
//! routes so that the document and the router cannot drift apart (a test calls every entry).

use serde_json::{json, Map, Value};

/// One documented route.
pub struct RouteDoc {
    pub method: &'static str,
    /// Relative to `/api/v2` for API routes; absolute for health and metrics.
    pub path: &'static str,
    pub summary: &'static str,
    /// `None`: no token; else the least role that may call it.
    pub role: Option<&'static str>,
    /// POST routes require an `Idempotency-Key`.
    pub idempotent: bool,
}

const fn route(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    role: Option<&'static str>,
) -> RouteDoc {
    RouteDoc {
        method,
        path,
        summary,
        role,
        idempotent: matches!(method.as_bytes(), b"post"),
    }
}

pub const ROUTES: &[RouteDoc] = &[
    route("get", "/healthz", "Liveness", None),
    route(
        "get",
        "/readyz",
        "Readiness: the store answers and the scheduler is alive",
        None,
    ),
    route("get", "/metrics", "Prometheus metrics", None),
    route(
        "get",
        "/api/v2/openapi.json",
        "This document",
        Some("viewer"),
    ),
    route(
        "post",
        "/api/v2/finance/settlement/trigger",
        "Settle the latest closed business date",
        Some("operator"),
    ),
    route(
        "post",
        "/api/v2/finance/settlement/trigger/{date}",
        "Settle a business date",
        Some("operator"),
    ),
    route(
        "post",
        "/api/v2/finance/settlement/retry/{date}",
        "Resume a failed settlement",
        Some("operator"),
    ),
    route(
        "post",
        "/api/v2/finance/settlement/rerun/{date}",
        "Settle a date again as a new revision (reason required; may need approval)",
        Some("operator"),
    ),
    route(
        "get",
        "/api/v2/finance/settlement/rerun-requests",
        "Rerun requests awaiting or given a second operator's decision",
        Some("viewer"),
    ),
    route(
        "post",
        "/api/v2/finance/settlement/rerun-requests/{id}/approve",
        "Approve another operator's rerun request and claim its run in one step (409 when the claim is refused, the request then stays pending; 409 revision-moved when the request is stale)",
        Some("operator"),
    ),
    route(
        "post",
        "/api/v2/finance/settlement/rerun-requests/{id}/reject",
        "Reject a pending rerun request (another operator's, or withdraw one's own)",
        Some("operator"),
    ),
    route(
        "get",
        "/api/v2/finance/settlement/history",
        "Settlements, newest first (paged; status, from, to)",
        Some("viewer"),
    ),
    route(
        "get",
        "/api/v2/finance/settlement/stats/summary",
        "Counts, volumes, fees, net, success rate and top merchants over a range",
        Some("viewer"),
    ),
    route(
        "get",
        "/api/v2/finance/settlement/stats/chart.png",
        "Daily gross, fees and net per currency (PNG)",
        Some("viewer"),
    ),
    route(
        "get",
        "/api/v2/finance/settlement/stats/chart.svg",
        "Daily gross, fees and net per currency (SVG)",
        Some("viewer"),
    ),
    route(
        "get",
        "/api/v2/finance/settlement/{date}",
        "A settlement (latest revision, or ?revision=n) with late transactions and notifications",
        Some("viewer"),
    ),
    route(
        "get",
        "/api/v2/finance/settlement/{date}/lines",
        "Merchant lines (paged, sortable, searchable)",
        Some("viewer"),
    ),
    route(
        "get",
        "/api/v2/finance/settlement/{date}/revisions",
        "Every revision of a date",
        Some("viewer"),
    ),
    route(
        "get",
        "/api/v2/finance/settlement/{date}/payouts",
        "Payouts of a date",
        Some("viewer"),
    ),
    route(
        "get",
        "/api/v2/finance/settlement/{date}/export.csv",
        "Merchant lines as RFC 4180 CSV",
        Some("viewer"),
    ),
    route(
        "post",
        "/api/v2/finance/payouts/callback",
        "The payout provider's signed status callback",
        Some("operator"),
    ),
    route(
        "get",
        "/api/v2/finance/audit",
        "The audit trail, newest first (paged; subject, action and actor match exactly; from inclusive and to exclusive, RFC 3339 instants; from after to is a 422)",
        Some("viewer"),
    ),
    route(
        "post",
        "/api/v2/payments",
        "Record a payment",
        Some("operator"),
    ),
    route(
        "get",
        "/api/v2/payments/{id}",
        "A recorded transaction",
        Some("viewer"),
    ),
    route(
        "post",
        "/api/v2/payments/{id}/refunds",
        "Refund (part of) a payment (409 returns-in-flight, with Retry-After, while another return of it is in doubt; not kept)",
        Some("operator"),
    ),
    route(
        "post",
        "/api/v2/payments/{id}/chargebacks",
        "Record a chargeback of (part of) a payment (409 returns-in-flight, with Retry-After, while another return of it is in doubt; not kept)",
        Some("operator"),
    ),
    route(
        "post",
        "/api/v2/adjustments",
        "Credit or debit a merchant (reason required)",
        Some("operator"),
    ),
    route(
        "get",
        "/api/v2/tokens",
        "API tokens (never their secrets)",
        Some("admin"),
    ),
    route(
        "post",
        "/api/v2/tokens",
        "Create a token (its secret is shown once)",
        Some("admin"),
    ),
    route(
        "delete",
        "/api/v2/tokens/{name}",
        "Revoke a token",
        Some("admin"),
    ),
    route(
        "get",
        "/api/v2/whoami",
        "The calling token's name and role (never the token or its hash)",
        Some("viewer"),
    ),
];

fn parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|segment| segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
        .collect()
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let mut operation = json!({
            "summary": route.summary,
            "parameters": parameters(route.path),
            "responses": {
                "default": {
                    "description": "An answer; errors are RFC 9457 problems (application/problem+json) with a stable `type`"
                }
            },
        });
        if let Some(role) = route.role {
            operation["security"] = json!([{ "bearer": [] }]);
            operation["x-settle-role"] = json!(role);
        }
        if route.idempotent {
            operation["parameters"]
                .as_array_mut()
                .expect("parameters")
                .push(json!({ "name": "Idempotency-Key", "in": "header", "required": true, "schema": { "type": "string", "maxLength": 255 } }));
        }
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        entry[route.method] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Settle",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Settle a marketplace's business days exactly once: payments in, settlements, payouts, statistics.",
        },
        "components": { "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } } },
        "paths": Value::Object(paths),
    })
}
