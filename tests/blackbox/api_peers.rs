//! Black-box tests of what `settle serve` talks to besides API clients: the payout provider's
//! signed status callback, TLS clients, systemd's notify socket, the request bound and the listener.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use settle_core::notify::{sign, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use settle_core::secret::Secret;

use crate::daemon::{payment_body, write_config, Daemon, Reply, Setup};
use crate::provider_server::ProviderServer;
use crate::support::transactions_csv;

/// The variable the daemon reads the callback signing secret from.
const CALLBACK_SECRET_VARIABLE: &str = "SETTLE_PROVIDER_CALLBACK_SECRET";
const CALLBACK_SECRET: &str = "cbsec-test-5f0e9a71c2";
const CALLBACK_PATH: &str = "/api/v2/finance/payouts/callback";
/// The settled business date of the callback tests.
const DATE: &str = "2024-03-10";
const NO_SCHEDULER: &str = "[scheduler]\nenabled = false\n";
/// How long a daemon may take to stop on SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a daemon that cannot start may take to give up.
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// The payout provider's callback
// ---------------------------------------------------------------------------------------------

/// A daemon setup paying through `provider` with fast retries.
fn payout_setup(provider: &ProviderServer) -> Setup {
    let fast = "max_retries = 2\nbase_delay_ms = 10\nmax_delay_ms = 50\nattempt_timeout_ms = 300\ndeadline_ms = 5000\n";
    Setup::sqlite(&format!(
        "{NO_SCHEDULER}[payouts]\nprovider_url = \"{}\"\n[retry.payment]\n{fast}",
        provider.base_url()
    ))
}

/// Imports two merchants' payments on `DATE` and settles it: two payouts, both `sent`.
fn settle_with_payouts(setup: &Setup, provider: &ProviderServer) {
    let file = setup.sandbox.write(
        "day.csv",
        transactions_csv(&[
            "p-1,m-1,payment,completed,100.00,USD,card,2024-03-10T10:00:00+03:00,",
            "p-2,m-2,payment,completed,50.00,USD,card,2024-03-10T11:00:00+03:00,",
        ]),
    );
    setup
        .settle(&["import", file.to_str().expect("utf-8 path")])
        .assert_ok();
    setup.settle(&["run", "--date", DATE]).assert_ok();
    assert_eq!(provider.ledger().len(), 2, "one payout per merchant");
}

/// A started daemon whose `DATE` has two sent payouts, with an operator and a viewer token.
struct Paid {
    daemon: Daemon,
    provider: ProviderServer,
    operator: String,
    viewer: String,
}

fn paid(secret: Option<&str>) -> Paid {
    let provider = ProviderServer::start();
    let mut setup = payout_setup(&provider);
    if let Some(secret) = secret {
        setup = setup.env(CALLBACK_SECRET_VARIABLE, secret);
    }
    settle_with_payouts(&setup, &provider);
    let operator = setup.token("provider-callbacks", "operator");
    let viewer = setup.token("auditor", "viewer");
    Paid {
        daemon: setup.start(),
        provider,
        operator,
        viewer,
    }
}

fn now_seconds() -> i64 {
    chrono::Utc::now().timestamp()
}

/// POSTs `body` as the provider would: signed with `secret` at `timestamp_seconds`.
async fn callback(
    daemon: &Daemon,
    token: &str,
    body: &Value,
    secret: &str,
    timestamp_seconds: i64,
) -> Reply {
    let bytes = serde_json::to_vec(body).expect("callback body");
    let signature = sign(&Secret::new(secret), timestamp_seconds, &bytes);
    daemon
        .post(CALLBACK_PATH)
        .bearer(token)
        .key(&uuid::Uuid::new_v4().to_string())
        .header(TIMESTAMP_HEADER, &timestamp_seconds.to_string())
        .header(SIGNATURE_HEADER, &signature)
        .body("application/json", bytes)
        .send()
        .await
}

/// `GET /api/v2/finance/settlement/DATE/payouts`: the items.
async fn payouts(daemon: &Daemon, token: &str) -> Vec<Value> {
    let reply = daemon
        .get(&format!("/api/v2/finance/settlement/{DATE}/payouts"))
        .bearer(token)
        .send()
        .await;
    reply.expect(200)["items"]
        .as_array()
        .expect("payout items")
        .clone()
}

fn payout_of<'a>(payouts: &'a [Value], merchant_id: &str) -> &'a Value {
    payouts
        .iter()
        .find(|p| p["merchant_id"] == merchant_id)
        .unwrap_or_else(|| panic!("no payout for {merchant_id}: {payouts:?}"))
}

/// Every `payout.callback` audit event.
async fn callback_audit(daemon: &Daemon, token: &str) -> Vec<Value> {
    let reply = daemon
        .get("/api/v2/finance/audit?per_page=500")
        .bearer(token)
        .send()
        .await;
    let page = reply.expect(200);
    assert_eq!(page["has_more"], false, "every event fits one page");
    page["items"]
        .as_array()
        .expect("audit items")
        .iter()
        .filter(|e| e["action"] == "payout.callback")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_callback_moves_payouts_forward_and_each_is_audited() {
    let Paid {
        daemon,
        provider,
        operator,
        viewer,
    } = paid(Some(CALLBACK_SECRET));
    let before = payouts(&daemon, &viewer).await;
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(before.iter().all(|p| p["status"] == "sent"), "{before:?}");
    let m1 = payout_of(&before, "m-1")["reference"]
        .as_str()
        .unwrap()
        .to_string();
    let m2 = payout_of(&before, "m-2")["reference"]
        .as_str()
        .unwrap()
        .to_string();
    let provider_id = provider
        .ledger()
        .into_iter()
        .find(|e| e.reference == m1)
        .expect("the provider has m-1's payout")
        .id;

    // m-1 is paid: sent → confirmed.
    let reply = callback(
        &daemon,
        &operator,
        &json!({ "reference": m1, "status": "paid", "provider_payout_id": provider_id }),
        CALLBACK_SECRET,
        now_seconds(),
    )
    .await;
    let answer = reply.expect(200);
    assert_eq!(answer["payout"]["reference"], m1.as_str(), "{answer}");
    assert_eq!(answer["payout"]["status"], "confirmed", "{answer}");

    // m-2 failed at the provider: sent → failed, with the provider's reason.
    let reply = callback(
        &daemon,
        &operator,
        &json!({ "reference": m2, "status": "failed", "failure_reason": "account closed" }),
        CALLBACK_SECRET,
        now_seconds(),
    )
    .await;
    assert_eq!(reply.expect(200)["payout"]["status"], "failed");

    let after = payouts(&daemon, &viewer).await;
    let (m1_after, m2_after) = (payout_of(&after, "m-1"), payout_of(&after, "m-2"));
    assert_eq!(m1_after["status"], "confirmed", "{after:?}");
    assert_eq!(m1_after["provider_payout_id"], provider_id.as_str());
    assert_eq!(
        m1_after["amount_minor"],
        payout_of(&before, "m-1")["amount_minor"],
        "a callback moves the status, never the amount"
    );
    assert_eq!(m2_after["status"], "failed", "{after:?}");
    assert_eq!(m2_after["last_error"], "account closed", "{after:?}");

    let events = callback_audit(&daemon, &viewer).await;
    assert_eq!(events.len(), 2, "one audit event per callback: {events:?}");
    for (reference, to) in [(&m1, "confirmed"), (&m2, "failed")] {
        let event = events
            .iter()
            .find(|e| e["subject"] == format!("payout={reference}"))
            .unwrap_or_else(|| panic!("no audit event for {reference}: {events:?}"));
        assert_eq!(event["outcome"], "succeeded", "{event}");
        assert_eq!(event["actor"], "token:provider-callbacks", "{event}");
        assert_eq!(
            event["detail"],
            json!({ "from": "sent", "to": to }),
            "{event}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backward_or_repeated_callback_is_refused_and_audited_but_changes_nothing() {
    let Paid {
        daemon,
        operator,
        viewer,
        ..
    } = paid(Some(CALLBACK_SECRET));
    let m1 = payout_of(&payouts(&daemon, &viewer).await, "m-1")["reference"]
        .as_str()
        .unwrap()
        .to_string();
    let confirm = json!({ "reference": m1, "status": "paid" });
    callback(&daemon, &operator, &confirm, CALLBACK_SECRET, now_seconds())
        .await
        .expect(200);
    let confirmed = payout_of(&payouts(&daemon, &viewer).await, "m-1").clone();
    assert_eq!(confirmed["status"], "confirmed");

    // Forward only: a late "accepted" or "failed" cannot undo a confirmed payout, and a repeated
    // "paid" is no move at all. Each is answered with the payout as it stands.
    for status in ["accepted", "failed", "paid"] {
        let body = json!({ "reference": m1, "status": status, "failure_reason": "late news" });
        let reply = callback(&daemon, &operator, &body, CALLBACK_SECRET, now_seconds()).await;
        assert_eq!(
            reply.expect(200)["payout"],
            confirmed,
            "a {status} callback after confirmed changes nothing"
        );
    }
    assert_eq!(
        payout_of(&payouts(&daemon, &viewer).await, "m-1"),
        &confirmed,
        "the stored payout is untouched, updated_at and last_error included"
    );

    let events = callback_audit(&daemon, &viewer).await;
    let outcomes: Vec<(&str, &Value)> = events
        .iter()
        .map(|e| (e["outcome"].as_str().unwrap_or_default(), &e["detail"]))
        .collect();
    assert_eq!(events.len(), 4, "every callback is audited: {events:?}");
    assert_eq!(
        outcomes.iter().filter(|(o, _)| *o == "succeeded").count(),
        1,
        "{events:?}"
    );
    for to in ["sent", "failed", "confirmed"] {
        assert!(
            outcomes
                .iter()
                .any(|(o, d)| *o == "refused" && **d == json!({ "from": "confirmed", "to": to })),
            "a refused move to {to} is audited: {events:?}"
        );
    }
}

/// A provider that failed a payout and then reports it paid after all is believed, as
/// `settle payouts check` believes its lookup: the payout is confirmed, so the next rerun counts
/// it as paid instead of paying the merchant again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_payout_reported_paid_after_all_is_believed() {
    let Paid {
        daemon,
        operator,
        viewer,
        ..
    } = paid(Some(CALLBACK_SECRET));
    let m1 = payout_of(&payouts(&daemon, &viewer).await, "m-1")["reference"]
        .as_str()
        .unwrap()
        .to_string();
    let failed = json!({ "reference": m1, "status": "failed", "failure_reason": "returned" });
    callback(&daemon, &operator, &failed, CALLBACK_SECRET, now_seconds())
        .await
        .expect(200);
    assert_eq!(
        payout_of(&payouts(&daemon, &viewer).await, "m-1")["status"],
        "failed"
    );
    let paid = json!({ "reference": m1, "status": "paid", "provider_payout_id": "po-late" });
    let reply = callback(&daemon, &operator, &paid, CALLBACK_SECRET, now_seconds()).await;
    assert_eq!(reply.expect(200)["payout"]["status"], "confirmed");
    let stored = payout_of(&payouts(&daemon, &viewer).await, "m-1").clone();
    assert_eq!(
        (&stored["status"], &stored["provider_payout_id"]),
        (&json!("confirmed"), &json!("po-late"))
    );
    let events = callback_audit(&daemon, &viewer).await;
    assert!(
        events.iter().any(|e| e["outcome"] == "succeeded"
            && e["detail"] == json!({ "from": "failed", "to": "confirmed" })),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_in_the_documented_vocabulary_is_understood_and_a_bad_status_is_invalid() {
    // README: `"status": "sent"|"confirmed"|"failed"`; the provider's own words (`accepted`,
    // `paid`) are tested above.
    let Paid {
        daemon,
        operator,
        viewer,
        ..
    } = paid(Some(CALLBACK_SECRET));
    let before = payouts(&daemon, &viewer).await;
    let m1 = payout_of(&before, "m-1")["reference"].clone();
    let m2 = payout_of(&before, "m-2")["reference"].clone();

    for status in ["pending", "held", "PAID", ""] {
        let problem = callback(
            &daemon,
            &operator,
            &json!({ "reference": m1, "status": status }),
            CALLBACK_SECRET,
            now_seconds(),
        )
        .await
        .expect_problem(422, "invalid-request");
        assert!(
            problem["detail"].as_str().unwrap().contains("`confirmed`"),
            "the refusal lists the statuses understood: {problem}"
        );
    }
    callback(
        &daemon,
        &operator,
        &json!({ "reference": m1, "status": "paid", "amount_minor": 1 }),
        CALLBACK_SECRET,
        now_seconds(),
    )
    .await
    .expect_problem(422, "invalid-request");
    assert_eq!(payouts(&daemon, &viewer).await, before, "nothing changed");

    let reply = callback(
        &daemon,
        &operator,
        &json!({ "reference": m1, "status": "confirmed" }),
        CALLBACK_SECRET,
        now_seconds(),
    )
    .await;
    assert_eq!(reply.expect(200)["payout"]["status"], "confirmed");
    let reply = callback(
        &daemon,
        &operator,
        &json!({ "reference": m2, "status": "failed", "failure_reason": "iban closed" }),
        CALLBACK_SECRET,
        now_seconds(),
    )
    .await;
    assert_eq!(reply.expect(200)["payout"]["status"], "failed");
    let after = payouts(&daemon, &viewer).await;
    assert_eq!(payout_of(&after, "m-1")["status"], "confirmed", "{after:?}");
    assert_eq!(payout_of(&after, "m-2")["status"], "failed", "{after:?}");
    assert_eq!(payout_of(&after, "m-2")["last_error"], "iban closed");
    let events = callback_audit(&daemon, &viewer).await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events.iter().all(|e| e["outcome"] == "succeeded"),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_with_a_bad_signature_or_an_old_timestamp_changes_nothing() {
    let Paid {
        daemon,
        operator,
        viewer,
        ..
    } = paid(Some(CALLBACK_SECRET));
    let before = payouts(&daemon, &viewer).await;
    let m1 = payout_of(&before, "m-1")["reference"]
        .as_str()
        .unwrap()
        .to_string();
    let body = json!({ "reference": m1, "status": "paid" });

    // Signed with another secret.
    let problem = callback(&daemon, &operator, &body, "not-the-secret", now_seconds())
        .await
        .expect_problem(401, "bad-signature");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("does not match"),
        "{problem}"
    );
    assert!(!problem.to_string().contains(CALLBACK_SECRET), "{problem}");

    // The right secret, but the body was altered after signing.
    let timestamp_seconds = now_seconds();
    let signed = serde_json::to_vec(&json!({ "reference": m1, "status": "failed" })).unwrap();
    let signature = sign(&Secret::new(CALLBACK_SECRET), timestamp_seconds, &signed);
    daemon
        .post(CALLBACK_PATH)
        .bearer(&operator)
        .key(&uuid::Uuid::new_v4().to_string())
        .header(TIMESTAMP_HEADER, &timestamp_seconds.to_string())
        .header(SIGNATURE_HEADER, &signature)
        .body("application/json", serde_json::to_vec(&body).unwrap())
        .send()
        .await
        .expect_problem(401, "bad-signature");

    // No signature at all.
    let problem = daemon
        .post(CALLBACK_PATH)
        .bearer(&operator)
        .key(&uuid::Uuid::new_v4().to_string())
        .header(TIMESTAMP_HEADER, &now_seconds().to_string())
        .json(&body)
        .send()
        .await
        .expect_problem(401, "bad-signature");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(SIGNATURE_HEADER),
        "{problem}"
    );

    // Correctly signed an hour ago: a replay, refused like a forgery. An hour ahead likewise.
    for skew_seconds in [-3_600, 3_600] {
        let problem = callback(
            &daemon,
            &operator,
            &body,
            CALLBACK_SECRET,
            now_seconds() + skew_seconds,
        )
        .await
        .expect_problem(401, "bad-signature");
        assert!(
            problem["detail"].as_str().unwrap().contains("tolerance"),
            "{problem}"
        );
    }

    assert_eq!(payouts(&daemon, &viewer).await, before, "nothing changed");
    assert_eq!(
        callback_audit(&daemon, &viewer).await,
        Vec::<Value>::new(),
        "no refused signature reaches the payout audit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_callback_secret_callbacks_are_not_found() {
    let Paid {
        daemon,
        operator,
        viewer,
        ..
    } = paid(None);
    let before = payouts(&daemon, &viewer).await;
    let m1 = payout_of(&before, "m-1")["reference"].clone();
    let body = json!({ "reference": m1, "status": "paid" });
    // Whatever it was signed with: the daemon has nothing to check it against.
    for secret in [CALLBACK_SECRET, ""] {
        let problem = callback(&daemon, &operator, &body, secret, now_seconds())
            .await
            .expect_problem(404, "not-found");
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains(CALLBACK_SECRET_VARIABLE),
            "the refusal says what to configure: {problem}"
        );
    }
    assert_eq!(payouts(&daemon, &viewer).await, before, "nothing changed");
    assert!(callback_audit(&daemon, &viewer).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_may_not_post_a_callback_and_an_unknown_reference_is_not_found() {
    let Paid {
        daemon,
        operator,
        viewer,
        ..
    } = paid(Some(CALLBACK_SECRET));
    let before = payouts(&daemon, &viewer).await;
    let m1 = payout_of(&before, "m-1")["reference"]
        .as_str()
        .unwrap()
        .to_string();

    let problem = callback(
        &daemon,
        &viewer,
        &json!({ "reference": m1, "status": "paid" }),
        CALLBACK_SECRET,
        now_seconds(),
    )
    .await
    .expect_problem(403, "forbidden");
    assert!(
        problem["detail"].as_str().unwrap().contains("operator"),
        "{problem}"
    );

    // Without a token at all.
    daemon
        .post(CALLBACK_PATH)
        .key(&uuid::Uuid::new_v4().to_string())
        .json(&json!({ "reference": m1, "status": "paid" }))
        .send()
        .await
        .expect_problem(401, "unauthorized");

    for reference in [
        "2024-03-10.USD.r1.m-404",
        "2024-03-11.USD.r1.m-1",
        &m1.replace(".r1.", ".r2."),
        "no-such-payout",
        "",
    ] {
        let problem = callback(
            &daemon,
            &operator,
            &json!({ "reference": reference, "status": "paid" }),
            CALLBACK_SECRET,
            now_seconds(),
        )
        .await
        .expect_problem(404, "not-found");
        assert!(
            problem["detail"].as_str().unwrap().contains(reference),
            "{problem}"
        );
    }

    assert_eq!(payouts(&daemon, &viewer).await, before, "nothing changed");
    assert!(callback_audit(&daemon, &viewer).await.is_empty());
}

// ---------------------------------------------------------------------------------------------
// TLS
// ---------------------------------------------------------------------------------------------

/// A self-signed certificate for 127.0.0.1 and localhost: (certificate PEM, key PEM).
fn self_signed() -> (String, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("a self-signed certificate");
    (certified.cert.pem(), certified.signing_key.serialize_pem())
}

fn tls_config(cert: &std::path::Path, key: &std::path::Path) -> String {
    format!(
        "{NO_SCHEDULER}[server]\ntls_cert = {:?}\ntls_key = {:?}\n",
        cert.to_str().expect("utf-8 path"),
        key.to_str().expect("utf-8 path")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_daemon_says_https_and_answers_clients_that_trust_its_certificate() {
    let setup = Setup::sqlite(NO_SCHEDULER);
    let (cert_pem, key_pem) = self_signed();
    let cert = setup.sandbox.write("cert.pem", &cert_pem);
    let key = setup.sandbox.write("key.pem", &key_pem);
    write_config(&setup.sandbox, &tls_config(&cert, &key));
    let viewer = setup.token("auditor", "viewer");
    let mut daemon = setup.start();
    assert!(
        daemon.base_url.starts_with("https://127.0.0.1:"),
        "{}",
        daemon.base_url
    );

    let trusting = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .add_root_certificate(
            reqwest::Certificate::from_pem(cert_pem.as_bytes()).expect("a PEM certificate"),
        )
        .build()
        .expect("https client");
    let health = trusting
        .get(format!("{}/healthz", daemon.base_url))
        .send()
        .await
        .expect("GET /healthz over TLS");
    assert_eq!(health.status(), 200);
    let health: Value = health.json().await.expect("JSON health");
    assert_eq!(health["status"], "alive");
    let history = trusting
        .get(format!(
            "{}/api/v2/finance/settlement/history",
            daemon.base_url
        ))
        .bearer_auth(&viewer)
        .send()
        .await
        .expect("an authenticated request over TLS");
    assert_eq!(history.status(), 200, "the API is served over TLS too");

    // A client that does not trust the certificate refuses the connection: it really is TLS.
    let sceptical = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("https client");
    let refused = sceptical
        .get(format!("{}/healthz", daemon.base_url))
        .send()
        .await;
    assert!(refused.is_err(), "an untrusted certificate: {refused:?}");
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = daemon
        .base_url
        .replacen("https://", "http://", 1)
        .to_string();
    let plain_answer = sceptical.get(format!("{plain}/healthz")).send().await;
    assert!(
        plain_answer
            .as_ref()
            .map_or(true, |r| !r.status().is_success()),
        "plain HTTP is not served on the TLS port: {plain_answer:?}"
    );

    let status = daemon.terminate(STOP_TIMEOUT);
    assert!(status.success(), "{status:?}\n{}", daemon.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_unreadable_tls_file_stops_the_daemon_and_names_it() {
    let setup = Setup::sqlite(NO_SCHEDULER);
    let (cert_pem, key_pem) = self_signed();
    let cert = setup.sandbox.write("cert.pem", &cert_pem);
    let key = setup.sandbox.write("key.pem", &key_pem);
    let garbage = setup.sandbox.write("garbage.pem", "not a certificate\n");
    let missing = setup.sandbox.path().join("missing-cert.pem");
    let missing_key = setup.sandbox.path().join("missing-key.pem");
    for (cert, key, named) in [
        (&missing, &key, &missing),
        (&garbage, &key, &garbage),
        (&cert, &missing_key, &missing_key),
        (&cert, &garbage, &garbage),
    ] {
        write_config(&setup.sandbox, &tls_config(cert, key));
        let ran = setup.settle_within(&["serve", "--listen", "127.0.0.1:0"], EXIT_TIMEOUT);
        assert_eq!(
            ran.code,
            2,
            "bad configuration: serving with {} and {}: {ran:?}",
            cert.display(),
            key.display()
        );
        assert!(
            ran.stderr.contains(&named.display().to_string()),
            "the error names {}: {}",
            named.display(),
            ran.stderr
        );
        assert!(
            !ran.stdout.contains("settle listening on"),
            "it never said it listens: {}",
            ran.stdout
        );
    }
}

// ---------------------------------------------------------------------------------------------
// systemd's notify socket
// ---------------------------------------------------------------------------------------------

#[cfg(target_os = "linux")]
mod systemd {
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;

    use super::{NO_SCHEDULER, STOP_TIMEOUT};
    use crate::daemon::Setup;

    /// How long the daemon may take to send a notification.
    const NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);

    /// The next datagram's `KEY=value` lines, waiting up to `NOTIFY_TIMEOUT`.
    fn receive(socket: &UnixDatagram) -> Vec<String> {
        socket
            .set_read_timeout(Some(NOTIFY_TIMEOUT))
            .expect("read timeout");
        let mut buffer = [0u8; 4096];
        let length = tokio::task::block_in_place(|| socket.recv(&mut buffer))
            .expect("a datagram before the timeout");
        String::from_utf8_lossy(&buffer[..length])
            .lines()
            .map(str::to_string)
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn systemd_hears_ready_then_stopping_and_the_daemon_exits_0() {
        let setup = Setup::sqlite(NO_SCHEDULER);
        let path = setup.sandbox.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        let setup = setup.env("NOTIFY_SOCKET", path.to_str().expect("utf-8 path"));
        let mut daemon = setup.start();

        let ready = receive(&socket);
        assert!(ready.iter().any(|l| l == "READY=1"), "{ready:?}");
        assert_eq!(
            daemon.get("/healthz").send().await.expect(200)["status"],
            "alive"
        );

        let status = daemon.terminate(STOP_TIMEOUT);
        assert!(status.success(), "{status:?}\n{}", daemon.output());
        let stopping = receive(&socket);
        assert!(stopping.iter().any(|l| l == "STOPPING=1"), "{stopping:?}");
        assert!(
            !stopping.iter().any(|l| l == "READY=1"),
            "READY is sent once: {stopping:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn systemd_abstract_socket_written_with_an_at_sign_hears_ready() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::SocketAddr;

        let name = format!(
            "settle-blackbox-notify-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let address = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract name");
        let socket = UnixDatagram::bind_addr(&address).expect("bind the abstract socket");
        let setup = Setup::sqlite(NO_SCHEDULER).env("NOTIFY_SOCKET", &format!("@{name}"));
        let mut daemon = setup.start();
        let ready = receive(&socket);
        assert!(ready.iter().any(|l| l == "READY=1"), "{ready:?}");
        let status = daemon.terminate(STOP_TIMEOUT);
        assert!(status.success(), "{status:?}\n{}", daemon.output());
        let stopping = receive(&socket);
        assert!(stopping.iter().any(|l| l == "STOPPING=1"), "{stopping:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn systemd_socket_nobody_listens_on_is_logged_not_fatal() {
        let setup = Setup::sqlite(NO_SCHEDULER);
        let path = setup.sandbox.path().join("nobody-listens.sock");
        let setup = setup.env("NOTIFY_SOCKET", path.to_str().expect("utf-8 path"));
        let mut daemon = setup.start();
        assert_eq!(
            daemon.get("/healthz").send().await.expect(200)["status"],
            "alive"
        );
        let status = daemon.terminate(STOP_TIMEOUT);
        assert!(status.success(), "{status:?}\n{}", daemon.output());
        assert!(
            daemon.output().contains("cannot notify systemd"),
            "the failed notification is logged:\n{}",
            daemon.output()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The request bound
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_time_bound_answers_503_and_its_retry_records_one_payment() {
    // 200 ms per request; an idempotency lock of 1 s so the retry may take the key over soon.
    let setup = Setup::sqlite(&format!(
        "{NO_SCHEDULER}[server]\nrequest_timeout_ms = 200\n[idempotency]\nlock_seconds = 1\n"
    ));
    let operator = setup.token("ops", "operator");
    let key = uuid::Uuid::new_v4().to_string();
    let body = payment_body("m-1", "12.50", "ord-timeout-1", "2024-03-10T10:00:00+03:00");

    // The payment path holds for 1.5 s just before it writes: well past the bound.
    let mut slow =
        setup.start_with_env(&[("SETTLE_FAILPOINTS", "payments.before_record=sleep(1500)")]);
    let problem = slow
        .post("/api/v2/payments")
        .bearer(&operator)
        .key(&key)
        .json(&body)
        .send()
        .await
        .expect_problem(503, "request-timeout");
    assert!(
        problem["detail"].as_str().unwrap().contains("200 ms"),
        "{problem}"
    );
    // The request cut short is audited as failed, with its status and request id.
    let audit = slow
        .get("/api/v2/finance/audit?per_page=500")
        .bearer(&operator)
        .send()
        .await
        .expect(200);
    let cut_short: Vec<&Value> = audit["items"]
        .as_array()
        .expect("audit items")
        .iter()
        .filter(|e| e["action"] == "http.request" && e["subject"] == "POST /api/v2/payments")
        .collect();
    assert_eq!(cut_short.len(), 1, "{audit}");
    assert_eq!(cut_short[0]["outcome"], "failed", "{audit}");
    assert_eq!(cut_short[0]["actor"], "token:ops", "{audit}");
    assert_eq!(cut_short[0]["detail"]["status"], 503, "{audit}");
    let status = slow.terminate(STOP_TIMEOUT);
    assert!(status.success(), "{status:?}\n{}", slow.output());

    // Later, without the delay: the same key gets one transaction, whether or not the cut-short
    // request's write had landed. Until its lock expires the key answers "in progress".
    let daemon = setup.start();
    let deadline = Instant::now() + Duration::from_secs(30);
    let created = loop {
        let reply = daemon
            .post("/api/v2/payments")
            .bearer(&operator)
            .key(&key)
            .json(&body)
            .send()
            .await;
        if reply.status != 409 {
            break reply.expect(201);
        }
        reply.expect_problem(409, "idempotency-conflict");
        assert!(
            Instant::now() < deadline,
            "the key stayed locked: {}",
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let id = created["id"]
        .as_str()
        .expect("a transaction id")
        .to_string();
    let replay = daemon
        .post("/api/v2/payments")
        .bearer(&operator)
        .key(&key)
        .json(&body)
        .send()
        .await;
    assert_eq!(
        replay.header("idempotent-replayed").as_deref(),
        Some("true")
    );
    assert_eq!(replay.expect(201)["id"], id.as_str());
    daemon
        .get(&format!("/api/v2/payments/{id}"))
        .bearer(&operator)
        .send()
        .await
        .expect(200);

    // Settling the date counts what was stored: one payment of 12.50.
    setup.settle(&["run", "--date", DATE]).assert_ok();
    let lines = daemon
        .get(&format!("/api/v2/finance/settlement/{DATE}/lines"))
        .bearer(&operator)
        .send()
        .await
        .expect(200);
    let items = lines["items"].as_array().expect("line items");
    assert_eq!(items.len(), 1, "{lines}");
    assert_eq!(
        (
            items[0]["merchant_id"].as_str(),
            items[0]["payment_count"].as_u64(),
            items[0]["gross_minor"].as_i64()
        ),
        (Some("m-1"), Some(1), Some(1250)),
        "{lines}"
    );
}

// ---------------------------------------------------------------------------------------------
// The listener
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_listen_address_exits_2_and_says_why() {
    let setup = Setup::sqlite(NO_SCHEDULER);
    for address in ["localhost-8787", "127.0.0.1", "127.0.0.1:99999"] {
        let ran = setup.settle_within(&["serve", "--listen", address], EXIT_TIMEOUT);
        ran.assert_code(2);
        assert!(
            ran.stderr.contains("--listen") && ran.stderr.contains(address),
            "the error names the option and the value: {}",
            ran.stderr
        );
        assert!(ran.stderr.contains("not an address"), "{}", ran.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_in_use_stops_the_daemon_and_names_the_address() {
    let setup = Setup::sqlite(NO_SCHEDULER);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let address = taken.local_addr().expect("its address").to_string();
    let ran = setup.settle_within(&["serve", "--listen", &address], EXIT_TIMEOUT);
    assert_ne!(ran.code, 0, "{ran:?}");
    assert!(
        ran.stderr.contains(&address),
        "the error names {address}: {}",
        ran.stderr
    );
    assert!(
        !ran.stdout.contains("settle listening on"),
        "it never said it listens: {}",
        ran.stdout
    );
    drop(taken);
}
