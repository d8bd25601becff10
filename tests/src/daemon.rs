//! A real `settle serve` on 127.0.0.1 for the API tests: started on a free port in a sandbox, its
//! tokens made by `settle token create`, called over HTTP, stopped by SIGTERM (or killed) on demand.

use std::io::{BufRead, BufReader};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;

use crate::support::{Ran, Sandbox};

/// The environment the store options read; cleared so the caller's shell cannot change a test.
const STORE_VARIABLES: &[&str] = &[
    "SETTLE_STORE",
    "SETTLE_MONGO_URI",
    "SETTLE_MONGO_DB",
    "SETTLE_MONGO_PASSWORD",
    "CREDENTIALS_DIRECTORY",
    "SETTLE_PROVIDER_CALLBACK_SECRET",
    "SETTLE_PROVIDER_TOKEN",
    "SETTLE_WEBHOOK_SECRET",
];

/// How long a daemon may take to say it listens.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The file every daemon sandbox is configured by.
pub const CONFIG_FILE: &str = "settle.toml";

/// Where and how a daemon runs: the sandbox (shared by daemons on one store), extra command-line
/// options before the subcommand (e.g. the MongoDB store), and environment variables.
#[derive(Clone)]
pub struct Setup {
    pub sandbox: Arc<Sandbox>,
    pub options: Vec<String>,
    pub env: Vec<(String, String)>,
}

impl Setup {
    /// A fresh sandbox on the embedded store, configured by `config` (TOML). The scheduler is off
    /// unless `config` turns it on, so that tests decide which dates get settled.
    pub fn sqlite(config: &str) -> Setup {
        let sandbox = Sandbox::new();
        write_config(&sandbox, config);
        Setup {
            sandbox: Arc::new(sandbox),
            options: Vec::new(),
            env: Vec::new(),
        }
    }

    /// A fresh sandbox whose store is `options` (e.g. `--store mongodb --mongo-uri …`).
    pub fn with_options(config: &str, options: Vec<String>) -> Setup {
        let mut setup = Setup::sqlite(config);
        setup.options = options;
        setup
    }

    pub fn env(mut self, name: &str, value: &str) -> Setup {
        self.env.push((name.into(), value.into()));
        self
    }

    /// Runs a `settle` command (not the daemon) against the same store and config.
    pub fn settle(&self, args: &[&str]) -> Ran {
        let output = tokio::task::block_in_place(|| {
            self.command(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .output()
                .expect("run settle")
        });
        Ran {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// `settle token create --name NAME --role ROLE`: the token, the last line of its output.
    pub fn token(&self, name: &str, role: &str) -> String {
        let ran = self.settle(&["token", "create", "--name", name, "--role", role]);
        ran.assert_ok();
        ran.stdout
            .lines()
            .last()
            .expect("the token is the last line")
            .trim()
            .to_string()
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut full: Vec<&str> = vec!["--config", CONFIG_FILE];
        full.extend(self.options.iter().map(String::as_str));
        full.extend_from_slice(args);
        let mut command = self.sandbox.command(&full);
        for name in STORE_VARIABLES {
            command.env_remove(name);
        }
        for (name, value) in &self.env {
            command.env(name, value);
        }
        command
    }

    /// Starts `settle serve --listen 127.0.0.1:0` and waits until it says where it listens.
    pub fn start(&self) -> Daemon {
        self.start_with_env(&[])
    }

    /// As `start`, with extra environment (e.g. `SETTLE_FAILPOINTS`) for this daemon only.
    pub fn start_with_env(&self, env: &[(&str, &str)]) -> Daemon {
        let mut command = self.command(&["serve", "--listen", "127.0.0.1:0"]);
        for (name, value) in env {
            command.env(name, value);
        }
        command
            .env("SETTLE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn settle serve");
        let output = Arc::new(Mutex::new(String::new()));
        let (listening_tx, listening_rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if let Some(url) = line.strip_prefix("settle listening on ") {
                        let _ = listening_tx.send(url.trim().to_string());
                    }
                    push_line(&output, &line);
                }
            });
        }
        {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    push_line(&output, &line);
                }
            });
        }
        let base_url = match listening_rx.recv_timeout(START_TIMEOUT) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "settle serve did not start; its output:\n{}",
                    output.lock().unwrap()
                );
            }
        };
        Daemon {
            child: Some(child),
            base_url,
            output,
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
        }
    }
}

/// Writes the sandbox's config file.
pub fn write_config(sandbox: &Sandbox, config: &str) {
    sandbox.write(CONFIG_FILE, config);
}

fn push_line(output: &Mutex<String>, line: &str) {
    let mut output = output.lock().unwrap();
    output.push_str(line);
    output.push('\n');
}

/// A running `settle serve`. Dropping it kills the process.
pub struct Daemon {
    child: Option<Child>,
    pub base_url: String,
    output: Arc<Mutex<String>>,
    client: reqwest::Client,
}

impl Daemon {
    /// `METHOD base_url+path`, to be given a token, key and body, then sent.
    pub fn call(&self, method: Method, path: &str) -> Call {
        Call {
            builder: self
                .client
                .request(method.clone(), format!("{}{path}", self.base_url)),
            description: format!("{method} {path}"),
        }
    }

    pub fn get(&self, path: &str) -> Call {
        self.call(Method::GET, path)
    }

    pub fn post(&self, path: &str) -> Call {
        self.call(Method::POST, path)
    }

    pub fn delete(&self, path: &str) -> Call {
        self.call(Method::DELETE, path)
    }

    /// Everything the daemon printed so far (stdout and stderr).
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends SIGTERM and waits (up to `within`) for the process to exit. Panics if it does not.
    pub fn terminate(&mut self, within: Duration) -> ExitStatus {
        let pid = self.pid();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid}");
        self.wait(within)
    }

    /// Waits for the process to exit on its own, up to `within`.
    pub fn wait(&mut self, within: Duration) -> ExitStatus {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.child = None;
                // Let the reader threads take the last lines.
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "settle serve did not exit within {within:?}; its output:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process at once (SIGKILL): what a crash looks like.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Polls `GET /api/v2/finance/settlement/{date}` until its status is one of `wanted`, and
    /// returns the settlement. Panics after 30 s with the last answer.
    pub async fn wait_for_status(&self, token: &str, date: &str, wanted: &[&str]) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let reply = self
                .get(&format!("/api/v2/finance/settlement/{date}"))
                .bearer(token)
                .send()
                .await;
            if reply.status == 200 {
                let body = reply.json();
                if wanted.contains(&body["settlement"]["status"].as_str().unwrap_or_default()) {
                    return body;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{date} never reached {wanted:?}; last answer {} {}\ndaemon output:\n{}",
                reply.status,
                reply.text(),
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One request being built.
pub struct Call {
    builder: reqwest::RequestBuilder,
    description: String,
}

impl Call {
    pub fn bearer(self, token: &str) -> Call {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn key(self, idempotency_key: &str) -> Call {
        self.header("idempotency-key", idempotency_key)
    }

    pub fn header(mut self, name: &str, value: &str) -> Call {
        self.builder = self.builder.header(name, value);
        self
    }

    pub fn json(mut self, body: &Value) -> Call {
        self.builder = self.builder.json(body);
        self
    }

    /// A raw body with its content type (for malformed and non-JSON bodies).
    pub fn body(mut self, content_type: &str, body: impl Into<reqwest::Body>) -> Call {
        self.builder = self.builder.header("content-type", content_type).body(body);
        self
    }

    pub async fn send(self) -> Reply {
        let response = self
            .builder
            .send()
            .await
            .unwrap_or_else(|error| panic!("{}: {error}", self.description));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("response body").to_vec();
        Reply {
            description: self.description,
            status,
            headers,
            body,
        }
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Reply {
    pub description: String,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "{}: body is not JSON ({error}): {}",
                self.description,
                self.text()
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    }

    /// Asserts the status and returns the JSON body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "{}: unexpected status; body: {}",
            self.description,
            self.text()
        );
        if self.body.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Asserts an RFC 9457 problem with this status and `urn:settle:problem:{kind}` type, carrying
    /// the request id; returns the problem.
    #[track_caller]
    pub fn expect_problem(&self, status: u16, kind: &str) -> Value {
        let problem = self.expect(status);
        assert_eq!(
            self.header("content-type").as_deref(),
            Some("application/problem+json"),
            "{}: problems are application/problem+json",
            self.description
        );
        assert_eq!(
            problem["type"],
            format!("urn:settle:problem:{kind}"),
            "{}: {problem}",
            self.description
        );
        assert_eq!(problem["status"], status, "{}: {problem}", self.description);
        assert!(
            problem["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{}: a problem has a title: {problem}",
            self.description
        );
        let request_id = self.header("x-request-id").expect("x-request-id header");
        assert_eq!(
            problem["instance"],
            format!("urn:settle:request:{request_id}"),
            "{}: the problem names the request",
            self.description
        );
        problem
    }
}

/// A sample payment body for `POST /api/v2/payments`.
pub fn payment_body(
    merchant_id: &str,
    amount: &str,
    external_ref: &str,
    occurred_at: &str,
) -> Value {
    serde_json::json!({
        "merchant_id": merchant_id,
        "amount": amount,
        "currency": "USD",
        "method": "card",
        "external_ref": external_ref,
        "occurred_at": occurred_at,
    })
}

impl Setup {
    /// Starts a `settle` command with extra environment and returns at once (output discarded),
    /// for tests that kill, stop or continue it.
    pub fn spawn(&self, args: &[&str], env: &[(&str, &str)]) -> Child {
        self.spawn_with(args, env, Stdio::null())
    }

    /// As `spawn`, with standard error piped for the caller to read (and drain).
    pub fn spawn_with_stderr(&self, args: &[&str], env: &[(&str, &str)]) -> Child {
        self.spawn_with(args, env, Stdio::piped())
    }

    fn spawn_with(&self, args: &[&str], env: &[(&str, &str)], stderr: Stdio) -> Child {
        let mut command = self.command(args);
        for (name, value) in env {
            command.env(name, value);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn settle")
    }

    /// Runs a `settle` command (e.g. a `serve` expected to fail at start-up) and waits up to
    /// `within` for it to exit; kills it and panics with its output if it does not.
    pub fn settle_within(&self, args: &[&str], within: Duration) -> Ran {
        let mut child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn settle");
        let read_all = |mut pipe: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut text = Vec::new();
                let _ = pipe.read_to_end(&mut text);
                String::from_utf8_lossy(&text).into_owned()
            })
        };
        let stdout = read_all(Box::new(child.stdout.take().expect("stdout")));
        let stderr = read_all(Box::new(child.stderr.take().expect("stderr")));
        let deadline = Instant::now() + within;
        let status = tokio::task::block_in_place(|| loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        });
        let stdout = stdout.join().expect("stdout reader");
        let stderr = stderr.join().expect("stderr reader");
        let Some(status) = status else {
            panic!("settle {args:?} did not exit within {within:?}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        };
        Ran {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr,
        }
    }
}

impl Daemon {
    /// Sends SIGTERM and returns at once; `try_wait` and `wait` then follow the exit.
    pub fn send_sigterm(&self) {
        let pid = self.pid();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {pid}");
    }

    /// The exit status if the process has exited, without waiting; `None` while it runs.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .expect("running")
            .try_wait()
            .expect("try_wait")
    }

    /// `host:port` the daemon listens on, for raw TCP checks.
    pub fn address(&self) -> String {
        self.base_url
            .trim_start_matches("http://")
            .trim_start_matches("https://")
            .to_string()
    }
}
