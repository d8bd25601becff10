//! Named crash and pause points between durable writes, for the reliability tests.
//! Compiled into debug builds (and release builds with the `failpoints` feature); `SETTLE_FAILPOINTS="name=action;…"` arms them.
//!
//! Actions: `error` (the step fails as if its I/O had), `abort` (the process dies at once, like a
//! crash), `exit(CODE)`, `sleep(MS)` (hold the point, e.g. to keep a lease while another process races).

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
        let action = action.trim();
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
        } else if let Some(code) = argument("exit(") {
            std::process::exit(code as i32);
        } else if let Some(ms) = argument("sleep(") {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }
    Ok(())
}

/// In release builds without the feature every point is a no-op.
#[cfg(not(any(debug_assertions, feature = "failpoints")))]
#[inline(always)]
pub fn hit(_name: &str) -> Result<(), InjectedFailure> {
    Ok(())
}
