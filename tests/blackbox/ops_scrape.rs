//! The proof that the dashboards and rules match what the daemon exports: Debian's Prometheus scrapes
//! a real `settle serve` with the repository's rules loaded, and every panel and recording rule returns data.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::daemon::{payment_body, Daemon, Setup};
use crate::provider_server::{Behaviour, ProviderServer};

/// How long Prometheus may take to have every series (1 s scrapes and rule evaluations).
const DATA_TIMEOUT: Duration = Duration::from_secs(120);
/// What Grafana's interval variables stand for in the queries run here.
const RATE_INTERVAL: &str = "1m";
const RANGE: &str = "1h";

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository")
        .to_path_buf()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

/// Debian's Prometheus on 127.0.0.1, scraping `target` every second as job `settle`, with the
/// repository's rule files evaluated every second.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().expect("temp dir");
        let rules = dir.path().join("rules");
        copy_rules_evaluated_every_second(&rules);
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}/*.yml\n\
             scrape_configs:\n  - job_name: settle\n    static_configs:\n      - targets: ['{target}']\n",
            rules = rules.display()
        );
        let config_file = dir.path().join("prometheus.yml");
        std::fs::write(&config_file, config).expect("write prometheus.yml");
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(
                "prometheus is missing: run ./scripts/test.sh, which installs Debian's prometheus",
            );
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    /// The result vector of an instant query (panics on a query error: a broken expression).
    async fn query(&self, client: &reqwest::Client, expr: &str) -> Option<Vec<Value>> {
        let response = client
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .ok()?;
        let status = response.status();
        let body: Value = response.json().await.ok()?;
        assert!(
            status.is_success() || status.as_u16() == 503,
            "the query {expr:?} is not valid PromQL: {body}"
        );
        body["data"]["result"].as_array().cloned()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The repository's rule files with every group evaluated each second (a group's own `interval:`,
/// e.g. 2m for the 30-day windows, would otherwise keep its first result minutes away).
fn copy_rules_evaluated_every_second(to: &Path) {
    std::fs::create_dir_all(to).expect("rules dir");
    let from = repository().join("ops/prometheus/rules");
    for entry in std::fs::read_dir(&from).expect("ops/prometheus/rules") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("read rules");
        let fast: Vec<String> = text
            .lines()
            .map(|line| {
                let trimmed = line.trim_start();
                if trimmed.starts_with("interval:") {
                    format!("{}interval: 1s", &line[..line.len() - trimmed.len()])
                } else {
                    line.to_string()
                }
            })
            .collect();
        std::fs::write(to.join(path.file_name().unwrap()), fast.join("\n")).expect("write rules");
    }
}

/// Every PromQL expression of every panel of every dashboard, with Grafana's variables filled.
fn dashboard_queries() -> Vec<(String, String)> {
    fn walk(panels: &[Value], file: &str, out: &mut Vec<(String, String)>) {
        for panel in panels {
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    let title = panel["title"].as_str().unwrap_or("untitled");
                    out.push((format!("{file}: {title}"), expr.to_string()));
                }
            }
            if let Some(nested) = panel["panels"].as_array() {
                walk(nested, file, out);
            }
        }
    }
    let mut queries = Vec::new();
    let dir = repository().join("ops/grafana");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("ops/grafana")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for file in files {
        let dashboard: Value =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("read dashboard"))
                .expect("dashboard JSON");
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        walk(
            dashboard["panels"].as_array().expect("panels"),
            &name,
            &mut queries,
        );
    }
    queries
        .into_iter()
        .map(|(what, expr)| {
            let expr = expr
                .replace("$__rate_interval", RATE_INTERVAL)
                .replace("${__rate_interval}", RATE_INTERVAL)
                .replace("$__range", RANGE)
                .replace("${__range}", RANGE);
            (what, expr)
        })
        .collect()
}

/// The name of every recording rule in the repository's rule files.
fn recording_rules() -> Vec<String> {
    let dir = repository().join("ops/prometheus/rules");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("ops/prometheus/rules") {
        let text = std::fs::read_to_string(entry.expect("entry").path()).expect("read rules");
        for line in text.lines() {
            let line = line.trim_start().trim_start_matches("- ").trim_start();
            if let Some(name) = line.strip_prefix("record:") {
                names.push(name.trim().trim_matches(['"', '\'']).to_string());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

/// Makes the fifth payment recording fail as a store would (three payments and a refund come first),
/// for a real 5xx in the traffic.
const TRAFFIC_FAILPOINTS: &str = "payments.before_record=error@5";

fn fresh_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Traffic that gives every panel something real: payments, a refund, replays, a 401, a 404, a 5xx,
/// a completed settlement with a payout the provider rejects, a rerun, and a settlement that fails
/// because its payout's outcome stays unknown after retries.
async fn make_traffic(daemon: &Daemon, setup: &Setup, provider: &ProviderServer) {
    let operator = setup.token("ops", "operator");
    let mut payment_ids = Vec::new();
    for (merchant_id, amount, external_ref, occurred_at) in [
        ("m-1", "100.00", "p-1", "2024-03-10T10:00:00+03:00"),
        ("m-2", "50.00", "p-2", "2024-03-10T11:00:00+03:00"),
        ("m-3", "20.00", "p-3", "2024-03-11T11:00:00+03:00"),
    ] {
        let key = fresh_key();
        let body = payment_body(merchant_id, amount, external_ref, occurred_at);
        for _ in 0..2 {
            let reply = daemon
                .post("/api/v2/payments")
                .bearer(&operator)
                .key(&key)
                .json(&body)
                .send()
                .await;
            assert!(reply.status == 201, "{}", reply.text());
            payment_ids.push(reply.json()["id"].as_str().unwrap().to_string());
        }
    }
    daemon
        .post(&format!("/api/v2/payments/{}/refunds", payment_ids[0]))
        .bearer(&operator)
        .key(&fresh_key())
        .json(&json!({"amount": "10.00", "external_ref": "r-1",
                      "occurred_at": "2024-03-10T12:00:00+03:00"}))
        .send()
        .await
        .expect(201);
    daemon.get("/api/v2/finance/audit").send().await.expect(401);
    daemon
        .get("/api/v2/nowhere")
        .bearer(&operator)
        .send()
        .await
        .expect(404);
    // The fifth recording hits the armed failpoint (see `TRAFFIC_FAILPOINTS`): a 5xx (503).
    daemon
        .post("/api/v2/payments")
        .bearer(&operator)
        .key(&fresh_key())
        .json(&payment_body(
            "m-1",
            "1.00",
            "p-unrecorded",
            "2024-03-10T10:30:00+03:00",
        ))
        .send()
        .await
        .expect_problem(503, "store-unavailable");

    // 2024-03-10: m-1's payout is rejected (failed), m-2 is paid; then a rerun.
    provider.script([Behaviour::Reject422]);
    daemon
        .post("/api/v2/finance/settlement/trigger/2024-03-10")
        .bearer(&operator)
        .key(&fresh_key())
        .send()
        .await
        .expect(202);
    daemon
        .wait_for_status(&operator, "2024-03-10", &["completed"])
        .await;
    daemon
        .post("/api/v2/finance/settlement/rerun/2024-03-10")
        .bearer(&operator)
        .key(&fresh_key())
        .json(&json!({"reason": "the rejected payout's account was corrected"}))
        .send()
        .await
        .expect(202);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let latest = daemon
            .get("/api/v2/finance/settlement/2024-03-10")
            .bearer(&operator)
            .send()
            .await
            .expect(200);
        if latest["settlement"]["revision"] == 2 && latest["settlement"]["status"] == "completed" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rerun never completed: {latest}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A payout report with a line Settle never paid: one open exception for the reconciliation
    // gauges (items, exceptions, their amount and age).
    daemon
        .post("/api/v2/finance/reconciliation/statements?kind=payouts")
        .bearer(&operator)
        .key(&fresh_key())
        .body(
            "text/csv",
            "reference,amount,currency,status,paid_at,provider_payout_id\n\
             NOT-OURS-1,12.34,USD,paid,2024-03-11T09:00:00Z,po-unknown\n",
        )
        .send()
        .await
        .expect(201);
    let ran = daemon
        .post("/api/v2/finance/reconciliation/run")
        .bearer(&operator)
        .key(&fresh_key())
        .json(&json!({}))
        .send()
        .await
        .expect(200);
    assert!(ran["open_exceptions"].as_u64() >= Some(1), "{ran}");

    // 2024-03-11: every attempt is paid but answered too late: unknown, so the settlement fails.
    provider.script(std::iter::repeat_n(
        Behaviour::CommitThenHang { delay_ms: 1_000 },
        3,
    ));
    daemon
        .post("/api/v2/finance/settlement/trigger/2024-03-11")
        .bearer(&operator)
        .key(&fresh_key())
        .send()
        .await
        .expect(202);
    daemon
        .wait_for_status(&operator, "2024-03-11", &["failed"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_panel_and_recording_rule_has_data_from_a_real_daemon() {
    let provider = ProviderServer::start();
    let fast = "max_retries = 2\nbase_delay_ms = 10\nmax_delay_ms = 50\nattempt_timeout_ms = 300\ndeadline_ms = 5000\n";
    let setup = Setup::sqlite(&format!(
        "[scheduler]\nenabled = false\n[fees.default]\npercent = \"2.5\"\n\
         [payouts]\nprovider_url = \"{}\"\n[retry.payment]\n{fast}[retry.external_api]\n{fast}",
        provider.base_url()
    ));
    let daemon = setup.start_with_env(&[("SETTLE_FAILPOINTS", TRAFFIC_FAILPOINTS)]);
    let address = daemon
        .base_url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let prometheus = Prometheus::start(&address);
    make_traffic(&daemon, &setup, &provider).await;

    let queries = dashboard_queries();
    assert!(
        queries.len() >= 20,
        "the dashboards have panels: {queries:?}"
    );
    for (what, expr) in &queries {
        assert!(
            !expr.contains("vector("),
            "{what}: a query padded to return something proves nothing: {expr}"
        );
    }
    let rules = recording_rules();
    assert!(!rules.is_empty(), "the rule files define recording rules");
    let mut pending: Vec<(String, String)> = queries;
    pending.extend(
        rules
            .iter()
            .map(|r| (format!("recording rule {r}"), r.clone())),
    );

    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let deadline = Instant::now() + DATA_TIMEOUT;
    loop {
        let mut empty = Vec::new();
        for (what, expr) in pending {
            match prometheus.query(&client, &expr).await {
                Some(result) if !result.is_empty() => {}
                _ => empty.push((what, expr)),
            }
        }
        if empty.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "these queries return no data after real traffic (a metric name or label that the \
             daemon does not export?):\n{}\n\ndaemon output:\n{}",
            empty
                .iter()
                .map(|(what, expr)| format!("  {what}: {expr}"))
                .collect::<Vec<_>>()
                .join("\n"),
            daemon.output()
        );
        pending = empty;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
