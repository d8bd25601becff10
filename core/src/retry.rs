//! Retrying fallible I/O (the database, external APIs, payment providers) with capped exponential
//! backoff, full jitter, a per-attempt timeout and an overall deadline — and never re-running what may not run twice.
//!
//! Three presets come from the origin issue, "N retries" meaning up to N + 1 attempts:
//!
//! | preset         | retries | base   | factor | max delay | attempt timeout | deadline |
//! |----------------|---------|--------|--------|-----------|-----------------|----------|
//! | `database`     | 5       | 500 ms | ×1.5   | 5 s       | 10 s            | 60 s     |
//! | `external_api` | 3       | 2 s    | ×2     | 30 s      | 10 s            | 2 min    |
//! | `payment`      | 2       | 3 s    | ×2     | 30 s      | 15 s            | 2 min    |
//!
//! The delay before retry k (1-based) is uniform in `[0, cap_k]` ms with
//! `cap_k = min(max_delay, floor(base × factor^(k-1)))` ("full jitter"), so that many clients failing
//! together do not retry together. Everything is integer milliseconds and a factor in per mille:
//! no floating point anywhere in this module.
//!
//! [`retry`] drives backon's `Retryable` with [`FullJitterBuilder`] (backon's own jitter adds a
//! random amount on top of the delay, which is not full jitter).

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, Retryable};
use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::time::Instant;

/// Per-mille denominator of [`RetryPolicy::factor_per_mille`]: 1000 is ×1, 1500 is ×1.5.
const PER_MILLE: u32 = 1000;

/// Which preset a policy came from; telemetry counts attempts per name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyName {
    Database,
    ExternalApi,
    Payment,
}

impl PolicyName {
    /// Every name.
    pub const ALL: [PolicyName; 3] = [
        PolicyName::Database,
        PolicyName::ExternalApi,
        PolicyName::Payment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PolicyName::Database => "database",
            PolicyName::ExternalApi => "external_api",
            PolicyName::Payment => "payment",
        }
    }
}

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[retry.NAME]`: the three retry policies, each adjustable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrySettings {
    pub database: RetryPolicy,
    pub external_api: RetryPolicy,
    pub payment: RetryPolicy,
}

impl Default for RetrySettings {
    fn default() -> Self {
        RetrySettings {
            database: RetryPolicy::database(),
            external_api: RetryPolicy::external_api(),
            payment: RetryPolicy::payment(),
        }
    }
}

/// How many times to try, how long to wait between tries, and how long to try at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub name: PolicyName,
    /// Retries after the first attempt: up to `max_retries + 1` attempts in all.
    pub max_retries: u32,
    /// Cap of the delay before the first retry.
    pub base_delay_ms: u64,
    /// Growth of the cap per retry, in per mille (1500 = ×1.5, 2000 = ×2).
    pub factor_per_mille: u32,
    /// No computed backoff delay exceeds this (a server's `Retry-After` may, up to the deadline).
    pub max_delay_ms: u64,
    /// Each attempt is abandoned after this long (and then counts as a retryable failure).
    pub attempt_timeout_ms: u64,
    /// The whole call — attempts and sleeps — ends by this long after it started.
    pub deadline_ms: u64,
    /// Seed of the jitter; `None` draws a fresh seed from the OS-seeded thread RNG on every call.
    /// Tests set it so that schedules are reproducible.
    pub jitter_seed: Option<u64>,
}

impl RetryPolicy {
    /// The store: 5 retries from 500 ms growing ×1.5 (caps 500, 750, 1125, 1687, 2531 ms, under
    /// the 5 s max delay). An attempt gets 10 s — a query or transaction that is merely slow should
    /// not be cut short, one stuck on a lock should — and the whole call 60 s.
    pub fn database() -> Self {
        RetryPolicy {
            name: PolicyName::Database,
            max_retries: 5,
            base_delay_ms: 500,
            factor_per_mille: 1500,
            max_delay_ms: 5_000,
            attempt_timeout_ms: 10_000,
            deadline_ms: 60_000,
            jitter_seed: None,
        }
    }

    /// Bank, FX and other third-party HTTP APIs: 3 retries from 2 s growing ×2 (caps 2, 4, 8 s).
    /// The 30 s max delay only matters for custom policies with more retries; a 10 s attempt
    /// timeout; a 2 min deadline leaves room to honour a server's `Retry-After` of a minute or so.
    pub fn external_api() -> Self {
        RetryPolicy {
            name: PolicyName::ExternalApi,
            max_retries: 3,
            base_delay_ms: 2_000,
            factor_per_mille: 2000,
            max_delay_ms: 30_000,
            attempt_timeout_ms: 10_000,
            deadline_ms: 120_000,
            jitter_seed: None,
        }
    }

    /// Payment providers: only 2 retries from 3 s growing ×2 (caps 3, 6 s), since every retry of a
    /// money movement is one more chance of a duplicate should a key be mishandled downstream. A
    /// 15 s attempt timeout (providers are slow under load), 30 s max delay, 2 min deadline.
    pub fn payment() -> Self {
        RetryPolicy {
            name: PolicyName::Payment,
            max_retries: 2,
            base_delay_ms: 3_000,
            factor_per_mille: 2000,
            max_delay_ms: 30_000,
            attempt_timeout_ms: 15_000,
            deadline_ms: 120_000,
            jitter_seed: None,
        }
    }

    pub fn for_name(name: PolicyName) -> Self {
        match name {
            PolicyName::Database => RetryPolicy::database(),
            PolicyName::ExternalApi => RetryPolicy::external_api(),
            PolicyName::Payment => RetryPolicy::payment(),
        }
    }

    /// The same policy with reproducible jitter: every call draws the same delays.
    pub fn with_seed(self, seed: u64) -> Self {
        RetryPolicy {
            jitter_seed: Some(seed),
            ..self
        }
    }

    /// The un-jittered cap of the delay before retry `retry` (1-based; 0 is read as 1):
    /// `min(max_delay_ms, floor(base_delay_ms × factor^(retry-1)))`.
    ///
    /// The power is computed as an exact fraction and rounded down once, not step by step:
    /// for the database preset retry 5 is floor(500 × 1.5⁴) = floor(2531.25) = 2531 ms, where
    /// flooring at each step would give 2530. Only if the fraction outgrows `u128` (factors barely
    /// above or below ×1 with dozens of retries) does it continue step by step from the floor.
    pub fn delay_cap_ms(&self, retry: u32) -> u64 {
        let max = u128::from(self.max_delay_ms);
        let divisor = gcd(self.factor_per_mille, PER_MILLE);
        // Reduced once so that ×1.5 multiplies by 3/2, not 1500/1000: the fraction then fits
        // in u128 for far more retries.
        let (step_num, step_den) = (
            u128::from(self.factor_per_mille / divisor),
            u128::from(PER_MILLE / divisor),
        );
        let (mut num, mut den) = (u128::from(self.base_delay_ms), 1u128);
        let mut exact = true;
        for _ in 1..retry.max(1) {
            let value = num / den;
            if value >= max || value == 0 || step_num == step_den {
                // Already capped, or it can no longer change.
                break;
            }
            match (num.checked_mul(step_num), den.checked_mul(step_den)) {
                (Some(n), Some(d)) if exact => (num, den) = (n, d),
                _ => {
                    exact = false;
                    let next = value.saturating_mul(step_num) / step_den;
                    if next == value {
                        break;
                    }
                    (num, den) = (next, 1);
                }
            }
        }
        // `min` with a u64 keeps the result within u64.
        u64::try_from((num / den).min(max)).unwrap_or(self.max_delay_ms)
    }

    /// This policy's full-jitter backoff, for use with backon directly.
    pub fn backoff(&self) -> FullJitterBuilder {
        FullJitterBuilder {
            policy: self.clone(),
        }
    }
}

const fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    if a == 0 {
        1
    } else {
        a
    }
}

/// Builds a [`FullJitter`] backoff from a policy (backon's `BackoffBuilder`).
#[derive(Debug, Clone)]
pub struct FullJitterBuilder {
    policy: RetryPolicy,
}

impl BackoffBuilder for FullJitterBuilder {
    type Backoff = FullJitter;

    fn build(self) -> FullJitter {
        let rng = match self.policy.jitter_seed {
            Some(seed) => ChaCha8Rng::seed_from_u64(seed),
            None => ChaCha8Rng::from_rng(&mut rand::rng()),
        };
        FullJitter {
            policy: self.policy,
            retries: 0,
            rng,
        }
    }
}

/// The delays before retries 1..=max_retries, each uniform in `[0, delay_cap_ms(k)]` whole
/// milliseconds; then `None`, which tells backon that retries are exhausted.
#[derive(Debug, Clone)]
pub struct FullJitter {
    policy: RetryPolicy,
    retries: u32,
    rng: ChaCha8Rng,
}

impl Iterator for FullJitter {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        if self.retries >= self.policy.max_retries {
            return None;
        }
        self.retries += 1;
        let cap_ms = self.policy.delay_cap_ms(self.retries);
        Some(Duration::from_millis(self.rng.random_range(0..=cap_ms)))
    }
}

/// Whether a failure is worth another attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Classification {
    /// Transient (timeouts, overload, resets). `retry_after` is the server's own wish, which the
    /// next delay honours as a minimum.
    Retryable { retry_after: Option<Duration> },
    /// Another attempt would fail the same way (bad request, refused, not found).
    Permanent,
}

impl Classification {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Classification::Retryable { .. })
    }
}

/// Errors that know whether they are worth retrying.
pub trait Classify {
    fn classify(&self) -> Classification;
}

impl Classify for reqwest::Error {
    fn classify(&self) -> Classification {
        classify_reqwest_error(self)
    }
}

/// Whether an operation may run twice. A non-idempotent operation is never retried unless it carries an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Idempotence {
    /// Running it twice is the same as once (reads, upserts by natural key).
    Idempotent,
    /// The receiver deduplicates on this key, so a repeat is harmless. The key is never logged.
    Keyed(String),
    /// Runs exactly once, whatever the error.
    NotIdempotent,
}

impl Idempotence {
    /// Whether a second attempt is allowed. A blank key is no key: it would deduplicate nothing
    /// (or everything), so it is treated as [`Idempotence::NotIdempotent`].
    pub fn may_run_twice(&self) -> bool {
        match self {
            Idempotence::Idempotent => true,
            Idempotence::Keyed(key) => !key.trim().is_empty(),
            Idempotence::NotIdempotent => false,
        }
    }
}

/// Why [`retry`] gave up. Every message names the operation, the policy and the attempt count.
#[derive(Debug, thiserror::Error)]
pub enum RetryError<E> {
    /// The error was classified permanent: retrying could not help.
    #[error(
        "{operation} failed permanently on attempt {attempts} (retry policy {policy}): {error}"
    )]
    Permanent {
        policy: PolicyName,
        operation: String,
        attempts: u32,
        error: E,
    },
    /// A retryable error, but the operation may not run twice (no idempotency key).
    #[error(
        "{operation} failed on attempt {attempts} and was not retried because it is not idempotent \
         and has no idempotency key (retry policy {policy}): {error}"
    )]
    NotRetried {
        policy: PolicyName,
        operation: String,
        attempts: u32,
        error: E,
    },
    /// Every retry was used and the last attempt failed too.
    #[error(
        "{operation} failed on attempt {attempts} with no retries left (retry policy {policy}): {error}"
    )]
    Exhausted {
        policy: PolicyName,
        operation: String,
        attempts: u32,
        error: E,
    },
    /// The last attempt hung past the per-attempt timeout and no retry followed: retries were
    /// exhausted or the operation may not run twice. Whether it took effect is unknown.
    #[error(
        "{operation} attempt {attempts} timed out after {attempt_timeout_ms} ms and was not retried \
         (retry policy {policy})"
    )]
    AttemptTimedOut {
        policy: PolicyName,
        operation: String,
        attempts: u32,
        attempt_timeout_ms: u64,
    },
    /// The next retry (or the running attempt) would have passed the overall deadline.
    /// `last_error` is `None` when the last attempt timed out.
    #[error(
        "{operation} gave up after attempt {attempts}: no time left within the {deadline_ms} ms deadline \
         of retry policy {policy}{}",
        LastError(.last_error)
    )]
    DeadlineExceeded {
        policy: PolicyName,
        operation: String,
        attempts: u32,
        deadline_ms: u64,
        last_error: Option<E>,
    },
}

/// Appends `: error` to a message when there is one.
struct LastError<'a, E>(&'a Option<E>);

impl<E: fmt::Display> fmt::Display for LastError<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(error) => write!(f, ": {error}"),
            None => f.write_str(" (the last attempt timed out)"),
        }
    }
}

impl<E> RetryError<E> {
    /// How many times the operation was started.
    pub fn attempts(&self) -> u32 {
        match self {
            RetryError::Permanent { attempts, .. }
            | RetryError::NotRetried { attempts, .. }
            | RetryError::Exhausted { attempts, .. }
            | RetryError::AttemptTimedOut { attempts, .. }
            | RetryError::DeadlineExceeded { attempts, .. } => *attempts,
        }
    }

    /// The operation's own last error; `None` if the last attempt timed out instead.
    pub fn into_last_error(self) -> Option<E> {
        match self {
            RetryError::Permanent { error, .. }
            | RetryError::NotRetried { error, .. }
            | RetryError::Exhausted { error, .. } => Some(error),
            RetryError::AttemptTimedOut { .. } => None,
            RetryError::DeadlineExceeded { last_error, .. } => last_error,
        }
    }
}

/// What became of one attempt, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptOutcome {
    /// It succeeded.
    Success,
    /// It failed and another attempt followed.
    Retried,
    /// It failed and was the last: permanent, not idempotent, exhausted or out of time.
    GaveUp,
}

impl AttemptOutcome {
    /// Every outcome.
    pub const ALL: [AttemptOutcome; 3] = [
        AttemptOutcome::Success,
        AttemptOutcome::Retried,
        AttemptOutcome::GaveUp,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Success => "success",
            AttemptOutcome::Retried => "retried",
            AttemptOutcome::GaveUp => "gave_up",
        }
    }
}

impl fmt::Display for AttemptOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counts one attempt in the `settle.retry.attempts` counter; every attempt counts exactly once.
fn count(policy: PolicyName, outcome: AttemptOutcome) {
    crate::telemetry::retry_attempt(policy.as_str(), outcome.as_str());
}

/// How one attempt failed, inside the retry loop.
enum Failure<E> {
    Failed(E),
    /// `by_deadline`: the attempt had less than its own timeout left before the overall deadline
    /// and ran out of that instead.
    TimedOut {
        after_ms: u64,
        by_deadline: bool,
    },
}

impl<E: Classify> Failure<E> {
    fn classify(&self) -> Classification {
        match self {
            Failure::Failed(error) => error.classify(),
            // The attempt may or may not have taken effect; that is safe to repeat only for an
            // operation that may run twice, which the caller checks separately.
            Failure::TimedOut { .. } => Classification::Retryable { retry_after: None },
        }
    }
}

impl<E: fmt::Display> fmt::Display for Failure<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Failed(error) => error.fmt(f),
            Failure::TimedOut { after_ms, .. } => {
                write!(f, "attempt timed out after {after_ms} ms")
            }
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Runs `op` (given the 1-based attempt number) under `policy` until it succeeds or must stop.
///
/// - Attempt 1 runs at once; each attempt is cut off after `attempt_timeout_ms`, or at the
///   deadline if that is sooner, and a timed-out attempt counts as retryable.
/// - A [`Classification::Permanent`] error stops at once.
/// - [`Idempotence::NotIdempotent`] (or a blank key) runs exactly once, whatever the error.
/// - Before retry k it sleeps the full-jitter delay, or the error's `Retry-After` if longer.
/// - It stops after `max_retries` retries, or when the next sleep would reach the deadline
///   (it gives up at once rather than sleep past it).
///
/// Every attempt is logged (policy, operation, attempt, outcome, delay, the error's `Display` —
/// never the idempotency key) and counted in `settle.retry.attempts` (see `telemetry`).
pub async fn retry<T, E, F, Fut>(
    policy: &RetryPolicy,
    idempotence: Idempotence,
    operation: &str,
    mut op: F,
) -> Result<T, RetryError<E>>
where
    E: Classify + fmt::Display,
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let name = policy.name;
    let may_run_twice = idempotence.may_run_twice();
    let attempt_timeout = Duration::from_millis(policy.attempt_timeout_ms);
    let started = Instant::now();
    // `None` only for a deadline beyond what `Instant` can represent: no deadline at all.
    let deadline = started.checked_add(Duration::from_millis(policy.deadline_ms));
    let remaining = move || {
        deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        })
    };
    // Shared by the attempt closure and the hooks, which backon keeps side by side; an atomic
    // rather than a Cell keeps this future Send.
    let attempts = AtomicU32::new(0);

    let outcome = (|| {
        let attempt = attempts.fetch_add(1, Ordering::Relaxed) + 1;
        let left = remaining();
        let (limit, by_deadline) = if left < attempt_timeout {
            (left, true)
        } else {
            (attempt_timeout, false)
        };
        let attempt_future = op(attempt);
        async move {
            match tokio::time::timeout(limit, attempt_future).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(error)) => Err(Failure::Failed(error)),
                Err(_elapsed) => Err(Failure::TimedOut {
                    after_ms: millis(limit),
                    by_deadline,
                }),
            }
        }
    })
    .retry(policy.backoff())
    .sleep(tokio::time::sleep)
    // Called first on every failure; `false` ends the loop with that failure.
    .when(|failure: &Failure<E>| may_run_twice && failure.classify().is_retryable())
    // Then given the backoff's next delay (`None` once retries are exhausted); `None` ends the loop.
    .adjust(|failure: &Failure<E>, jittered: Option<Duration>| {
        let jittered = jittered?;
        let delay = match failure.classify() {
            Classification::Retryable {
                retry_after: Some(wished),
            } => jittered.max(wished),
            _ => jittered,
        };
        // An attempt needs some time after the sleep, so landing exactly on the deadline is too late.
        (delay < remaining()).then_some(delay)
    })
    // Only when a retry will follow, with the sleep about to start.
    .notify(|failure: &Failure<E>, delay: Duration| {
        count(name, AttemptOutcome::Retried);
        tracing::warn!(
            policy = name.as_str(),
            operation,
            attempt = attempts.load(Ordering::Relaxed),
            outcome = AttemptOutcome::Retried.as_str(),
            delay_ms = millis(delay),
            error = %failure,
            "attempt failed, retrying"
        );
    })
    .await;

    let attempts = attempts.into_inner();
    let failure = match outcome {
        Ok(value) => {
            count(name, AttemptOutcome::Success);
            tracing::debug!(
                policy = name.as_str(),
                operation,
                attempt = attempts,
                outcome = AttemptOutcome::Success.as_str(),
                "attempt succeeded"
            );
            return Ok(value);
        }
        Err(failure) => failure,
    };
    count(name, AttemptOutcome::GaveUp);
    tracing::warn!(
        policy = name.as_str(),
        operation,
        attempt = attempts,
        outcome = AttemptOutcome::GaveUp.as_str(),
        error = %failure,
        "attempt failed, giving up"
    );
    let operation = operation.to_string();
    // The loop stopped for exactly one of these reasons, re-derived in the order it checks them:
    // `when` (permanent, may not repeat), then `adjust` (backoff exhausted after `max_retries`
    // retries, else the deadline).
    let exhausted = attempts > policy.max_retries;
    Err(match failure {
        Failure::TimedOut {
            by_deadline: true, ..
        } => RetryError::DeadlineExceeded {
            policy: name,
            operation,
            attempts,
            deadline_ms: policy.deadline_ms,
            last_error: None,
        },
        Failure::TimedOut { after_ms, .. } if !may_run_twice || exhausted => {
            RetryError::AttemptTimedOut {
                policy: name,
                operation,
                attempts,
                attempt_timeout_ms: after_ms,
            }
        }
        Failure::TimedOut { .. } => RetryError::DeadlineExceeded {
            policy: name,
            operation,
            attempts,
            deadline_ms: policy.deadline_ms,
            last_error: None,
        },
        Failure::Failed(error) => match error.classify() {
            Classification::Permanent => RetryError::Permanent {
                policy: name,
                operation,
                attempts,
                error,
            },
            Classification::Retryable { .. } if !may_run_twice => RetryError::NotRetried {
                policy: name,
                operation,
                attempts,
                error,
            },
            Classification::Retryable { .. } if exhausted => RetryError::Exhausted {
                policy: name,
                operation,
                attempts,
                error,
            },
            Classification::Retryable { .. } => RetryError::DeadlineExceeded {
                policy: name,
                operation,
                attempts,
                deadline_ms: policy.deadline_ms,
                last_error: Some(error),
            },
        },
    })
}

/// Classifies an HTTP status: 408 (request timeout), 429 (too many requests) and every 5xx are
/// retryable, honouring `Retry-After` if given and understood; everything else (other 4xx, and
/// 1xx/2xx/3xx if asked) is permanent.
///
/// `retry_after` is the raw header: delta-seconds (`"120"`) or an HTTP-date
/// (`"Wed, 21 Oct 2015 07:28:00 GMT"`, read with chrono's RFC 2822 parser; a date in the past
/// means now). Anything else, including the obsolete RFC 850 and asctime date forms, is ignored
/// and the ordinary backoff applies.
pub fn classify_http_status(status: u16, retry_after: Option<&str>) -> Classification {
    classify_http_status_at(status, retry_after, Utc::now())
}

fn classify_http_status_at(
    status: u16,
    retry_after: Option<&str>,
    now: DateTime<Utc>,
) -> Classification {
    match status {
        408 | 429 | 500..=599 => Classification::Retryable {
            retry_after: retry_after.and_then(|value| parse_retry_after(value, now)),
        },
        _ => Classification::Permanent,
    }
}

/// Classifies a payment provider's HTTP status. A money movement is `failed` only on an explicit
/// refusal, so besides what [`classify_http_status`] retries, 409 (a request with this key is in
/// progress), 423 (locked) and 425 (too early) are retried with the same key, honouring
/// `Retry-After`: none of them says "rejected, not paid". Webhooks keep [`classify_http_status`].
pub fn classify_payment_http_status(status: u16, retry_after: Option<&str>) -> Classification {
    classify_payment_http_status_at(status, retry_after, Utc::now())
}

fn classify_payment_http_status_at(
    status: u16,
    retry_after: Option<&str>,
    now: DateTime<Utc>,
) -> Classification {
    match status {
        409 | 423 | 425 => Classification::Retryable {
            retry_after: retry_after.and_then(|value| parse_retry_after(value, now)),
        },
        _ => classify_http_status_at(status, retry_after, now),
    }
}

/// Whether a payment provider's HTTP status is its explicit refusal ("rejected, not paid"): a 4xx
/// other than 408, 409, 423, 425 and 429. Anything else that is not a success leaves the outcome
/// unknown.
pub fn is_payment_refusal(status: u16) -> bool {
    (400..=499).contains(&status) && !matches!(status, 408 | 409 | 423 | 425 | 429)
}

/// Reads a `Retry-After` value relative to `now`.
fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let date = DateTime::parse_from_rfc2822(value).ok()?;
    // A date in the past (negative difference) means "retry now".
    Some(
        (date.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// Classifies a reqwest error. With a status (from `error_for_status`) it is
/// [`classify_http_status`] without `Retry-After` (the error does not keep the headers). Otherwise
/// timeouts, connection failures (refused, reset) and failures while sending the request or
/// reading the body are retryable; building the request (a bad URL), following redirects,
/// decoding the response and anything unrecognised are permanent.
pub fn classify_reqwest_error(error: &reqwest::Error) -> Classification {
    if let Some(status) = error.status() {
        return classify_http_status(status.as_u16(), None);
    }
    if error.is_builder() || error.is_redirect() || error.is_decode() {
        return Classification::Permanent;
    }
    if error.is_timeout() || error.is_connect() || error.is_request() || error.is_body() {
        return Classification::Retryable { retry_after: None };
    }
    Classification::Permanent
}

#[cfg(test)]
mod tests {
    use super::*;

    use chrono::TimeZone;

    /// A test failure: `Transient` (optionally with a `Retry-After`) or `Fatal`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum TestError {
        Transient,
        TransientAfter(Duration),
        Fatal,
    }

    impl fmt::Display for TestError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                TestError::Transient => f.write_str("transient"),
                TestError::TransientAfter(d) => {
                    write!(f, "transient, retry after {} ms", d.as_millis())
                }
                TestError::Fatal => f.write_str("fatal"),
            }
        }
    }

    impl Classify for TestError {
        fn classify(&self) -> Classification {
            match self {
                TestError::Transient => Classification::Retryable { retry_after: None },
                TestError::TransientAfter(d) => Classification::Retryable {
                    retry_after: Some(*d),
                },
                TestError::Fatal => Classification::Permanent,
            }
        }
    }

    /// Runs `outcome(attempt)` under `policy`, recording when each attempt started.
    async fn run(
        policy: &RetryPolicy,
        idempotence: Idempotence,
        outcome: impl Fn(u32) -> Result<u32, TestError>,
    ) -> (Result<u32, RetryError<TestError>>, Vec<Instant>) {
        let mut starts = Vec::new();
        let result = retry(policy, idempotence, "test op", |attempt| {
            starts.push(Instant::now());
            assert_eq!(
                attempt as usize,
                starts.len(),
                "attempts are numbered from 1"
            );
            std::future::ready(outcome(attempt))
        })
        .await;
        (result, starts)
    }

    fn gaps_ms(starts: &[Instant]) -> Vec<u64> {
        starts.windows(2).map(|w| millis(w[1] - w[0])).collect()
    }

    fn always_transient(_: u32) -> Result<u32, TestError> {
        Err(TestError::Transient)
    }

    #[test]
    fn caps_are_exact_integer_powers_rounded_down_once() {
        let database = RetryPolicy::database();
        let caps: Vec<u64> = (1..=5).map(|k| database.delay_cap_ms(k)).collect();
        // 500 × 1.5^(k-1) = 500, 750, 1125, 1687.5, 2531.25.
        assert_eq!(caps, [500, 750, 1125, 1687, 2531]);
        // 500 × 1.5^5 = 3796.875; 500 × 1.5^6 = 5695.3 is capped at the 5 s max.
        assert_eq!(database.delay_cap_ms(6), 3796);
        assert_eq!(database.delay_cap_ms(7), 5000);
        assert_eq!(database.delay_cap_ms(u32::MAX), 5000);
        assert_eq!(database.delay_cap_ms(0), 500);

        let external: Vec<u64> = (1..=3)
            .map(|k| RetryPolicy::external_api().delay_cap_ms(k))
            .collect();
        assert_eq!(external, [2000, 4000, 8000]);
        assert_eq!(RetryPolicy::external_api().delay_cap_ms(5), 30_000);
        let payment: Vec<u64> = (1..=2)
            .map(|k| RetryPolicy::payment().delay_cap_ms(k))
            .collect();
        assert_eq!(payment, [3000, 6000]);

        // Degenerate factors terminate and stay sensible.
        let flat = RetryPolicy {
            factor_per_mille: 1000,
            ..RetryPolicy::database()
        };
        assert_eq!(flat.delay_cap_ms(u32::MAX), 500);
        let shrinking = RetryPolicy {
            factor_per_mille: 999,
            ..RetryPolicy::database()
        };
        assert_eq!(shrinking.delay_cap_ms(2), 499);
        assert!(shrinking.delay_cap_ms(u32::MAX) <= 1);
        let creeping = RetryPolicy {
            factor_per_mille: 1001,
            max_delay_ms: u64::MAX,
            ..RetryPolicy::database()
        };
        assert!(creeping.delay_cap_ms(1_000_000) >= 500);
    }

    #[test]
    fn presets_by_name() {
        for name in PolicyName::ALL {
            assert_eq!(RetryPolicy::for_name(name).name, name);
        }
        assert_eq!(PolicyName::ExternalApi.as_str(), "external_api");
        assert_eq!(AttemptOutcome::GaveUp.as_str(), "gave_up");
        assert_eq!(RetryPolicy::payment().with_seed(9).jitter_seed, Some(9));
    }

    #[test]
    fn jitter_is_full_not_additive() {
        // Over many seeds the first delay spreads over the whole [0, 500] ms, not [500, …].
        let draws: Vec<u64> = (0..1000)
            .map(|seed| {
                let mut backoff = RetryPolicy::database().with_seed(seed).backoff().build();
                millis(backoff.next().unwrap())
            })
            .collect();
        assert!(draws.iter().all(|&d| d <= 500));
        assert!(draws.iter().any(|&d| d < 50));
        assert!(draws.iter().any(|&d| d > 450));
        let mut backoff = RetryPolicy::payment().with_seed(1).backoff().build();
        assert_eq!(
            backoff.by_ref().count(),
            2,
            "one delay per retry, then exhausted"
        );
    }

    async fn assert_preset_schedule(policy: RetryPolicy) {
        let policy = policy.with_seed(42);
        let (result, starts) = run(&policy, Idempotence::Idempotent, always_transient).await;
        let attempts = policy.max_retries + 1;
        assert_eq!(starts.len(), attempts as usize);
        let error = result.unwrap_err();
        assert!(
            matches!(
                error,
                RetryError::Exhausted {
                    error: TestError::Transient,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(error.attempts(), attempts);
        assert_eq!(
            error.to_string(),
            format!(
                "test op failed on attempt {attempts} with no retries left (retry policy {}): transient",
                policy.name
            )
        );
        let gaps = gaps_ms(&starts);
        for (k, gap) in (1..).zip(&gaps) {
            let cap = policy.delay_cap_ms(k);
            assert!(
                *gap <= cap,
                "{}: gap {k} is {gap} ms > cap {cap} ms",
                policy.name
            );
        }
        let total: u64 = gaps.iter().sum();
        assert!(total < policy.deadline_ms);
    }

    #[tokio::test(start_paused = true)]
    async fn database_schedule() {
        assert_preset_schedule(RetryPolicy::database()).await;
    }

    #[tokio::test(start_paused = true)]
    async fn external_api_schedule() {
        assert_preset_schedule(RetryPolicy::external_api()).await;
    }

    #[tokio::test(start_paused = true)]
    async fn payment_schedule() {
        assert_preset_schedule(RetryPolicy::payment()).await;
    }

    #[tokio::test(start_paused = true)]
    async fn same_seed_same_schedule_other_seed_other_schedule() {
        let policy = RetryPolicy::database();
        let schedule = |seed| {
            let policy = policy.clone().with_seed(seed);
            async move {
                gaps_ms(
                    &run(&policy, Idempotence::Idempotent, always_transient)
                        .await
                        .1,
                )
            }
        };
        let first = schedule(7).await;
        assert_eq!(first.len(), 5);
        assert_eq!(first, schedule(7).await);
        assert_ne!(first, schedule(8).await);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_error_stops_after_one_attempt() {
        let (result, starts) = run(
            &RetryPolicy::database().with_seed(1),
            Idempotence::Idempotent,
            |_| Err(TestError::Fatal),
        )
        .await;
        assert_eq!(starts.len(), 1);
        let error = result.unwrap_err();
        assert!(matches!(error, RetryError::Permanent { attempts: 1, .. }));
        assert_eq!(
            error.to_string(),
            "test op failed permanently on attempt 1 (retry policy database): fatal"
        );
        assert_eq!(error.into_last_error(), Some(TestError::Fatal));
    }

    #[tokio::test(start_paused = true)]
    async fn not_idempotent_runs_exactly_once() {
        for idempotence in [Idempotence::NotIdempotent, Idempotence::Keyed("  ".into())] {
            let (result, starts) = run(
                &RetryPolicy::payment().with_seed(1),
                idempotence,
                always_transient,
            )
            .await;
            assert_eq!(starts.len(), 1);
            let error = result.unwrap_err();
            assert!(
                matches!(error, RetryError::NotRetried { attempts: 1, .. }),
                "{error:?}"
            );
            assert!(error.to_string().contains("not idempotent"));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn keyed_and_idempotent_operations_retry() {
        for idempotence in [
            Idempotence::Keyed("payout-7f3a".into()),
            Idempotence::Idempotent,
        ] {
            let (result, starts) = run(
                &RetryPolicy::payment().with_seed(1),
                idempotence,
                always_transient,
            )
            .await;
            assert_eq!(starts.len(), 3);
            assert_eq!(result.unwrap_err().attempts(), 3);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn success_on_the_third_attempt() {
        let (result, starts) = run(
            &RetryPolicy::external_api().with_seed(3),
            Idempotence::Idempotent,
            |attempt| {
                if attempt < 3 {
                    Err(TestError::Transient)
                } else {
                    Ok(attempt)
                }
            },
        )
        .await;
        assert_eq!(result.unwrap(), 3);
        assert_eq!(starts.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_a_minimum_delay() {
        let wished = Duration::from_secs(7);
        let (result, starts) = run(
            &RetryPolicy::external_api().with_seed(5),
            Idempotence::Idempotent,
            |attempt| {
                if attempt == 1 {
                    Err(TestError::TransientAfter(wished))
                } else {
                    Ok(attempt)
                }
            },
        )
        .await;
        assert_eq!(result.unwrap(), 2);
        // The jittered delay is at most 2 s, so the server's 7 s wins exactly.
        assert_eq!(gaps_ms(&starts), [7_000]);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_beyond_the_deadline_gives_up_without_sleeping() {
        let started = Instant::now();
        let (result, starts) = run(
            &RetryPolicy::payment().with_seed(5),
            Idempotence::Idempotent,
            |_| Err(TestError::TransientAfter(Duration::from_secs(300))),
        )
        .await;
        assert_eq!(starts.len(), 1);
        assert_eq!(
            Instant::now(),
            started,
            "it must not sleep towards a retry it will not make"
        );
        let error = result.unwrap_err();
        assert!(
            matches!(
                error,
                RetryError::DeadlineExceeded {
                    attempts: 1,
                    deadline_ms: 120_000,
                    last_error: Some(TestError::TransientAfter(_)),
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error
            .to_string()
            .contains("120000 ms deadline of retry policy payment"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_stops_retries() {
        // Attempts that take 4 s each: by the 20 s deadline there is no room for all six.
        let policy = RetryPolicy {
            deadline_ms: 20_000,
            ..RetryPolicy::database().with_seed(11)
        };
        let started = Instant::now();
        let mut count = 0;
        let result = retry(&policy, Idempotence::Idempotent, "slow op", |_| {
            count += 1;
            async {
                tokio::time::sleep(Duration::from_secs(4)).await;
                Err::<(), _>(TestError::Transient)
            }
        })
        .await;
        let error = result.unwrap_err();
        assert!(
            matches!(error, RetryError::DeadlineExceeded { .. }),
            "{error:?}"
        );
        assert!(count < 6 && error.attempts() == count, "{count} attempts");
        assert!(started.elapsed() <= Duration::from_secs(20));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_attempt_times_out_and_is_retried() {
        let mut starts = Vec::new();
        let result = retry(
            &RetryPolicy::database().with_seed(2),
            Idempotence::Idempotent,
            "hangs once",
            |attempt| {
                starts.push(Instant::now());
                async move {
                    if attempt == 1 {
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, TestError>(attempt)
                }
            },
        )
        .await;
        assert_eq!(result.unwrap(), 2);
        let gap = gaps_ms(&starts)[0];
        assert!(
            (10_000..=10_500).contains(&gap),
            "timeout 10 s + jitter ≤ 500 ms, got {gap} ms"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_non_idempotent_attempt_is_not_retried() {
        let started = Instant::now();
        let mut count = 0;
        let result = retry(
            &RetryPolicy::payment(),
            Idempotence::NotIdempotent,
            "charge",
            |_| {
                count += 1;
                std::future::pending::<Result<(), TestError>>()
            },
        )
        .await;
        assert_eq!(count, 1);
        assert_eq!(started.elapsed(), Duration::from_secs(15));
        let error = result.unwrap_err();
        assert!(matches!(
            error,
            RetryError::AttemptTimedOut {
                attempts: 1,
                attempt_timeout_ms: 15_000,
                ..
            }
        ));
        assert!(error.into_last_error().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn hanging_attempts_end_at_the_deadline() {
        // Six 10 s timeouts plus sleeps exceed 60 s: the last attempt is cut at the deadline.
        let started = Instant::now();
        let result = retry(
            &RetryPolicy::database().with_seed(4),
            Idempotence::Idempotent,
            "stuck",
            |_| std::future::pending::<Result<(), TestError>>(),
        )
        .await;
        assert!(started.elapsed() <= Duration::from_secs(60));
        let error = result.unwrap_err();
        assert!(
            matches!(
                error,
                RetryError::DeadlineExceeded {
                    attempts: 6,
                    last_error: None,
                    ..
                }
            ),
            "{error:?}"
        );
    }

    #[test]
    fn the_retry_future_is_send() {
        // So that callers can `tokio::spawn` it: the shared state is atomics, not Cells.
        fn assert_send<T: Send>(_: &T) {}
        let policy = RetryPolicy::database();
        let future = retry(&policy, Idempotence::Idempotent, "send", |_| async {
            Ok::<_, TestError>(())
        });
        assert_send(&future);
    }

    #[tokio::test(start_paused = true)]
    async fn counters_move() {
        let get = |outcome: AttemptOutcome| {
            crate::telemetry::sample(
                "settle_retry_attempts_total",
                &[("policy", "payment"), ("outcome", outcome.as_str())],
            )
            .unwrap_or(0.0)
        };
        let before = AttemptOutcome::ALL.map(get);
        let policy = RetryPolicy::payment().with_seed(8);
        run(&policy, Idempotence::Idempotent, always_transient)
            .await
            .0
            .unwrap_err();
        run(&policy, Idempotence::Idempotent, Ok).await.0.unwrap();
        let after = AttemptOutcome::ALL.map(get);
        // Other tests may count Payment attempts concurrently, hence "at least".
        assert!(after[0] > before[0], "success");
        assert!(after[1] >= before[1] + 2.0, "retried");
        assert!(after[2] > before[2], "gave up");
    }

    #[test]
    fn http_statuses() {
        for status in [408, 429, 500, 502, 503, 504] {
            assert_eq!(
                classify_http_status(status, None),
                Classification::Retryable { retry_after: None },
                "{status}"
            );
        }
        for status in [200, 301, 400, 401, 403, 404, 409, 422] {
            assert_eq!(
                classify_http_status(status, None),
                Classification::Permanent,
                "{status}"
            );
        }
        // A Retry-After on a permanent status changes nothing.
        assert_eq!(
            classify_http_status(400, Some("5")),
            Classification::Permanent
        );
    }

    #[test]
    fn payment_statuses() {
        for status in [408, 409, 423, 425, 429, 500, 502, 503, 504] {
            assert_eq!(
                classify_payment_http_status(status, None),
                Classification::Retryable { retry_after: None },
                "{status}"
            );
            assert!(!is_payment_refusal(status), "{status}");
        }
        for status in [400, 401, 403, 404, 410, 422] {
            assert_eq!(
                classify_payment_http_status(status, None),
                Classification::Permanent,
                "{status}"
            );
            assert!(is_payment_refusal(status), "{status}");
        }
        // Not an answer at all, so not a refusal either.
        for status in [200, 301, 302] {
            assert!(!is_payment_refusal(status), "{status}");
        }
        // 409 in progress honours the provider's Retry-After.
        let now = Utc.with_ymd_and_hms(2015, 10, 21, 7, 26, 0).unwrap();
        assert_eq!(
            classify_payment_http_status_at(409, Some("2"), now),
            Classification::Retryable {
                retry_after: Some(Duration::from_secs(2))
            }
        );
        // Webhooks keep their own: a 409 there is permanent.
        assert_eq!(classify_http_status(409, None), Classification::Permanent);
    }

    #[test]
    fn retry_after_values() {
        let retry_after = |value| match classify_http_status(503, Some(value)) {
            Classification::Retryable { retry_after } => retry_after,
            Classification::Permanent => panic!("503 is retryable"),
        };
        assert_eq!(retry_after("120"), Some(Duration::from_secs(120)));
        assert_eq!(retry_after(" 0 "), Some(Duration::ZERO));
        for garbage in ["soon", "", "-5", "1.5", "99999999999999999999999"] {
            assert_eq!(retry_after(garbage), None, "{garbage:?}");
        }
        // A date in the past means now.
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        // A date ~90 s ahead of the real clock (whole seconds, so up to 1 s less).
        let ahead =
            (Utc::now() + chrono::Duration::seconds(90)).format("%a, %d %b %Y %H:%M:%S GMT");
        let wait = retry_after(&ahead.to_string()).unwrap();
        assert!(
            wait > Duration::from_secs(88) && wait <= Duration::from_secs(90),
            "{wait:?}"
        );

        let now = Utc.with_ymd_and_hms(2015, 10, 21, 7, 26, 0).unwrap();
        assert_eq!(
            classify_http_status_at(429, Some("Wed, 21 Oct 2015 07:28:00 GMT"), now),
            Classification::Retryable {
                retry_after: Some(Duration::from_secs(120))
            }
        );
    }

    fn client() -> reqwest::Client {
        // No proxy from the environment: the test is about the local socket.
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    #[tokio::test]
    async fn a_refused_connection_is_retryable() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let error = client()
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .unwrap_err();
        assert!(error.is_connect(), "{error:?}");
        assert_eq!(
            classify_reqwest_error(&error),
            Classification::Retryable { retry_after: None }
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out_retryably() {
        // The kernel accepts the connection into the backlog; nobody ever answers.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let error = client()
            .get(format!("http://127.0.0.1:{port}/"))
            .timeout(Duration::from_millis(100))
            .send()
            .await
            .unwrap_err();
        assert!(error.is_timeout(), "{error:?}");
        assert!(error.classify().is_retryable());
        drop(listener);
    }

    #[tokio::test]
    async fn an_invalid_url_is_permanent() {
        let error = client().get("http://[::1").send().await.unwrap_err();
        assert!(error.is_builder(), "{error:?}");
        assert_eq!(classify_reqwest_error(&error), Classification::Permanent);
    }
}
