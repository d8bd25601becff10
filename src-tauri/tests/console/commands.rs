//! The console's session (what every Tauri command calls) against a real `settle serve` with the
//! demo's month, its token in a real Secret Service (gnome-keyring under dbus-run-session).

use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use chrono::Days;
use settle_client::{
    HistoryQuery, LineSort, LinesQuery, RerunOutcome, SettlementStatus, SortOrder,
};
use settle_console::error::CommandError;
use settle_console::session::{new_action_key, Console};

use crate::demo::DemoServer;
use crate::keyring_session::{inside, Session};

/// Runs `body` on a runtime inside a gnome-keyring session (the test re-runs itself there).
fn in_keyring(test: &str, body: impl FnOnce(DemoServer, Console, tempfile::TempDir) -> BoxedTest) {
    inside(Session::GnomeKeyring, &format!("commands::{test}"), || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let folder = tempfile::tempdir().expect("a temporary folder");
        let console = Console::new(
            &format!("settle-console-test-{}", std::process::id()),
            folder.path().join("config").join("preferences.json"),
        );
        // The provider server runs on this runtime's threads while the demo command blocks this one.
        let server = {
            let _context = runtime.enter();
            DemoServer::start()
        };
        runtime.block_on(body(server, console, folder));
    });
}

type BoxedTest = std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

/// What the Secret Service holds for `account` (empty when nothing), read by its own tool.
fn keyring_holds(service: &str, account: &str) -> String {
    let output = Command::new("secret-tool")
        .args(["lookup", "service", service, "username", account])
        .output()
        .expect("secret-tool (Debian's libsecret-tools) runs");
    String::from_utf8(output.stdout).expect("UTF-8")
}

fn service() -> String {
    format!("settle-console-test-{}", std::process::id())
}

fn unwrap_kind<T: std::fmt::Debug>(result: Result<T, CommandError>) -> String {
    result.expect_err("an error").kind().to_string()
}

#[test]
fn connect_verifies_the_token_before_keeping_it_and_sign_out_removes_it() {
    in_keyring(
        "connect_verifies_the_token_before_keeping_it_and_sign_out_removes_it",
        |server, console, folder| {
            Box::pin(async move {
                let url = server.daemon.base_url.clone();
                // A well-formed but unknown token: refused by the daemon, nothing kept.
                let unknown = format!("stl_{}", "0".repeat(64));
                let error = console.connect(&url, &unknown).await.unwrap_err();
                assert!(error.is_unauthorized(), "{error}");
                assert_eq!(keyring_holds(&service(), &url), "");
                assert!(console.connection().await.is_none());
                assert_eq!(
                    unwrap_kind(console.history(&HistoryQuery::default()).await),
                    "not_connected"
                );

                // Nobody listening: unreachable, said so.
                let error = console
                    .connect("http://127.0.0.1:9", &server.operator_token)
                    .await
                    .unwrap_err();
                assert_eq!(error.kind(), "unreachable", "{error}");

                // A good token, typed with a trailing slash and spaces: kept under the normalised URL.
                let typed = format!(" {url}/ ");
                let connection = console
                    .connect(&typed, &server.operator_token)
                    .await
                    .unwrap();
                assert_eq!(connection.server_url, url);
                assert_eq!(connection.keyring, "Secret Service");
                assert_eq!(keyring_holds(&service(), &url), server.operator_token);
                assert_eq!(
                    console.preferences().server_url.as_deref(),
                    Some(url.as_str())
                );
                assert_no_file_contains(folder.path(), server.operator_token.as_bytes());

                // Next start: an empty token field uses the kept one.
                let again = Console::new(
                    &service(),
                    folder.path().join("config").join("preferences.json"),
                );
                assert_eq!(
                    again.preferences().server_url.as_deref(),
                    Some(url.as_str())
                );
                again.connect(&url, "").await.unwrap();
                assert!(again.history(&HistoryQuery::default()).await.is_ok());

                console.sign_out().await.unwrap();
                assert_eq!(
                    keyring_holds(&service(), &url),
                    "",
                    "sign out deletes the token"
                );
                assert_eq!(
                    unwrap_kind(console.history(&HistoryQuery::default()).await),
                    "not_connected"
                );
                let error = console.connect(&url, "").await.unwrap_err();
                assert_eq!(error.kind(), "invalid_token", "{error}");
            })
        },
    );
}

fn assert_no_file_contains(directory: &Path, needle: &[u8]) {
    for entry in std::fs::read_dir(directory).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            assert_no_file_contains(&path, needle);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(needle.len()).any(|window| window == needle),
                "{} holds the token",
                path.display()
            );
        }
    }
}

#[test]
fn the_screens_read_what_the_daemon_serves() {
    in_keyring(
        "the_screens_read_what_the_daemon_serves",
        |server, console, _folder| {
            Box::pin(async move {
                console
                    .connect(&server.daemon.base_url, &server.viewer_token)
                    .await
                    .unwrap();
                let date = server.last_date;
                let day = date.to_string();

                // History: filtered and paged exactly as the API pages it.
                let query = HistoryQuery {
                    status: Some(SettlementStatus::Completed),
                    to: Some(date),
                    per_page: Some(7),
                    page: Some(2),
                    ..HistoryQuery::default()
                };
                let page = console.history(&query).await.unwrap();
                let api = server.get_json(&format!(
                "/api/v2/finance/settlement/history?status=completed&to={day}&per_page=7&page=2"
            ));
                let dates: Vec<String> = page
                    .items
                    .iter()
                    .map(|s| s.settlement_date.to_string())
                    .collect();
                let api_dates: Vec<&str> = api["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["settlement_date"].as_str().unwrap())
                    .collect();
                assert_eq!(dates, api_dates);
                assert_eq!(page.items.len(), 7);
                let inverted = HistoryQuery {
                    from: Some(date),
                    to: date.checked_sub_days(Days::new(1)),
                    ..HistoryQuery::default()
                };
                assert_eq!(
                    unwrap_kind(console.history(&inverted).await),
                    "invalid_input"
                );

                // Detail: the revision, every revision (the demo settles each date once).
                let view = console.settlement(date, None).await.unwrap();
                assert_eq!(view.detail.settlement.status, SettlementStatus::Completed);
                assert_eq!(view.detail.settlement.settlement_date, date);
                assert_eq!(view.revisions.len(), 1);
                let api = server.get_json(&format!("/api/v2/finance/settlement/{day}/payouts"));
                assert_eq!(view.payouts.len(), api["items"].as_array().unwrap().len());

                // Lines: searched and sorted by the daemon; the total counts every match.
                let first = console.lines(date, &LinesQuery::default()).await.unwrap();
                let merchant = first.items[0].merchant_id.clone();
                let query = LinesQuery {
                    q: Some(merchant.clone()),
                    ..LinesQuery::default()
                };
                let found = console.lines(date, &query).await.unwrap();
                assert!(found.total >= 1);
                assert!(found
                    .items
                    .iter()
                    .all(|l| l.merchant_id.contains(&merchant)));
                let query = LinesQuery {
                    sort: Some(LineSort::NetMinor),
                    order: Some(SortOrder::Desc),
                    per_page: Some(50),
                    ..LinesQuery::default()
                };
                let sorted = console.lines(date, &query).await.unwrap();
                assert!(sorted
                    .items
                    .windows(2)
                    .all(|w| w[0].figures.net_minor >= w[1].figures.net_minor));

                // Audit: only events about this date.
                let audit = console.audit_for_date(date).await.unwrap();
                assert!(audit.complete);
                assert!(!audit.events.is_empty(), "the demo's run is audited");
                assert!(audit.events.iter().all(|e| e.subject.contains(&day)));

                // Statistics: the daemon's summary, and three PNG charts drawn by core.
                let from = date.checked_sub_days(Days::new(6)).unwrap();
                let stats = console.statistics(from, date).await.unwrap();
                let api = server.get_json(&format!(
                    "/api/v2/finance/settlement/stats/summary?from={from}&to={day}&top=10"
                ));
                assert_eq!(serde_json::to_value(&stats.summary).unwrap(), api);
                for chart in [
                    &stats.daily_chart,
                    &stats.success_rate_chart,
                    &stats.top_merchants_chart,
                ] {
                    let url = chart.as_ref().expect("a chart");
                    let png = base64::engine::general_purpose::STANDARD
                        .decode(
                            url.strip_prefix("data:image/png;base64,")
                                .expect("a PNG data URL"),
                        )
                        .unwrap();
                    let image = image::load_from_memory(&png).expect("a PNG");
                    assert_eq!(image.width(), 960);
                }
                // A range with nothing settled: the summary is empty and there is no chart.
                let before = from.checked_sub_days(Days::new(400)).unwrap();
                let empty = console.statistics(before, before).await.unwrap();
                assert!(empty.summary.currencies.is_empty());
                assert!(empty.daily_chart.is_none());
                let error = console.statistics(before, date).await.unwrap_err();
                assert_eq!(serde_json::to_value(&error).unwrap()["field"], "to");

                // A viewer may read but not rerun.
                let error = console
                    .rerun(date, "check", false, &new_action_key())
                    .await
                    .unwrap_err();
                assert_eq!(error.kind(), "forbidden", "{error}");
            })
        },
    );
}

#[test]
fn actions_run_once_per_dialog_key_and_exports_are_written_whole() {
    in_keyring(
        "actions_run_once_per_dialog_key_and_exports_are_written_whole",
        |server, console, folder| {
            Box::pin(async move {
                console
                    .connect(&server.daemon.base_url, &server.operator_token)
                    .await
                    .unwrap();
                let date = server.last_date;

                // A reason is required; nothing is sent without one.
                let error = console
                    .rerun(date, "   ", false, &new_action_key())
                    .await
                    .unwrap_err();
                assert_eq!(serde_json::to_value(&error).unwrap()["field"], "reason");
                let error = console
                    .rerun(date, "x", false, "not-a-key")
                    .await
                    .unwrap_err();
                assert_eq!(
                    serde_json::to_value(&error).unwrap()["field"],
                    "idempotency_key"
                );

                // One dialog, one key: the double click is answered from the first run.
                let key = new_action_key();
                let first = console
                    .rerun(date, "bank file corrected", true, &key)
                    .await
                    .unwrap();
                let second = console
                    .rerun(date, "bank file corrected", true, &key)
                    .await
                    .unwrap();
                let (RerunOutcome::Started(first), RerunOutcome::Started(second)) = (first, second)
                else {
                    panic!("no four-eyes here: the rerun starts");
                };
                assert_eq!(first.settlement.revision, 2);
                assert!(!first.replayed);
                assert!(second.replayed);
                assert_eq!(second.settlement.revision, 2);
                let finished = wait_finished(&console, date, 2).await;
                assert_eq!(finished, SettlementStatus::Completed);
                let view = console.settlement(date, None).await.unwrap();
                assert_eq!(view.revisions.len(), 2, "one rerun, not two");

                // What changed: per currency, the lines' deltas add up to the totals' delta.
                let changes = console.revision_changes(date, 2).await.unwrap();
                assert_eq!((changes.before_revision, changes.after_revision), (1, 2));
                assert_eq!(changes.reason.as_deref(), Some("bank file corrected"));
                for total in &changes.totals {
                    let lines_delta: i64 = changes
                        .lines
                        .iter()
                        .filter(|line| line.currency == total.currency)
                        .map(|line| line.net.delta_minor)
                        .sum();
                    assert_eq!(
                        lines_delta,
                        total.net.delta_minor,
                        "{}",
                        total.currency.code()
                    );
                }
                assert_eq!(
                    unwrap_kind(console.revision_changes(date, 1).await),
                    "invalid_input"
                );

                // Payouts on screen are the provider's: each sent once, with the same amount.
                // (The demo's own payouts went to its sandbox, `sbx-` ids; the rerun's come here.)
                let ledger = server.provider.ledger();
                let references: std::collections::BTreeSet<&str> = ledger
                    .iter()
                    .map(|entry| entry.reference.as_str())
                    .collect();
                assert_eq!(references.len(), ledger.len(), "a payout sent twice");
                for payout in view.payouts.iter().filter(|p| {
                    p.provider_payout_id
                        .as_deref()
                        .is_some_and(|id| !id.starts_with("sbx-"))
                }) {
                    let entry = ledger
                        .iter()
                        .find(|entry| entry.reference == payout.reference)
                        .unwrap_or_else(|| panic!("{} not at the provider", payout.reference));
                    assert_eq!(entry.amount_minor, payout.amount_minor);
                }

                // The same rerun again without new fees: a third revision with nothing changed.
                console
                    .rerun(date, "second look", false, &new_action_key())
                    .await
                    .unwrap();
                assert_eq!(
                    wait_finished(&console, date, 3).await,
                    SettlementStatus::Completed
                );
                let unchanged = console.revision_changes(date, 3).await.unwrap();
                assert!(
                    unchanged.lines.is_empty() && unchanged.totals.is_empty(),
                    "{unchanged:?}"
                );
                assert!(!unchanged.fee_schedule_changed);

                // Retry of a date that did not fail: the daemon's problem, with its stable type.
                let error = console.retry(date, &new_action_key()).await.unwrap_err();
                let json = serde_json::to_value(&error).unwrap();
                assert_eq!(json["type"], "problem", "{json}");
                assert!(json["problem_type"]
                    .as_str()
                    .unwrap()
                    .starts_with("urn:settle:problem:"));

                // Export: exactly the daemon's CSV, at the path the save dialog chose, written
                // whole; a path the dialog did not answer is refused and nothing is written there.
                let path = folder.path().join("export.csv");
                let unchosen = console
                    .export_csv(date, Some(2), false, &path)
                    .await
                    .unwrap_err();
                assert_eq!(serde_json::to_value(&unchosen).unwrap()["field"], "path");
                assert!(!path.exists());
                console.remember_export_path(path.clone()).unwrap();
                let exported = console
                    .export_csv(date, Some(2), false, &path)
                    .await
                    .unwrap();
                let expected = server.get_bytes(&format!(
                    "/api/v2/finance/settlement/{date}/export.csv?revision=2"
                ));
                assert_eq!(std::fs::read(&path).unwrap(), expected);
                assert_eq!(exported.bytes, expected.len() as u64);
                let again = console
                    .export_csv(date, Some(2), false, &path)
                    .await
                    .unwrap_err();
                assert_eq!(
                    serde_json::to_value(&again).unwrap()["field"],
                    "path",
                    "one choice, one export"
                );
                let nowhere = folder.path().join("missing").join("export.csv");
                console.remember_export_path(nowhere.clone()).unwrap();
                let error = console
                    .export_csv(date, None, false, &nowhere)
                    .await
                    .unwrap_err();
                assert_eq!(error.kind(), "export", "{error}");
                assert!(!nowhere.exists());
                let error = console
                    .export_csv(date, None, false, Path::new("relative.csv"))
                    .await
                    .unwrap_err();
                assert_eq!(serde_json::to_value(&error).unwrap()["field"], "path");

                // A token revoked meanwhile: the next call is refused and the session ends.
                server.setup.settle(&["token", "revoke", "ana"]).assert_ok();
                let error = console.history(&HistoryQuery::default()).await.unwrap_err();
                assert!(error.is_unauthorized(), "{error}");
                assert!(console.connection().await.is_none());
                assert!(matches!(
                    console.history(&HistoryQuery::default()).await,
                    Err(CommandError::NotConnected)
                ));
            })
        },
    );
}

/// Polls until the revision completed or failed (bounded).
async fn wait_finished(
    console: &Console,
    date: chrono::NaiveDate,
    revision: u32,
) -> SettlementStatus {
    for _ in 0..300 {
        let view = console.settlement(date, Some(revision)).await.unwrap();
        match view.detail.settlement.status {
            SettlementStatus::Completed | SettlementStatus::Failed => {
                return view.detail.settlement.status
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    panic!("revision {revision} of {date} did not finish within 30 s");
}
