//! The stable `type` URIs of the API's problems (RFC 9457), defined once: the daemon answers with
//! them and the client recognises them, so the two cannot disagree on a name.

pub const UNAUTHORIZED: &str = "urn:settle:problem:unauthorized";
pub const FORBIDDEN: &str = "urn:settle:problem:forbidden";
pub const NOT_FOUND: &str = "urn:settle:problem:not-found";
pub const METHOD_NOT_ALLOWED: &str = "urn:settle:problem:method-not-allowed";
pub const INVALID_REQUEST: &str = "urn:settle:problem:invalid-request";
pub const MALFORMED_JSON: &str = "urn:settle:problem:malformed-json";
pub const UNSUPPORTED_MEDIA_TYPE: &str = "urn:settle:problem:unsupported-media-type";
pub const BODY_TOO_LARGE: &str = "urn:settle:problem:body-too-large";
pub const IDEMPOTENCY_KEY_INVALID: &str = "urn:settle:problem:idempotency-key-invalid";
pub const DATE_STILL_OPEN: &str = "urn:settle:problem:date-still-open";
pub const ALREADY_SETTLED: &str = "urn:settle:problem:already-settled";
pub const ALREADY_RUNNING: &str = "urn:settle:problem:already-running";
pub const REVISION_FAILED: &str = "urn:settle:problem:revision-failed";
pub const NOTHING_TO_DO: &str = "urn:settle:problem:nothing-to-do";
pub const REVISION_MOVED: &str = "urn:settle:problem:revision-moved";
pub const APPROVAL_REFUSED: &str = "urn:settle:problem:approval-refused";
pub const CONFLICT: &str = "urn:settle:problem:conflict";
pub const BAD_SIGNATURE: &str = "urn:settle:problem:bad-signature";
pub const REQUEST_TIMEOUT: &str = "urn:settle:problem:request-timeout";
pub const UNAVAILABLE: &str = "urn:settle:problem:unavailable";
pub const INTERNAL: &str = "urn:settle:problem:internal";
pub const IDEMPOTENCY_CONFLICT: &str = "urn:settle:problem:idempotency-conflict";
pub const IDEMPOTENCY_KEY_REUSED: &str = "urn:settle:problem:idempotency-key-reused";
pub const PAYMENT_NOT_FOUND: &str = "urn:settle:problem:payment-not-found";
pub const PAYMENT_NOT_REFUNDABLE: &str = "urn:settle:problem:payment-not-refundable";
pub const REFUND_EXCEEDS_PAYMENT: &str = "urn:settle:problem:refund-exceeds-payment";
pub const EXTERNAL_REF_CONFLICT: &str = "urn:settle:problem:external-ref-conflict";
pub const STORE_UNAVAILABLE: &str = "urn:settle:problem:store-unavailable";
pub const RETURNS_IN_FLIGHT: &str = "urn:settle:problem:returns-in-flight";

/// Every problem type, for documents and tests.
pub const ALL: &[&str] = &[
    UNAUTHORIZED,
    FORBIDDEN,
    NOT_FOUND,
    METHOD_NOT_ALLOWED,
    INVALID_REQUEST,
    MALFORMED_JSON,
    UNSUPPORTED_MEDIA_TYPE,
    BODY_TOO_LARGE,
    IDEMPOTENCY_KEY_INVALID,
    DATE_STILL_OPEN,
    ALREADY_SETTLED,
    ALREADY_RUNNING,
    REVISION_FAILED,
    NOTHING_TO_DO,
    REVISION_MOVED,
    APPROVAL_REFUSED,
    CONFLICT,
    BAD_SIGNATURE,
    REQUEST_TIMEOUT,
    UNAVAILABLE,
    INTERNAL,
    IDEMPOTENCY_CONFLICT,
    IDEMPOTENCY_KEY_REUSED,
    PAYMENT_NOT_FOUND,
    PAYMENT_NOT_REFUNDABLE,
    REFUND_EXCEEDS_PAYMENT,
    EXTERNAL_REF_CONFLICT,
    STORE_UNAVAILABLE,
    RETURNS_IN_FLIGHT,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_types_are_distinct_settle_urns() {
        let mut seen = std::collections::BTreeSet::new();
        for problem_type in ALL {
            assert!(
                problem_type.starts_with("urn:settle:problem:"),
                "{problem_type}"
            );
            assert!(seen.insert(*problem_type), "{problem_type} is listed twice");
        }
    }
}
