//! A real daemon for the console's tests: `settle demo` (a month of settled marketplace days, paid
//! through the demo's own sandbox) on the embedded store, served on 127.0.0.1 with a provider on
//! loopback for what the tests pay out later, and an operator and a viewer token.

use chrono::NaiveDate;
use serde_json::Value;

use crate::daemon::{Daemon, Setup};
use crate::provider_server::ProviderServer;

pub struct DemoServer {
    /// The payout provider reruns and retries pay through (a real HTTP server on loopback).
    pub provider: ProviderServer,
    pub setup: Setup,
    pub daemon: Daemon,
    pub operator_token: String,
    pub viewer_token: String,
    /// The demo's last settled date.
    pub last_date: NaiveDate,
}

impl DemoServer {
    pub fn start() -> DemoServer {
        let provider = ProviderServer::start();
        // The nightly job stays off: the tests decide what runs.
        let setup = Setup::sqlite(&format!(
            "[scheduler]\nenabled = false\n[payouts]\nprovider_url = \"{}\"\n",
            provider.base_url()
        ));
        let out = setup.sandbox.path().join("demo-out");
        setup
            .settle(&["demo", "--out-dir", out.to_str().expect("a UTF-8 path")])
            .assert_ok();
        let operator_token = setup.token("ana", "operator");
        let viewer_token = setup.token("vic", "viewer");
        let daemon = setup.start();
        let mut server = DemoServer {
            provider,
            setup,
            daemon,
            operator_token,
            viewer_token,
            last_date: NaiveDate::MIN,
        };
        server.last_date = server.latest_date();
        server
    }

    fn latest_date(&self) -> NaiveDate {
        let history = self.get_json("/api/v2/finance/settlement/history?per_page=1");
        history["items"][0]["settlement_date"]
            .as_str()
            .expect("the demo settled dates")
            .parse()
            .expect("a date")
    }

    /// `GET path` with the operator token, answered 200, as JSON: what the console must show.
    pub fn get_json(&self, path: &str) -> Value {
        serde_json::from_slice(&self.get_bytes(path)).expect("JSON")
    }

    pub fn get_bytes(&self, path: &str) -> Vec<u8> {
        let url = format!("{}{path}", self.daemon.base_url);
        let token = self.operator_token.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                let response = reqwest::Client::builder()
                    .no_proxy()
                    .build()
                    .expect("a client")
                    .get(&url)
                    .bearer_auth(token)
                    .send()
                    .await
                    .expect("the daemon answers");
                assert_eq!(response.status(), 200, "GET {url}");
                response.bytes().await.expect("a body").to_vec()
            })
        })
        .join()
        .expect("the request thread")
    }
}
