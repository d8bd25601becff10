//! Named crash and pause points between durable writes, for the reliability tests.
//! Compiled into debug builds (and release builds with the `failpoints` feature); `SETTLE_FAILPOINTS="name=action;…"` arms them.
//!
//! Actions: `error` (the step fails as if its I/O had), `abort` (the process dies at once, like a
//! crash), `kill` (SIGKILL to itself: no handler, no flush, as a power cut), `exit(CODE)`,
//! `sleep(MS)` (hold the point, e.g. to keep a lease while another process races). `action@N`
//! applies the action at the point's N-th hit only (from 1, counted per process), e.g.
//! `payout.after_send=kill@3` dies right after the third payout was sent.

/// A failure injected at a named point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("injected failure at {0}")]
pub struct InjectedFailure(pub String);

/// Passes through the named point, applying the armed action if any.
#[cfg(any(debug_assertions, feature = "failpoints"))]
pub fn hit(name: &str) -> Result<(), InjectedFailure> {
    let Ok(spec) = std::env::var("SETTLE_FAILPOINTS") else {
        return Ok(());
    };
    for entry in spec.split(';') {
        let Some((point, action)) = entry.split_once('=') else {
            continue;
        };
        if point.trim() != name {
            continue;
        }
        let (action, nth_hit) = match action.trim().rsplit_once('@') {
            Some((action, n)) => (action, n.trim().parse::<u64>().ok()),
            None => (action.trim(), None),
        };
        if let Some(nth_hit) = nth_hit {
            if count_hit(name) != nth_hit {
                continue;
            }
        }
        let argument = |prefix: &str| {
            action
                .strip_prefix(prefix)
                .and_then(|rest| rest.strip_suffix(')'))
                .and_then(|n| n.parse::<u64>().ok())
        };
        tracing::warn!(failpoint = name, action, "failpoint hit");
        if action == "error" {
            return Err(InjectedFailure(name.to_string()));
        } else if action == "abort" {
            std::process::abort();
        } else if action == "kill" {
            kill_self();
        } else if let Some(code) = argument("exit(") {
            std::process::exit(code as i32);
        } else if let Some(ms) = argument("sleep(") {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }
    Ok(())
}

/// How many times `name` was hit in this process, this hit included.
#[cfg(any(debug_assertions, feature = "failpoints"))]
fn count_hit(name: &str) -> u64 {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static HITS: OnceLock<Mutex<HashMap<String, u64>>> = OnceLock::new();
    let mut hits = HITS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let count = hits.entry(name.to_string()).or_insert(0);
    *count += 1;
    *count
}

/// SIGKILL to this process: it cannot be caught, so nothing runs after it (no destructor, no
/// flush, no rollback), exactly what a crash or a `kill -9` leaves behind.
#[cfg(any(debug_assertions, feature = "failpoints"))]
fn kill_self() -> ! {
    #[cfg(unix)]
    // SAFETY: kill(2) on our own pid with a valid signal number has no memory effects.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    // SIGKILL is delivered before kill(2) returns to a single-threaded caller, and promptly to
    // a multi-threaded one; elsewhere (Windows) an abort is the nearest thing.
    loop {
        #[cfg(not(unix))]
        std::process::abort();
        #[cfg(unix)]
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// In release builds without the feature every point is a no-op.
#[cfg(not(any(debug_assertions, feature = "failpoints")))]
#[inline(always)]
pub fn hit(_name: &str) -> Result<(), InjectedFailure> {
    Ok(())
}
