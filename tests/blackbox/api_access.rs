//! Black-box HTTP tests of access control, payments and bad input: the role matrix over every route
//! of the OpenAPI document, tokens and whoami, idempotent payments, problems for bad bodies, health,
//! and the audit trail with its filters.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::{json, Value};
use settle_core::auth::hash_token;
use uuid::Uuid;

use settle_tests::mongo::FreshDatabase;

use crate::daemon::{payment_body, Daemon, Reply, Setup};

/// Every daemon here leaves settling to the tests.
const CONFIG: &str = "[scheduler]\nenabled = false\n";
/// When the test payments happened: a past instant, long before any test runs.
const OCCURRED_AT: &str = "2024-03-10T12:00:00+00:00";
/// A past business date for `{date}` path parameters.
const PAST_DATE: &str = "2024-03-10";
/// The smallest request body limit the configuration accepts, in bytes.
const SMALL_BODY_LIMIT_BYTES: usize = 1_024;
/// Roles from least to most powerful.
const ROLES: [&str; 3] = ["viewer", "operator", "admin"];
/// Routes that answer without a token.
const PUBLIC_PATHS: [&str; 3] = ["/healthz", "/readyz", "/metrics"];
/// What a panic or a backtrace would leave in a response body.
const CRASH_MARKERS: [&str; 4] = ["panicked at", "stack backtrace", "RUST_BACKTRACE", ".rs:"];

/// A fresh idempotency key.
fn key() -> String {
    Uuid::new_v4().to_string()
}

fn rank(role: &str) -> usize {
    ROLES
        .iter()
        .position(|r| *r == role)
        .unwrap_or_else(|| panic!("unknown role {role:?}"))
}

/// Asserts that a textual response carries no crash text and none of `secrets` (nor, unless it
/// is the one answer that shows a new token, anything shaped like a token).
#[track_caller]
fn assert_clean(reply: &Reply, secrets: &[&str]) {
    let content_type = reply.header("content-type").unwrap_or_default();
    if !(content_type.contains("json") || content_type.starts_with("text/")) {
        return;
    }
    let text = reply.text();
    for marker in CRASH_MARKERS {
        assert!(
            !text.contains(marker),
            "{}: the body has {marker:?}: {text}",
            reply.description
        );
    }
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "{}: the body shows a token secret: {text}",
            reply.description
        );
    }
    assert!(
        !text.contains("stl_"),
        "{}: the body shows something token-shaped: {text}",
        reply.description
    );
}

/// One (method, path) of the OpenAPI document and the least role it documents.
#[derive(Debug, Clone)]
struct DocumentedRoute {
    method: Method,
    template: String,
    role: Option<String>,
    operation: Value,
}

fn documented_routes(document: &Value) -> Vec<DocumentedRoute> {
    let paths = document["paths"]
        .as_object()
        .expect("the document has paths");
    let mut routes = Vec::new();
    for (template, operations) in paths {
        for (method, operation) in operations.as_object().expect("operations") {
            routes.push(DocumentedRoute {
                method: method.to_ascii_uppercase().parse().expect("an HTTP method"),
                template: template.clone(),
                role: operation["x-settle-role"].as_str().map(str::to_string),
                operation: operation.clone(),
            });
        }
    }
    routes
}

/// The template with its `{parameters}` filled from `values`; panics on a parameter it does not
/// know, so that a new kind of parameter cannot go untested.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    template
        .split('/')
        .map(
            |segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(name) => values
                    .iter()
                    .find(|(n, _)| *n == name)
                    .unwrap_or_else(|| panic!("{template}: no test value for {{{name}}}"))
                    .1
                    .to_string(),
                None => segment.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// Calls a route as a well-formed request would (a key and a JSON body on POST), with this
/// `Authorization` header value, if any.
async fn call_route(
    daemon: &Daemon,
    route: &DocumentedRoute,
    path: &str,
    authorization: Option<&str>,
) -> Reply {
    let mut call = daemon.call(route.method.clone(), path);
    if let Some(value) = authorization {
        call = call.header("authorization", value);
    }
    if route.method == Method::POST {
        call = call.key(&key()).json(&json!({}));
    }
    call.send().await
}

/// The newest audit events (up to 500), read with `token`.
async fn audit_events(daemon: &Daemon, token: &str) -> Vec<Value> {
    let page = daemon
        .get("/api/v2/finance/audit?per_page=500")
        .bearer(token)
        .send()
        .await
        .expect(200);
    page["items"].as_array().expect("audit items").clone()
}

/// The `http.request` audit events of one request id.
fn request_events<'a>(events: &'a [Value], request_id: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["action"] == "http.request" && e["detail"]["request_id"] == request_id)
        .collect()
}

/// How many transactions the store holds on a settlement date.
async fn transactions_on(setup: &Setup, settlement_date: &str) -> usize {
    let store = setup.sandbox.store().await;
    store
        .transactions_page(settlement_date.parse().expect("a date"), None, 1_000)
        .await
        .expect("read transactions")
        .len()
}

fn return_body(amount: &str, external_ref: &str) -> Value {
    json!({
        "amount": amount,
        "external_ref": external_ref,
        "occurred_at": OCCURRED_AT,
        "reason": "customer asked",
    })
}

fn adjustment_body(amount: &str, external_ref: &str, reason: &str) -> Value {
    json!({
        "merchant_id": "m-0042",
        "amount": amount,
        "currency": "USD",
        "external_ref": external_ref,
        "occurred_at": OCCURRED_AT,
        "reason": reason,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_route_admits_exactly_the_roles_it_documents() {
    let setup = Setup::sqlite(CONFIG);
    let tokens: Vec<(&str, String)> = ROLES
        .iter()
        .map(|role| (*role, setup.token(&format!("matrix-{role}"), role)))
        .collect();
    let revoked = setup.token("matrix-revoked", "admin");
    setup
        .settle(&["token", "revoke", "matrix-revoked"])
        .assert_ok();
    setup.token("matrix-victim", "viewer");
    let daemon = setup.start();
    let viewer = &tokens[0].1;
    let mut secrets: Vec<&str> = tokens.iter().map(|(_, t)| t.as_str()).collect();
    secrets.push(&revoked);

    let document = daemon
        .get("/api/v2/openapi.json")
        .bearer(viewer)
        .send()
        .await
        .expect(200);
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let routes = documented_routes(&document);

    // The document says who may call what, consistently.
    let public: BTreeSet<String> = routes
        .iter()
        .filter(|r| r.role.is_none())
        .map(|r| format!("{} {}", r.method, r.template))
        .collect();
    let expected_public: BTreeSet<String> =
        PUBLIC_PATHS.iter().map(|p| format!("GET {p}")).collect();
    assert_eq!(
        public, expected_public,
        "only health and metrics are public"
    );
    for route in &routes {
        let name = format!("{} {}", route.method, route.template);
        match &route.role {
            Some(role) => {
                rank(role);
                assert_eq!(
                    route.operation["security"],
                    json!([{ "bearer": [role] }]),
                    "{name}: the requirement names the least role"
                );
            }
            None => assert!(route.operation.get("security").is_none(), "{name}"),
        }
        if route.method != Method::GET {
            let role = route.role.as_deref().unwrap_or("none");
            assert!(
                rank(role) >= rank("operator"),
                "{name}: a viewer must never change anything, yet it is documented as {role}"
            );
        }
        if route.template.starts_with("/api/v2/tokens") {
            assert_eq!(route.role.as_deref(), Some("admin"), "{name}");
        }
        if route.method == Method::POST {
            let parameters = route.operation["parameters"].as_array().expect("params");
            assert!(
                parameters
                    .iter()
                    .any(|p| p["name"] == "Idempotency-Key" && p["required"] == true),
                "{name}: POST documents its required Idempotency-Key"
            );
        }
    }
    assert!(
        routes.len() >= 30,
        "the document lost routes: {}",
        routes.len()
    );

    let garbage = format!("Bearer stl_{}", "0".repeat(64));
    let revoked_header = format!("Bearer {revoked}");
    let values = [
        ("date", PAST_DATE),
        ("id", "6f1c2b9e-4d3a-4c8e-9b7f-0a1d2e3f4a5b"),
        ("name", "matrix-victim"),
    ];
    for route in &routes {
        let path = fill(&route.template, &values);
        let name = format!("{} {path}", route.method);
        let Some(required) = route.role.as_deref() else {
            let reply = call_route(&daemon, route, &path, None).await;
            assert_eq!(reply.status, 200, "{name} answers without a token");
            assert_clean(&reply, &secrets);
            continue;
        };
        for authorization in [
            None,
            Some(garbage.as_str()),
            Some("Bearer not-a-settle-token"),
            Some("Basic dXNlcjpwYXNz"),
            Some(revoked_header.as_str()),
        ] {
            let reply = call_route(&daemon, route, &path, authorization).await;
            let problem = reply.expect_problem(401, "unauthorized");
            assert!(
                problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
                "{name}: {problem}"
            );
            assert_clean(&reply, &secrets);
        }
        for (role, token) in &tokens {
            let reply = call_route(&daemon, route, &path, Some(&format!("Bearer {token}"))).await;
            assert_clean(&reply, &secrets);
            if rank(role) < rank(required) {
                let problem = reply.expect_problem(403, "forbidden");
                assert!(
                    problem["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains(required)),
                    "{name}: the refusal names the role needed: {problem}"
                );
            } else {
                assert!(
                    reply.status != 401 && reply.status != 403,
                    "{name} as {role} (needs {required}): {} {}",
                    reply.status,
                    reply.text()
                );
            }
        }
    }

    // The admin's DELETE /api/v2/tokens/matrix-victim went through: the victim is revoked.
    let listed = daemon
        .get("/api/v2/tokens")
        .bearer(&tokens[2].1)
        .send()
        .await
        .expect(200);
    let victim = listed["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|t| t["name"] == "matrix-victim")
        .expect("the victim is listed")
        .clone();
    assert!(victim["revoked_at"].is_string(), "{victim}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_create_list_and_revoke_tokens_and_the_store_keeps_only_hashes() {
    let setup = Setup::sqlite(CONFIG);
    let admin = setup.token("root-admin", "admin");
    let desk = setup.token("desk-operator", "operator");
    let daemon = setup.start();

    let created_key = key();
    let created = daemon
        .post("/api/v2/tokens")
        .bearer(&admin)
        .key(&created_key)
        .json(&json!({ "name": "ci-bot", "role": "operator" }))
        .send()
        .await;
    let body = created.expect(201);
    let secret = body["token"]
        .as_str()
        .expect("the secret is shown")
        .to_string();
    assert!(secret.starts_with("stl_") && secret.len() == 68, "{body}");
    assert_eq!(body["name"], "ci-bot");
    assert_eq!(body["role"], "operator");
    assert_eq!(body["created_by"], "token:root-admin");
    assert!(body["revoked_at"].is_null(), "{body}");
    assert!(body.get("token_hash").is_none(), "{body}");
    let secrets = [admin.as_str(), desk.as_str(), secret.as_str()];

    // The new token works, with its role and no more.
    let payment = daemon
        .post("/api/v2/payments")
        .bearer(&secret)
        .key(&key())
        .json(&payment_body("m-0042", "12.50", "ord-ci-1", OCCURRED_AT))
        .send()
        .await;
    assert_eq!(payment.expect(201)["amount"], "12.50");
    daemon
        .get("/api/v2/tokens")
        .bearer(&secret)
        .send()
        .await
        .expect_problem(403, "forbidden");

    // The secret is shown once: the same request again creates nothing and shows nothing.
    let again = daemon
        .post("/api/v2/tokens")
        .bearer(&admin)
        .key(&created_key)
        .json(&json!({ "name": "ci-bot", "role": "operator" }))
        .send()
        .await;
    again.expect_problem(409, "conflict");
    assert_clean(&again, &secrets);

    // The list shows names and roles, never a secret or a hash.
    let listed = daemon.get("/api/v2/tokens").bearer(&admin).send().await;
    let list = listed.expect(200);
    assert_clean(&listed, &secrets);
    let text = listed.text();
    for secret in secrets {
        assert!(
            !text.contains(&hash_token(secret)),
            "a hash is listed: {text}"
        );
    }
    let items = list["items"].as_array().expect("items");
    let roles: BTreeSet<(String, String)> = items
        .iter()
        .map(|t| {
            assert!(
                t.get("token").is_none() && t.get("token_hash").is_none(),
                "{t}"
            );
            (
                t["name"].as_str().unwrap().to_string(),
                t["role"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String)> = [
        ("ci-bot", "operator"),
        ("desk-operator", "operator"),
        ("root-admin", "admin"),
    ]
    .iter()
    .map(|(n, r)| (n.to_string(), r.to_string()))
    .collect();
    assert_eq!(roles, expected);

    // Taken names (by the API or the command line) are a conflict.
    for name in ["ci-bot", "desk-operator"] {
        let reply = daemon
            .post("/api/v2/tokens")
            .bearer(&admin)
            .key(&key())
            .json(&json!({ "name": name, "role": "viewer" }))
            .send()
            .await;
        let problem = reply.expect_problem(409, "conflict");
        assert!(
            problem["detail"].as_str().unwrap().contains(name),
            "{problem}"
        );
    }

    // Bad input names what is wrong.
    for (body, field) in [
        (json!({ "name": "auditor", "role": "root" }), "role"),
        (json!({ "name": "has space", "role": "viewer" }), "name"),
        (json!({ "name": "", "role": "viewer" }), "name"),
        (json!({ "name": "x".repeat(65), "role": "viewer" }), "name"),
        (json!({ "role": "viewer" }), "name"),
        (json!({ "name": "auditor" }), "role"),
        (json!({ "name": "auditor", "role": 2 }), "role"),
        (
            json!({ "name": "auditor", "role": "viewer", "secret": "mine" }),
            "secret",
        ),
    ] {
        let reply = daemon
            .post("/api/v2/tokens")
            .bearer(&admin)
            .key(&key())
            .json(&body)
            .send()
            .await;
        let problem = reply.expect_problem(422, "invalid-request");
        assert_eq!(problem["field"], field, "{body}: {problem}");
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with(&format!("{field}: "))),
            "{body}: the detail names {field:?}: {problem}"
        );
    }

    // Revoking takes effect at once; the name stays taken.
    let revoked = daemon
        .delete("/api/v2/tokens/ci-bot")
        .bearer(&admin)
        .send()
        .await
        .expect(200);
    assert_eq!(revoked["name"], "ci-bot");
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    daemon
        .get("/api/v2/payments/6f1c2b9e-4d3a-4c8e-9b7f-0a1d2e3f4a5b")
        .bearer(&secret)
        .send()
        .await
        .expect_problem(401, "unauthorized");
    daemon
        .delete("/api/v2/tokens/no-such-token")
        .bearer(&admin)
        .send()
        .await
        .expect_problem(404, "not-found");
    daemon
        .post("/api/v2/tokens")
        .bearer(&admin)
        .key(&key())
        .json(&json!({ "name": "ci-bot", "role": "operator" }))
        .send()
        .await
        .expect_problem(409, "conflict");

    // The store knows the token by its hash only.
    let store = setup.sandbox.store().await;
    let stored = store
        .token_by_hash(&hash_token(&secret))
        .await
        .expect("look up")
        .expect("the hash is stored");
    assert_eq!(stored.name, "ci-bot");
    assert!(!stored.is_active());
    drop(store);
    let data_dir = setup.sandbox.data_dir();
    let mut files = 0;
    for entry in std::fs::read_dir(&data_dir).expect("data dir") {
        let path = entry.expect("entry").path();
        if !path.is_file() {
            continue;
        }
        files += 1;
        let bytes = std::fs::read(&path).expect("read store file");
        for secret in secrets {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds a token secret",
                path.display()
            );
        }
    }
    assert!(files > 0, "no store files in {}", data_dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payments_refunds_chargebacks_and_adjustments_are_recorded_over_http() {
    let setup = Setup::sqlite(CONFIG);
    let operator = setup.token("pay-operator", "operator");
    let viewer = setup.token("pay-viewer", "viewer");
    let daemon = setup.start();
    let secrets = [operator.as_str(), viewer.as_str()];

    let reply = daemon
        .post("/api/v2/payments")
        .bearer(&operator)
        .key(&key())
        .json(&payment_body("m-0042", "12.50", "ord-1", OCCURRED_AT))
        .send()
        .await;
    let payment = reply.expect(201);
    assert_clean(&reply, &secrets);
    let id = payment["id"].as_str().expect("an id").to_string();
    Uuid::parse_str(&id).expect("the id is a UUID");
    assert_eq!(payment["kind"], "payment");
    assert_eq!(payment["amount"], "12.50");
    assert_eq!(payment["amount_minor"], 1250);
    assert_eq!(payment["currency"], "USD");
    assert_eq!(payment["merchant_id"], "m-0042");
    assert_eq!(payment["external_ref"], "ord-1");
    assert_eq!(
        reply.header("location").as_deref(),
        Some(format!("/api/v2/payments/{id}").as_str())
    );
    let settlement_date = payment["settlement_date"]
        .as_str()
        .expect("a settlement date")
        .to_string();

    // Any role reads it back, exactly as it was answered.
    let read = daemon
        .get(&format!("/api/v2/payments/{id}"))
        .bearer(&viewer)
        .send()
        .await
        .expect(200);
    assert_eq!(read, payment);

    let refund = daemon
        .post(&format!("/api/v2/payments/{id}/refunds"))
        .bearer(&operator)
        .key(&key())
        .json(&return_body("2.50", "ref-1"))
        .send()
        .await
        .expect(201);
    assert_eq!(refund["kind"], "refund");
    assert_eq!(refund["amount"], "2.50");
    assert_eq!(refund["refund_of"], "ord-1");
    assert_eq!(refund["merchant_id"], "m-0042");
    assert_eq!(refund["currency"], "USD");
    assert_ne!(refund["id"], payment["id"]);

    let chargeback = daemon
        .post(&format!("/api/v2/payments/{id}/chargebacks"))
        .bearer(&operator)
        .key(&key())
        .json(&return_body("1.00", "cb-1"))
        .send()
        .await
        .expect(201);
    assert_eq!(chargeback["kind"], "chargeback");
    assert_eq!(chargeback["amount_minor"], 100);
    assert_eq!(chargeback["refund_of"], "ord-1");

    // 12.50 - 2.50 - 1.00 = 9.00 is left to return, and not a cent more.
    let too_much = daemon
        .post(&format!("/api/v2/payments/{id}/refunds"))
        .bearer(&operator)
        .key(&key())
        .json(&return_body("9.01", "ref-2"))
        .send()
        .await;
    let problem = too_much.expect_problem(422, "refund-exceeds-payment");
    assert!(
        problem["detail"].as_str().unwrap().contains("9.00"),
        "{problem}"
    );
    daemon
        .post(&format!("/api/v2/payments/{id}/refunds"))
        .bearer(&operator)
        .key(&key())
        .json(&return_body("9.00", "ref-3"))
        .send()
        .await
        .expect(201);
    daemon
        .post(&format!("/api/v2/payments/{id}/chargebacks"))
        .bearer(&operator)
        .key(&key())
        .json(&return_body("0.01", "cb-2"))
        .send()
        .await
        .expect_problem(422, "refund-exceeds-payment");

    // Adjustments are signed and need a reason.
    let debit = daemon
        .post("/api/v2/adjustments")
        .bearer(&operator)
        .key(&key())
        .json(&adjustment_body("-3.00", "adj-1", "damaged parcel"))
        .send()
        .await
        .expect(201);
    assert_eq!(debit["kind"], "adjustment");
    assert_eq!(debit["amount"], "-3.00");
    assert_eq!(debit["amount_minor"], -300);
    let credit = daemon
        .post("/api/v2/adjustments")
        .bearer(&operator)
        .key(&key())
        .json(&adjustment_body("4.25", "adj-2", "goodwill"))
        .send()
        .await
        .expect(201);
    assert_eq!(credit["amount_minor"], 425);
    for (body, field) in [
        (adjustment_body("-3.00", "adj-3", "  "), "reason"),
        (adjustment_body("0.00", "adj-4", "nothing"), "amount"),
    ] {
        let problem = daemon
            .post("/api/v2/adjustments")
            .bearer(&operator)
            .key(&key())
            .json(&body)
            .send()
            .await
            .expect_problem(422, "invalid-request");
        assert_eq!(problem["field"], field, "{problem}");
    }

    // Unknown and malformed ids.
    let unknown = Uuid::new_v4();
    daemon
        .get(&format!("/api/v2/payments/{unknown}"))
        .bearer(&viewer)
        .send()
        .await
        .expect_problem(404, "not-found");
    for route in ["refunds", "chargebacks"] {
        daemon
            .post(&format!("/api/v2/payments/{unknown}/{route}"))
            .bearer(&operator)
            .key(&key())
            .json(&return_body("1.00", &format!("{route}-unknown")))
            .send()
            .await
            .expect_problem(404, "payment-not-found");
    }
    daemon
        .get("/api/v2/payments/not-a-uuid")
        .bearer(&viewer)
        .send()
        .await
        .expect_problem(400, "invalid-request");
    // A refund is not a payment to refund.
    let refund_id = refund["id"].as_str().unwrap();
    daemon
        .post(&format!("/api/v2/payments/{refund_id}/refunds"))
        .bearer(&operator)
        .key(&key())
        .json(&return_body("0.50", "ref-of-ref"))
        .send()
        .await
        .expect_problem(422, "payment-not-refundable");

    // payment, refund, chargeback, refund of the rest, two adjustments: nothing refused was kept.
    assert_eq!(transactions_on(&setup, &settlement_date).await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_replay_refuse_reuse_and_are_scoped_per_token() {
    let setup = Setup::sqlite(CONFIG);
    let first = setup.token("idem-first", "operator");
    let second = setup.token("idem-second", "operator");
    let daemon = setup.start();
    let body = payment_body("m-0042", "12.50", "ord-1", OCCURRED_AT);

    let missing = daemon
        .post("/api/v2/payments")
        .bearer(&first)
        .json(&body)
        .send()
        .await;
    let problem = missing.expect_problem(400, "idempotency-key-invalid");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"),
        "{problem}"
    );
    for bad in ["", "has space", &"k".repeat(256), "\"open"] {
        daemon
            .post("/api/v2/payments")
            .bearer(&first)
            .key(bad)
            .json(&body)
            .send()
            .await
            .expect_problem(400, "idempotency-key-invalid");
    }

    let original = daemon
        .post("/api/v2/payments")
        .bearer(&first)
        .key("order-1-key")
        .json(&body)
        .send()
        .await;
    let answered = original.expect(201);
    assert_eq!(original.header("idempotent-replayed"), None);
    let settlement_date = answered["settlement_date"].as_str().unwrap().to_string();

    // The same request again, even spelled differently, is answered from the record.
    let reordered = r#"{ "occurred_at": "2024-03-10T12:00:00+00:00", "external_ref": "ord-1",
        "method": "card", "currency": "USD", "amount": "12.50", "merchant_id": "m-0042" }"#;
    for replay in [
        daemon
            .post("/api/v2/payments")
            .bearer(&first)
            .key("order-1-key")
            .json(&body)
            .send()
            .await,
        daemon
            .post("/api/v2/payments")
            .bearer(&first)
            .key("\"order-1-key\"")
            .body("application/json", reordered)
            .send()
            .await,
    ] {
        assert_eq!(replay.expect(201), answered);
        assert_eq!(
            replay.header("idempotent-replayed").as_deref(),
            Some("true")
        );
        assert_eq!(
            replay.header("location"),
            original.header("location"),
            "replayed headers"
        );
    }
    assert_eq!(transactions_on(&setup, &settlement_date).await, 1);

    // The same key for another request is refused, and changes nothing.
    let other = payment_body("m-0042", "13.00", "ord-1", OCCURRED_AT);
    daemon
        .post("/api/v2/payments")
        .bearer(&first)
        .key("order-1-key")
        .json(&other)
        .send()
        .await
        .expect_problem(422, "idempotency-key-reused");
    let other_path = daemon
        .post("/api/v2/adjustments")
        .bearer(&first)
        .key("order-1-key")
        .json(&adjustment_body("1.00", "adj-1", "other path"))
        .send()
        .await;
    other_path.expect_problem(422, "idempotency-key-reused");
    assert_eq!(transactions_on(&setup, &settlement_date).await, 1);

    // Keys are scoped by token: another token's identical key is a new request, never a replay of
    // someone else's answer nor a mismatch.
    let same_body = daemon
        .post("/api/v2/payments")
        .bearer(&second)
        .key("order-1-key")
        .json(&body)
        .send()
        .await;
    assert_eq!(same_body.header("idempotent-replayed"), None);
    let duplicate = same_body.expect(200);
    assert_eq!(
        duplicate["id"], answered["id"],
        "the same payment is recognised, not recorded twice"
    );
    let second_payment = daemon
        .post("/api/v2/payments")
        .bearer(&second)
        .key("order-2-key")
        .json(&payment_body("m-0042", "7.00", "ord-2", OCCURRED_AT))
        .send()
        .await
        .expect(201);
    let scoped = daemon
        .post("/api/v2/payments")
        .bearer(&first)
        .key("order-2-key")
        .json(&payment_body("m-0042", "8.00", "ord-3", OCCURRED_AT))
        .send()
        .await;
    assert_eq!(scoped.header("idempotent-replayed"), None);
    let third = scoped.expect(201);
    assert_ne!(third["id"], second_payment["id"]);
    assert_eq!(third["amount"], "8.00");
    assert_eq!(transactions_on(&setup, &settlement_date).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_are_problems_that_write_nothing() {
    let setup = Setup::sqlite(&format!(
        "{CONFIG}[server]\nbody_limit_bytes = {SMALL_BODY_LIMIT_BYTES}\n"
    ));
    let operator = setup.token("body-operator", "operator");
    let admin = setup.token("body-admin", "admin");
    let daemon = setup.start();
    let secrets = [operator.as_str(), admin.as_str()];
    // Every refused request uses this key; a correct request with it must still succeed.
    let reused_key = key();

    for (raw, what) in [
        (
            r#"{"merchant_id": "m-0042", "amount": "#.to_string(),
            "truncated",
        ),
        (String::new(), "empty"),
        ("{'amount': '12.50'}".to_string(), "single quotes"),
        ("not json at all".to_string(), "prose"),
    ] {
        let reply = daemon
            .post("/api/v2/payments")
            .bearer(&operator)
            .key(&reused_key)
            .body("application/json", raw)
            .send()
            .await;
        let problem = reply.expect_problem(400, "malformed-json");
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}: {problem}"
        );
        assert_clean(&reply, &secrets);
    }

    let valid = payment_body("m-0042", "12.50", "ord-1", OCCURRED_AT);
    let with = |field: &str, value: Value| {
        let mut body = valid.clone();
        body[field] = value;
        body
    };
    let mut unknown_member = valid.clone();
    unknown_member["amout"] = json!("12.50");
    let mut missing_amount = valid.clone();
    missing_amount.as_object_mut().unwrap().remove("amount");
    for (body, field, named) in [
        (with("amount", json!(12.5)), "amount", "amount"),
        (with("amount", json!("12.345")), "amount", "amount"),
        (with("amount", json!("twelve")), "amount", "amount"),
        (with("amount", json!("-12.50")), "amount", "amount"),
        (with("currency", json!("XYZ")), "currency", "currency"),
        (
            with("occurred_at", json!("2024-03-10 12:00")),
            "occurred_at",
            "occurred_at",
        ),
        (
            with("occurred_at", json!("yesterday")),
            "occurred_at",
            "occurred_at",
        ),
        (with("method", json!("cheque")), "method", "method"),
        (with("status", json!("bogus")), "status", "status"),
        (unknown_member, "amout", "amout"),
        (missing_amount, "amount", "amount"),
        (with("merchant_id", json!(42)), "merchant_id", "merchant_id"),
        (json!(["not", "an", "object"]), "body", "body"),
    ] {
        let reply = daemon
            .post("/api/v2/payments")
            .bearer(&operator)
            .key(&reused_key)
            .json(&body)
            .send()
            .await;
        let problem = reply.expect_problem(422, "invalid-request");
        assert_eq!(problem["field"], field, "{body}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains(named),
            "{body}: the detail names {named:?}: {problem}"
        );
        assert_clean(&reply, &secrets);
    }

    let padding = "x".repeat(SMALL_BODY_LIMIT_BYTES * 2);
    for (path, body) in [
        (
            "/api/v2/payments",
            with("external_ref", json!(padding.clone())),
        ),
        (
            "/api/v2/tokens",
            json!({ "name": "big", "role": "viewer", "padding": padding }),
        ),
    ] {
        let reply = daemon
            .post(path)
            .bearer(&admin)
            .key(&reused_key)
            .json(&body)
            .send()
            .await;
        reply.expect_problem(413, "body-too-large");
        assert_clean(&reply, &secrets);
    }

    for content_type in ["text/plain", "application/x-www-form-urlencoded"] {
        let reply = daemon
            .post("/api/v2/payments")
            .bearer(&operator)
            .key(&reused_key)
            .body(content_type, valid.to_string())
            .send()
            .await;
        reply.expect_problem(415, "unsupported-media-type");
        assert_clean(&reply, &secrets);
    }
    daemon
        .post("/api/v2/payments")
        .bearer(&operator)
        .key(&reused_key)
        .send()
        .await
        .expect_problem(415, "unsupported-media-type");

    // Nothing was written: not the payment, not a token, not even the key.
    let tokens = daemon
        .get("/api/v2/tokens")
        .bearer(&admin)
        .send()
        .await
        .expect(200);
    assert_eq!(tokens["items"].as_array().unwrap().len(), 2, "{tokens}");
    let recorded = daemon
        .post("/api/v2/payments")
        .bearer(&operator)
        .key(&reused_key)
        .json(&valid)
        .send()
        .await;
    let payment = recorded.expect(201);
    assert_eq!(recorded.header("idempotent-replayed"), None);
    let settlement_date = payment["settlement_date"].as_str().unwrap();
    assert_eq!(transactions_on(&setup, settlement_date).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_answer_without_a_token() {
    let setup = Setup::sqlite(CONFIG);
    let daemon = setup.start();

    let alive = daemon.get("/healthz").send().await.expect(200);
    assert_eq!(alive["status"], "alive");
    let ready = daemon.get("/readyz").send().await;
    let readiness = ready.expect(200);
    assert_eq!(readiness["status"], "ready", "{readiness}");
    assert_eq!(readiness["store"]["reachable"], true, "{readiness}");
    assert_eq!(readiness["store"]["kind"], "sqlite", "{readiness}");
    assert_eq!(readiness["scheduler"], "disabled", "{readiness}");

    let metrics = daemon.get("/metrics").send().await;
    assert_eq!(metrics.status, 200, "{}", metrics.text());
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        metrics.header("content-type")
    );
    let text = metrics.text();
    // The contract's series (ops/METRICS.md); `up{job="settle"}` is Prometheus' own.
    assert!(
        text.contains("# TYPE process_cpu_time_seconds_total counter"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE http_server_request_duration_seconds histogram"),
        "{text}"
    );
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').expect("`name value` lines");
        value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("not a sample: {line}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_made_to_require_a_token() {
    let setup = Setup::sqlite(&format!("{CONFIG}[server]\nmetrics_require_token = true\n"));
    let viewer = setup.token("metrics-viewer", "viewer");
    let revoked = setup.token("metrics-revoked", "viewer");
    setup
        .settle(&["token", "revoke", "metrics-revoked"])
        .assert_ok();
    let daemon = setup.start();

    daemon
        .get("/metrics")
        .send()
        .await
        .expect_problem(401, "unauthorized");
    daemon
        .get("/metrics")
        .bearer(&revoked)
        .send()
        .await
        .expect_problem(401, "unauthorized");
    daemon
        .get("/metrics")
        .bearer(&format!("stl_{}", "f".repeat(64)))
        .send()
        .await
        .expect_problem(401, "unauthorized");
    let metrics = daemon.get("/metrics").bearer(&viewer).send().await;
    assert_eq!(metrics.status, 200, "{}", metrics.text());
    assert!(metrics
        .text()
        .contains("# TYPE process_memory_usage_bytes gauge"));
    // Health and readiness stay open.
    daemon.get("/healthz").send().await.expect(200);
    daemon.get("/readyz").send().await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_wrong_methods_are_problems_carrying_the_request_id() {
    let setup = Setup::sqlite(CONFIG);
    let viewer = setup.token("routes-viewer", "viewer");
    let daemon = setup.start();

    for path in ["/api/v2/no-such-route", "/nothing-here", "/api/v3/payments"] {
        let reply = daemon
            .get(path)
            .bearer(&viewer)
            .header("x-request-id", "trace-404")
            .send()
            .await;
        reply.expect_problem(404, "not-found");
        assert_eq!(reply.header("x-request-id").as_deref(), Some("trace-404"));
    }
    for (method, path) in [
        (Method::DELETE, "/api/v2/payments"),
        (Method::GET, "/api/v2/adjustments"),
        (Method::PUT, "/api/v2/tokens"),
        (Method::POST, "/healthz"),
        (Method::PATCH, "/api/v2/finance/audit"),
    ] {
        let reply = daemon
            .call(method.clone(), path)
            .bearer(&viewer)
            .header("x-request-id", "trace-405")
            .send()
            .await;
        reply.expect_problem(405, "method-not-allowed");
        assert_eq!(reply.header("x-request-id").as_deref(), Some("trace-405"));
    }

    // A problem from a handler names the caller's request too.
    let reply = daemon
        .get("/api/v2/payments/not-a-uuid")
        .bearer(&viewer)
        .header("x-request-id", "trace-bad-id")
        .send()
        .await;
    let problem = reply.expect_problem(400, "invalid-request");
    assert_eq!(problem["instance"], "urn:settle:request:trace-bad-id");

    // Successes carry it as well, and an unusable one is replaced by a fresh id.
    let ok = daemon
        .get("/healthz")
        .header("x-request-id", "trace-ok")
        .send()
        .await;
    assert_eq!(ok.header("x-request-id").as_deref(), Some("trace-ok"));
    for unusable in ["has space".to_string(), "r".repeat(129)] {
        let reply = daemon
            .get("/api/v2/nothing")
            .header("x-request-id", &unusable)
            .send()
            .await;
        reply.expect_problem(404, "not-found");
        let id = reply.header("x-request-id").expect("a request id");
        assert_ne!(id, unusable);
        Uuid::parse_str(&id).expect("a fresh UUID");
    }
    let fresh = daemon.get("/healthz").send().await;
    let first = fresh.header("x-request-id").expect("a request id");
    let second = daemon
        .get("/healthz")
        .send()
        .await
        .header("x-request-id")
        .expect("a request id");
    assert_ne!(first, second, "every request gets its own id");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutating_request_is_audited_with_its_actor_request_id_and_outcome() {
    let setup = Setup::sqlite(CONFIG);
    let operator = setup.token("audit-operator", "operator");
    let viewer = setup.token("audit-viewer", "viewer");
    let admin = setup.token("audit-admin", "admin");
    let leaving = setup.token("audit-leaving", "admin");
    let daemon = setup.start();

    let payment = daemon
        .post("/api/v2/payments")
        .bearer(&operator)
        .key(&key())
        .header("x-request-id", "req-payment")
        .json(&payment_body("m-0042", "12.50", "ord-1", OCCURRED_AT))
        .send()
        .await
        .expect(201);
    let payment_id = payment["id"].as_str().unwrap().to_string();
    daemon
        .post("/api/v2/adjustments")
        .bearer(&viewer)
        .key(&key())
        .header("x-request-id", "req-forbidden")
        .json(&adjustment_body("-1.00", "adj-1", "not allowed"))
        .send()
        .await
        .expect_problem(403, "forbidden");
    daemon
        .post("/api/v2/payments")
        .key(&key())
        .header("x-request-id", "req-anonymous")
        .json(&payment_body("m-0042", "1.00", "ord-2", OCCURRED_AT))
        .send()
        .await
        .expect_problem(401, "unauthorized");
    daemon
        .post("/api/v2/payments")
        .bearer(&operator)
        .key(&key())
        .header("x-request-id", "req-invalid")
        .json(&payment_body("m-0042", "1.001", "ord-3", OCCURRED_AT))
        .send()
        .await
        .expect_problem(422, "invalid-request");
    let created = daemon
        .post("/api/v2/tokens")
        .bearer(&admin)
        .key(&key())
        .header("x-request-id", "req-token-create")
        .json(&json!({ "name": "audit-temp", "role": "viewer" }))
        .send()
        .await
        .expect(201);
    let temp_secret = created["token"].as_str().unwrap().to_string();
    daemon
        .delete("/api/v2/tokens/audit-temp")
        .bearer(&admin)
        .header("x-request-id", "req-token-revoke")
        .send()
        .await
        .expect(200);
    // An admin may revoke its own token; the trail still says who did it.
    daemon
        .delete("/api/v2/tokens/audit-leaving")
        .bearer(&leaving)
        .header("x-request-id", "req-self-revoke")
        .send()
        .await
        .expect(200);
    daemon
        .get(&format!("/api/v2/payments/{payment_id}"))
        .bearer(&viewer)
        .header("x-request-id", "req-read")
        .send()
        .await
        .expect(200);

    let events = audit_events(&daemon, &viewer).await;
    for (request_id, actor, subject, outcome, status) in [
        (
            "req-payment",
            "token:audit-operator",
            "POST /api/v2/payments",
            "succeeded",
            201,
        ),
        (
            "req-forbidden",
            "token:audit-viewer",
            "POST /api/v2/adjustments",
            "refused",
            403,
        ),
        (
            "req-anonymous",
            "anonymous",
            "POST /api/v2/payments",
            "refused",
            401,
        ),
        (
            "req-invalid",
            "token:audit-operator",
            "POST /api/v2/payments",
            "refused",
            422,
        ),
        (
            "req-token-create",
            "token:audit-admin",
            "POST /api/v2/tokens",
            "succeeded",
            201,
        ),
        (
            "req-token-revoke",
            "token:audit-admin",
            "DELETE /api/v2/tokens/audit-temp",
            "succeeded",
            200,
        ),
        (
            "req-self-revoke",
            "token:audit-leaving",
            "DELETE /api/v2/tokens/audit-leaving",
            "succeeded",
            200,
        ),
    ] {
        let found = request_events(&events, request_id);
        assert_eq!(found.len(), 1, "{request_id}: one event: {found:?}");
        let event = found[0];
        assert_eq!(event["actor"], actor, "{request_id}: {event}");
        assert_eq!(event["subject"], subject, "{request_id}: {event}");
        assert_eq!(event["outcome"], outcome, "{request_id}: {event}");
        assert_eq!(event["detail"]["status"], status, "{request_id}: {event}");
        assert!(event["occurred_at"].is_string(), "{event}");
    }
    assert!(
        request_events(&events, "req-read").is_empty(),
        "reads are not audited as requests"
    );

    // The operations say what they did, by whom.
    let recorded = events
        .iter()
        .find(|e| e["action"] == "payments.record_payment" && e["outcome"] == "succeeded")
        .expect("the payment is audited");
    assert_eq!(recorded["actor"], "token:audit-operator");
    assert_eq!(recorded["subject"], format!("transaction={payment_id}"));
    for (action, subject) in [
        ("token.create", "token=audit-temp"),
        ("token.revoke", "token=audit-temp"),
    ] {
        assert!(
            events.iter().any(|e| e["action"] == action
                && e["subject"] == subject
                && e["actor"] == "token:audit-admin"),
            "{action} {subject} is audited"
        );
    }
    let trail = serde_json::to_string(&events).unwrap();
    for secret in [&operator, &viewer, &admin, &leaving, &temp_secret] {
        assert!(!trail.contains(secret.as_str()), "a secret in the trail");
    }
}

/// `GET {path}` with `page` and `per_page` set from `query`, read with `token`.
async fn page_of(daemon: &Daemon, token: &str, path: &str, query: &str) -> Reply {
    daemon
        .get(&format!("{path}?{query}"))
        .bearer(token)
        .send()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_past_the_end_is_empty_and_an_absurd_page_is_refused_naming_its_parameter() {
    let setup = Setup::sqlite(CONFIG);
    let viewer = setup.token("pager", "viewer");
    setup
        .settle(&[
            "payment",
            "record",
            "--merchant",
            "m-0042",
            "--amount",
            "12.50",
            "--currency",
            "USD",
            "--method",
            "card",
            "--external-ref",
            "ord-paging",
            "--occurred-at",
            OCCURRED_AT,
            "--idempotency-key",
            &key(),
        ])
        .assert_ok();
    setup.settle(&["run", "--date", PAST_DATE]).assert_ok();
    let daemon = setup.start();
    let lines_path = format!("/api/v2/finance/settlement/{PAST_DATE}/lines");
    let paths = [
        "/api/v2/finance/audit",
        "/api/v2/finance/settlement/history",
        lines_path.as_str(),
    ];
    for path in paths {
        let first = page_of(&daemon, &viewer, path, "page=1&per_page=256")
            .await
            .expect(200);
        assert!(
            !first["items"].as_array().expect("items").is_empty(),
            "{path}: the first page has items: {first}"
        );
        // (page − 1) × per_page = 2^32, 0 in 32-bit arithmetic: the first page again before the
        // fix. Far past the end it is an empty page, as is any page past the end.
        for query in [
            "page=16777217&per_page=256",
            "page=4294967295&per_page=500",
            "page=1000&per_page=1",
        ] {
            let past = page_of(&daemon, &viewer, path, query).await.expect(200);
            assert_eq!(past["items"], json!([]), "{path}?{query}: {past}");
            if past.get("has_more").is_some() {
                assert_eq!(past["has_more"], false, "{path}?{query}: {past}");
            }
        }
        for (query, parameter) in [
            ("page=0", "page"),
            ("page=-1", "page"),
            ("page=abc", "page"),
            ("page=1.5", "page"),
            ("page=4294967296", "page"),
            ("page=99999999999999999999999", "page"),
            ("per_page=0", "per_page"),
            ("per_page=501", "per_page"),
            ("per_page=-5", "per_page"),
            ("page=2&per_page=x", "per_page"),
        ] {
            let reply = page_of(&daemon, &viewer, path, query).await;
            let problem = reply.expect_problem(400, "invalid-request");
            let detail = problem["detail"].as_str().unwrap_or_default();
            assert!(
                detail.starts_with(&format!("{parameter} ")),
                "{path}?{query}: the problem names {parameter}: {problem}"
            );
            assert_clean(&reply, &[&viewer]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_amount_above_the_per_transaction_maximum_is_a_422_naming_the_field_and_the_limit() {
    let setup = Setup::sqlite(&format!(
        "{CONFIG}[payments]\nmax_amount = {{ SAR = \"500.00\" }}\n"
    ));
    let operator = setup.token("limits-operator", "operator");
    let daemon = setup.start();
    // Each fits i64, two of them do not: refused before anything is stored.
    let huge = daemon
        .post("/api/v2/payments")
        .bearer(&operator)
        .key(&key())
        .json(&payment_body(
            "m-0042",
            "50000000000000000.00",
            "ord-huge",
            OCCURRED_AT,
        ))
        .send()
        .await;
    let problem = huge.expect_problem(422, "invalid-request");
    assert_eq!(problem["field"], "amount", "{problem}");
    assert_eq!(
        problem["detail"],
        "amount: 50000000000000000.00 USD is above the per-transaction maximum 10000000000.00 \
         USD (payments.max_amount_minor)",
        "{problem}"
    );
    let debit = daemon
        .post("/api/v2/adjustments")
        .bearer(&operator)
        .key(&key())
        .json(&adjustment_body("-10000000000.01", "adj-huge", "reversal"))
        .send()
        .await;
    let problem = debit.expect_problem(422, "invalid-request");
    assert_eq!(problem["field"], "amount", "{problem}");
    assert!(
        problem["detail"].as_str().is_some_and(|d| d.contains(
            "-10000000000.01 USD is above the per-transaction maximum 10000000000.00 USD"
        )),
        "{problem}"
    );
    let mut riyals = payment_body("m-0042", "500.01", "ord-sar", OCCURRED_AT);
    riyals["currency"] = json!("SAR");
    let problem = daemon
        .post("/api/v2/payments")
        .bearer(&operator)
        .key(&key())
        .json(&riyals)
        .send()
        .await
        .expect_problem(422, "invalid-request");
    assert!(
        problem["detail"].as_str().is_some_and(|d| d.ends_with(
            "500.01 SAR is above the per-transaction maximum 500.00 SAR (payments.max_amount.SAR)"
        )),
        "{problem}"
    );
    assert_eq!(
        transactions_on(&setup, PAST_DATE).await,
        0,
        "nothing stored"
    );
    riyals["amount"] = json!("500.00");
    daemon
        .post("/api/v2/payments")
        .bearer(&operator)
        .key(&key())
        .json(&riyals)
        .send()
        .await
        .expect(201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoami_answers_each_role_its_name_and_role_and_nothing_secret() {
    let setup = Setup::sqlite(CONFIG);
    let tokens: Vec<(&str, String)> = ROLES
        .iter()
        .map(|role| (*role, setup.token(&format!("me-{role}"), role)))
        .collect();
    let leaver = setup.token("me-leaver", "admin");
    let daemon = setup.start();
    let mut secrets: Vec<&str> = tokens.iter().map(|(_, t)| t.as_str()).collect();
    secrets.push(&leaver);
    let hashes: Vec<String> = secrets.iter().map(|s| hash_token(s)).collect();

    for (role, token) in &tokens {
        let reply = daemon.get("/api/v2/whoami").bearer(token).send().await;
        let body = reply.expect(200);
        assert_eq!(
            body,
            json!({ "name": format!("me-{role}"), "role": role }),
            "only the name and the role"
        );
        assert_clean(&reply, &secrets);
        for hash in &hashes {
            assert!(!reply.text().contains(hash.as_str()), "a hash: {body}");
        }
    }

    let garbage = format!("Bearer stl_{}", "0".repeat(64));
    for authorization in [None, Some(garbage.as_str()), Some("Basic dXNlcjpwYXNz")] {
        let mut call = daemon.get("/api/v2/whoami");
        if let Some(value) = authorization {
            call = call.header("authorization", value);
        }
        let reply = call.send().await;
        reply.expect_problem(401, "unauthorized");
        assert_clean(&reply, &secrets);
    }
    daemon
        .get("/api/v2/whoami")
        .bearer(&leaver)
        .send()
        .await
        .expect(200);
    setup.settle(&["token", "revoke", "me-leaver"]).assert_ok();
    let reply = daemon.get("/api/v2/whoami").bearer(&leaver).send().await;
    let problem = reply.expect_problem(401, "unauthorized");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("revoked")),
        "{problem}"
    );
    assert_clean(&reply, &secrets);
}

/// `/api/v2/finance/audit` with these query parameters, percent-encoded (`+` as `%2B`).
fn audit_path(params: &[(&str, &str)]) -> String {
    let mut url = reqwest::Url::parse("http://settle.invalid/api/v2/finance/audit").expect("url");
    url.query_pairs_mut().extend_pairs(params);
    format!("{}?{}", url.path(), url.query().unwrap_or_default())
}

/// A page of the audit trail at `path`, read with `token`.
async fn audit_page(daemon: &Daemon, token: &str, path: &str) -> Value {
    daemon.get(path).bearer(token).send().await.expect(200)
}

/// The events of a page, as their ids.
fn event_ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["id"].as_str().expect("id").to_string())
        .collect()
}

fn occurred_at(event: &Value) -> chrono::DateTime<chrono::Utc> {
    event["occurred_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .expect("occurred_at")
        .with_timezone(&chrono::Utc)
}

/// Filters select in the store exactly what filtering the whole trail would, paged after
/// filtering; bad instants and inverted ranges are 400 problems naming their parameters.
async fn audit_filters_select_in_the_store(setup: Setup) {
    let ana = setup.token("filter-ana", "operator");
    let bob = setup.token("filter-bob", "operator");
    let viewer = setup.token("filter-viewer", "viewer");
    let daemon = setup.start();
    let mut payments = Vec::new();
    for (token, external_ref) in [(&ana, "ord-a1"), (&bob, "ord-b1"), (&ana, "ord-a2")] {
        let created = daemon
            .post("/api/v2/payments")
            .bearer(token)
            .key(&key())
            .json(&payment_body("m-0042", "12.50", external_ref, OCCURRED_AT))
            .send()
            .await
            .expect(201);
        payments.push(created["id"].as_str().expect("id").to_string());
    }
    let everything = audit_events(&daemon, &viewer).await;
    assert!(everything.len() >= 6, "{everything:?}");
    let expect = |keep: &dyn Fn(&Value) -> bool| -> Vec<String> {
        everything
            .iter()
            .filter(|e| keep(e))
            .map(|e| e["id"].as_str().expect("id").to_string())
            .collect()
    };

    // Exact matches, alone and together.
    // (query parameters, the ids they select).
    type Case = (Vec<(&'static str, String)>, Vec<String>);
    let cases: Vec<Case> = vec![
        (
            vec![("actor", "token:filter-ana".into())],
            expect(&|e| e["actor"] == "token:filter-ana"),
        ),
        (vec![("actor", "token:filter-an".into())], vec![]),
        (
            vec![
                ("actor", "token:filter-bob".into()),
                ("action", "http.request".into()),
            ],
            expect(&|e| e["actor"] == "token:filter-bob" && e["action"] == "http.request"),
        ),
        (
            vec![("subject", format!("transaction={}", payments[0]))],
            expect(&|e| e["subject"] == format!("transaction={}", payments[0])),
        ),
        (
            vec![("subject", "POST /api/v2/payments".into())],
            expect(&|e| e["subject"] == "POST /api/v2/payments"),
        ),
        (
            vec![
                ("subject", "POST /api/v2/payments".into()),
                ("actor", "token:filter-ana".into()),
                ("action", "http.request".into()),
            ],
            expect(&|e| {
                e["subject"] == "POST /api/v2/payments"
                    && e["actor"] == "token:filter-ana"
                    && e["action"] == "http.request"
            }),
        ),
    ];
    for (params, expected) in cases {
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let path = audit_path(&[&params[..], &[("per_page", "500")]].concat());
        let page = audit_page(&daemon, &viewer, &path).await;
        assert_eq!(event_ids(&page), expected, "{path}: {page}");
        assert_eq!(page["has_more"], false, "{path}");
    }
    assert_eq!(
        expect(&|e| e["actor"] == "token:filter-ana" && e["action"] == "payments.record_payment")
            .len(),
        2,
        "each of ana's payments is audited: {everything:?}"
    );

    // Paged after filtering: ana's events one by one, then past the end.
    let anas = expect(&|e| e["actor"] == "token:filter-ana");
    assert!(anas.len() >= 4, "{anas:?}");
    for (n, id) in anas.iter().enumerate() {
        let number = (n + 1).to_string();
        let path = audit_path(&[
            ("actor", "token:filter-ana"),
            ("per_page", "1"),
            ("page", &number),
        ]);
        let page = audit_page(&daemon, &viewer, &path).await;
        assert_eq!(event_ids(&page), std::slice::from_ref(id), "{path}");
        assert_eq!(page["has_more"], n + 1 < anas.len(), "{path}: {page}");
    }
    let past = (anas.len() + 1).to_string();
    let path = audit_path(&[
        ("actor", "token:filter-ana"),
        ("per_page", "1"),
        ("page", &past),
    ]);
    assert_eq!(
        audit_page(&daemon, &viewer, &path).await["items"],
        json!([])
    );

    // A half-open range around an event in the middle of the trail: from holds it, to does not.
    let middle = &everything[everything.len() / 2];
    let instant = occurred_at(middle);
    let text = middle["occurred_at"]
        .as_str()
        .expect("occurred_at")
        .to_string();
    let later = expect(&|e| occurred_at(e) >= instant);
    let earlier = expect(&|e| occurred_at(e) < instant);
    assert!(!later.is_empty() && !earlier.is_empty());
    let shifted = instant
        .with_timezone(&chrono::FixedOffset::east_opt(3 * 3600).expect("offset"))
        .to_rfc3339();
    for (params, expected) in [
        (vec![("from", text.as_str())], later.clone()),
        (vec![("from", shifted.as_str())], later.clone()),
        (vec![("to", text.as_str())], earlier.clone()),
        (vec![("to", shifted.as_str())], earlier.clone()),
        (vec![("from", text.as_str()), ("to", text.as_str())], vec![]),
        (
            vec![("from", shifted.as_str()), ("actor", "token:filter-ana")],
            expect(&|e| occurred_at(e) >= instant && e["actor"] == "token:filter-ana"),
        ),
    ] {
        let path = audit_path(&[&params[..], &[("per_page", "500")]].concat());
        let page = audit_page(&daemon, &viewer, &path).await;
        assert_eq!(event_ids(&page), expected, "{path}: {page}");
    }
    // Compared as instants, not text: 12:00+03:00 is before 10:00Z.
    let path = audit_path(&[
        ("from", "2024-03-10T12:00:00+03:00"),
        ("to", "2024-03-10T10:00:00Z"),
    ]);
    assert_eq!(
        audit_page(&daemon, &viewer, &path).await["items"],
        json!([])
    );

    // Unknown actions (names match exactly, so a lookalike is unknown), malformed instants and an
    // inverted range: 400, naming the parameter.
    for (query, field) in [
        ("action=HTTP.REQUEST", "action"),
        ("action=payments.record", "action"),
        ("action=", "action"),
        ("actor=token:filter-ana&action=http.request%20", "action"),
        ("from=yesterday", "from"),
        ("to=2024-03-10", "to"),
        ("from=2024-03-10T10:00:00", "from"),
        ("to=2024-02-30T10:00:00Z", "to"),
        ("from=", "from"),
        ("from=2024-03-10T10:00:00Z&to=noon", "to"),
        ("actor=token:filter-ana&to=2024-03-10T25:00:00Z", "to"),
    ] {
        let path = format!("/api/v2/finance/audit?{query}");
        let reply = daemon.get(&path).bearer(&viewer).send().await;
        let problem = reply.expect_problem(400, "invalid-request");
        assert_eq!(problem["field"], field, "{path}: {problem}");
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.starts_with(&format!("{field}: "))),
            "{path}: {problem}"
        );
        assert_clean(&reply, &[&viewer]);
    }
    // An unencoded `+` arrives as a space: refused, and the detail says how to send it.
    let reply = daemon
        .get("/api/v2/finance/audit?from=2024-03-10T10:00:00+03:00")
        .bearer(&viewer)
        .send()
        .await;
    let problem = reply.expect_problem(400, "invalid-request");
    assert_eq!(problem["field"], "from", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("%2B")),
        "{problem}"
    );
    for query in [
        "from=2024-03-11T00:00:00Z&to=2024-03-10T00:00:00Z",
        "from=2024-03-10T10:00:00.001Z&to=2024-03-10T10:00:00Z",
        "subject=x&from=2024-03-10T10:00:00Z&to=2024-03-10T12:59:59%2B03:00",
    ] {
        let path = format!("/api/v2/finance/audit?{query}");
        let reply = daemon.get(&path).bearer(&viewer).send().await;
        let problem = reply.expect_problem(400, "invalid-request");
        assert_eq!(problem["field"], "from", "{path}: {problem}");
        assert_eq!(
            problem["fields"],
            json!(["from", "to"]),
            "{path}: {problem}"
        );
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.starts_with("from: ") && detail.contains(" to "),
            "{path}: the detail names both: {problem}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_filters_select_in_the_store_on_sqlite() {
    audit_filters_select_in_the_store(Setup::sqlite(CONFIG)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_filters_select_in_the_store_on_mongodb() {
    let database = FreshDatabase::new();
    audit_filters_select_in_the_store(Setup::with_options(CONFIG, database.options())).await;
}
