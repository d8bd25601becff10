//! `settle payment record | refund | chargeback | adjust`: the payments service from the command
//! line, idempotent by key (made and printed when not given), answered as status plus JSON.

use anyhow::Result;
use serde_json::{json, Value};
use settle_core::idempotency::{IdempotencyKey, Outcome};
use settle_core::payments::{problems, Operation};

use crate::cli::{AdjustArgs, KeyArgs, PaymentCommand, RecordPaymentArgs, ReturnArgs};
use crate::context::Context;
use crate::exit::{Exit, BAD_INPUT, FAILED, REFUSED};

pub async fn run(context: Context, command: PaymentCommand) -> Result<()> {
    let (operation, body, key) = match command {
        PaymentCommand::Record(args) => payment(args),
        PaymentCommand::Refund(args) => returned(args, true),
        PaymentCommand::Chargeback(args) => returned(args, false),
        PaymentCommand::Adjust(args) => adjustment(args),
    };
    let generated = key.idempotency_key.is_none();
    let key_text = key
        .idempotency_key
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let key = IdempotencyKey::parse(
        Some(&key_text),
        context.settings.idempotency.require_uuid_v4,
    )
    .map_err(|e| Exit::bad_input(e.to_string()))?;
    let store = context.open_store().await?;
    // Expired keys count as new anyway; reaping keeps the table small.
    store.idempotency_reap(context.clock.now()).await?;
    let service = context.payment_service(store);
    let answer = service
        .execute(&context.actor, &key, operation, &body)
        .await?;

    if generated {
        eprintln!("idempotency key {key_text} (repeat the command with --idempotency-key {key_text} to retry safely)");
    }
    let status = answer.response.status;
    eprintln!("{status} (idempotency: {})", answer.outcome.as_str());
    println!("{}", serde_json::to_string_pretty(&answer.response.body)?);
    if (200..300).contains(&status) {
        return Ok(());
    }
    let detail = answer.response.body["detail"]
        .as_str()
        .unwrap_or("refused")
        .to_string();
    let code = match (answer.outcome, status) {
        (Outcome::Conflict, _) => {
            let wait = answer.retry_after_seconds.unwrap_or(1);
            return Err(Exit {
                code: REFUSED,
                message: format!("{detail} (retry after {wait} s)"),
            }
            .into());
        }
        (Outcome::Mismatch, _) => BAD_INPUT,
        _ if answer.response.body["type"] == problems::INVALID_REQUEST => BAD_INPUT,
        (_, 400..=499) => REFUSED,
        _ => FAILED,
    };
    Err(Exit {
        code,
        message: detail,
    }
    .into())
}

fn payment(args: RecordPaymentArgs) -> (Operation, Value, KeyArgs) {
    let mut body = json!({
        "merchant_id": args.merchant,
        "amount": args.amount,
        "currency": args.currency,
        "method": args.method,
        "external_ref": args.external_ref,
        "occurred_at": args.occurred_at,
    });
    if let Some(status) = args.status {
        body["status"] = json!(status);
    }
    (Operation::Payment, body, args.key)
}

fn returned(args: ReturnArgs, refund: bool) -> (Operation, Value, KeyArgs) {
    let mut body = json!({
        "amount": args.amount,
        "external_ref": args.external_ref,
        "occurred_at": args.occurred_at,
    });
    if let Some(reason) = args.reason {
        body["reason"] = json!(reason);
    }
    let operation = if refund {
        Operation::Refund(args.payment)
    } else {
        Operation::Chargeback(args.payment)
    };
    (operation, body, args.key)
}

fn adjustment(args: AdjustArgs) -> (Operation, Value, KeyArgs) {
    let body = json!({
        "merchant_id": args.merchant,
        "amount": args.amount,
        "currency": args.currency,
        "external_ref": args.external_ref,
        "occurred_at": args.occurred_at,
        "reason": args.reason,
    });
    (Operation::Adjustment, body, args.key)
}
