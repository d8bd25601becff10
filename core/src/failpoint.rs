//! Named crash and pause points between durable writes, for the reliability tests.
//! Compiled into debug builds (and release builds with the `failpoints` feature); `SETTLE_FAILPOINTS="name=action;…"` arms them.
//!
//! Actions: `error` (the step fails as if its I/O had), `abort` (the process dies at once, like a
//! crash), `kill` (SIGKILL to itself: no handler, no flush, as a power cut), `exit(CODE)`,
//! `sleep(MS)` (hold the point, e.g. to keep a lease while another process races), `stall` (the
//! whole process stops at the point, SIGSTOP to itself, until a test sends SIGCONT). `action@N`
//! applies the action at the point's N-th hit only (from 1, counted per process), e.g.
//! `payout.after_send=kill@3` dies right after the third payout was sent.
//!
//! In one process, a test holds an async point (`pause`) for one task only with `stall_in`, and
//! runs that task inside `scoped`: the store adapters' writes pass through such points.

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
        } else if action == "stall" {
            stop_self(name);
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

/// SIGSTOP to this process: every thread stops at once (as a frozen VM or a long pause would
/// stop it) and nothing runs until SIGCONT. Where there is no SIGSTOP the point is passed.
#[cfg(any(debug_assertions, feature = "failpoints"))]
fn stop_self(name: &str) {
    // Said on stderr directly (unbuffered), so a test reading it knows the process is stopping.
    eprintln!("failpoint {name} stalled: send SIGCONT to release");
    #[cfg(unix)]
    // SAFETY: kill(2) on our own pid with a valid signal number has no memory effects.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGSTOP);
    }
}

/// Passes through the named point in async code: the armed action as for `hit`, then, inside
/// `scoped`, a stall armed for this scope with `stall_in` holds the task until released.
pub async fn pause(name: &str) -> Result<(), InjectedFailure> {
    hit(name)?;
    #[cfg(any(debug_assertions, feature = "failpoints"))]
    if let Some(stall) = scoped_stall(name) {
        stall.hold().await;
    }
    Ok(())
}

/// A point held for one scope: the task reaching it waits until the test releases it.
#[cfg(any(debug_assertions, feature = "failpoints"))]
#[derive(Debug, Default)]
pub struct Stall {
    reached: tokio::sync::Notify,
    released: tokio::sync::Notify,
    state: std::sync::Mutex<StallState>,
}

#[cfg(any(debug_assertions, feature = "failpoints"))]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum StallState {
    #[default]
    Armed,
    Holding,
    Released,
}

#[cfg(any(debug_assertions, feature = "failpoints"))]
impl Stall {
    async fn hold(&self) {
        let released = self.released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        {
            let mut state = self.lock();
            if *state != StallState::Armed {
                return;
            }
            *state = StallState::Holding;
        }
        self.reached.notify_waiters();
        self.reached.notify_one();
        released.await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StallState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// True once a task is held at the point (or was, and was released).
    pub fn is_reached(&self) -> bool {
        *self.lock() != StallState::Armed
    }

    /// Waits until a task is held at the point.
    pub async fn reached(&self) {
        loop {
            let notified = self.reached.notified();
            if self.is_reached() {
                return;
            }
            notified.await;
        }
    }

    /// Lets the held task go on (and every later one pass): the stall holds once.
    pub fn release(&self) {
        *self.lock() = StallState::Released;
        self.released.notify_waiters();
    }
}

#[cfg(any(debug_assertions, feature = "failpoints"))]
tokio::task_local! {
    static SCOPE: u64;
}

#[cfg(any(debug_assertions, feature = "failpoints"))]
type StallKey = (u64, String);

#[cfg(any(debug_assertions, feature = "failpoints"))]
fn stalls(
) -> std::sync::MutexGuard<'static, std::collections::HashMap<StallKey, std::sync::Arc<Stall>>> {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, OnceLock};
    static STALLS: OnceLock<Mutex<HashMap<StallKey, Arc<Stall>>>> = OnceLock::new();
    STALLS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Arms a stall at `name` for the tasks run inside `scoped(scope, …)` (other scopes pass).
/// Arming again replaces the earlier stall of that scope and point.
#[cfg(any(debug_assertions, feature = "failpoints"))]
pub fn stall_in(scope: u64, name: &str) -> std::sync::Arc<Stall> {
    let stall = std::sync::Arc::new(Stall::default());
    stalls().insert((scope, name.to_string()), stall.clone());
    stall
}

/// Disarms (and releases) every stall of `scope`.
#[cfg(any(debug_assertions, feature = "failpoints"))]
pub fn clear_scope(scope: u64) {
    stalls().retain(|(s, _), stall| {
        if *s == scope {
            stall.release();
        }
        *s != scope
    });
}

/// Runs `future` in `scope`: the stalls armed for it apply to its `pause` points.
#[cfg(any(debug_assertions, feature = "failpoints"))]
pub async fn scoped<F: std::future::Future>(scope: u64, future: F) -> F::Output {
    SCOPE.scope(scope, future).await
}

#[cfg(any(debug_assertions, feature = "failpoints"))]
fn scoped_stall(name: &str) -> Option<std::sync::Arc<Stall>> {
    let scope = SCOPE.try_with(|scope| *scope).ok()?;
    stalls().get(&(scope, name.to_string())).cloned()
}

/// In release builds without the feature every point is a no-op.
#[cfg(not(any(debug_assertions, feature = "failpoints")))]
#[inline(always)]
pub fn hit(_name: &str) -> Result<(), InjectedFailure> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_scoped_stall_holds_its_own_scope_once_and_lets_others_pass() {
        let stall = stall_in(7, "test.point");
        // Another scope, and no scope at all, pass the point.
        scoped(8, pause("test.point")).await.unwrap();
        pause("test.point").await.unwrap();
        assert!(!stall.is_reached());

        let held = tokio::spawn(scoped(7, async {
            pause("test.point").await.unwrap();
            "went on"
        }));
        stall.reached().await;
        tokio::task::yield_now().await;
        assert!(!held.is_finished(), "the task went past a held point");
        stall.release();
        assert_eq!(held.await.unwrap(), "went on");
        // Held once: the next pass in that scope goes straight through.
        scoped(7, pause("test.point")).await.unwrap();
        clear_scope(7);
    }
}
