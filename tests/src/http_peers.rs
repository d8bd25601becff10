//! Real HTTP peers for black-box tests: an axum router served on `127.0.0.1:0` inside the current
//! tokio runtime, so clients under test talk to a real socket rather than a mock.

use std::net::{SocketAddr, TcpListener as StdTcpListener};

use axum::Router;
use settle_core::retry::RetryPolicy;
use tokio::sync::oneshot;

/// `policy` with tiny delays so client tests against these peers run in well under a second:
/// backoff 10–50 ms, 300 ms per attempt, 5 s in all; a fixed seed makes the jitter reproducible.
pub fn fast_policy(policy: RetryPolicy) -> RetryPolicy {
    let mut policy = policy.with_seed(1);
    policy.base_delay_ms = 10;
    policy.max_delay_ms = 50;
    policy.attempt_timeout_ms = 300;
    policy.deadline_ms = 5_000;
    policy
}

/// A router being served on a loopback port. Dropping it stops accepting connections.
pub struct Peer {
    base_url: String,
    address: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
}

impl Peer {
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops accepting connections; requests in flight are allowed to finish.
    pub fn shutdown(mut self) {
        self.signal_shutdown();
    }

    fn signal_shutdown(&mut self) {
        if let Some(sender) = self.shutdown.take() {
            // The server may already be gone; there is nobody to tell then.
            let _ = sender.send(());
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.signal_shutdown();
    }
}

/// Serves `router` on a fresh loopback port on the current tokio runtime and returns at once.
///
/// Binding is synchronous (a std listener handed to tokio), so the port accepts connections as soon
/// as this returns. Must be called from within a runtime. Tests that block a thread (running the
/// `settle` binary with `std::process::Command`) need a multi-thread runtime so the server keeps
/// answering meanwhile.
pub fn serve(router: Router) -> Peer {
    let listener = StdTcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener
        .set_nonblocking(true)
        .expect("make the listener non-blocking");
    let address = listener.local_addr().expect("listener address");
    let listener = tokio::net::TcpListener::from_std(listener).expect("hand the listener to tokio");
    let (sender, receiver) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let stopped = async {
            // Either an explicit shutdown or the `Peer` being dropped ends the server.
            let _ = receiver.await;
        };
        if let Err(error) = axum::serve(listener, router)
            .with_graceful_shutdown(stopped)
            .await
        {
            eprintln!("test HTTP peer on {address} stopped: {error}");
        }
    });
    Peer {
        base_url: format!("http://{address}"),
        address,
        shutdown: Some(sender),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    #[tokio::test]
    async fn http_peers_serve_a_router_until_shut_down() {
        let peer = serve(Router::new().route("/ping", get(|| async { "pong" })));
        assert!(peer.base_url().starts_with("http://127.0.0.1:"));
        assert_ne!(peer.address().port(), 0);
        let answer = raw_get(peer.address(), "/ping").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("pong"), "{answer}");
        let address = peer.address();
        peer.shutdown();
        // Once shut down, the port stops accepting new connections.
        let mut refused = false;
        for _ in 0..50 {
            if tokio::net::TcpStream::connect(address).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(refused, "the peer still accepts connections after shutdown");
    }

    /// A bare HTTP/1.1 GET over a socket: this test checks the helper, not an HTTP client.
    async fn raw_get(address: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }
}
