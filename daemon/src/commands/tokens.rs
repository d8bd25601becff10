//! `settle token create | list | revoke`: API tokens, audited. A token is shown once, when it is
//! created, alone on the last line of stdout (so `| tail -1` captures it); the store, the audit
//! trail and every later listing know only its name, role and SHA-256 (the listing not even that).

use anyhow::Result;
use chrono::{DateTime, Utc};
use serde_json::json;
use settle_core::auth;
use settle_core::model::{AuditAction, AuditEvent, AuditOutcome, Role};
use settle_core::store::{SharedStore, StoreError};

use crate::cli::TokenCommand;
use crate::context::Context;
use crate::exit::Exit;
use crate::output;

pub async fn run(context: Context, command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Create { name, role } => create(context, name, role).await,
        TokenCommand::List => list(context).await,
        TokenCommand::Revoke { name } => revoke(context, name).await,
    }
}

async fn create(context: Context, name: String, role: String) -> Result<()> {
    auth::validate_token_name(&name).map_err(Exit::bad_input)?;
    let role = role
        .parse::<Role>()
        .map_err(|e| Exit::bad_input(format!("--role: {e}")))?;
    let store = context.open_store().await?;
    let issued = auth::issue(&name, role, &context.actor, context.clock.now());
    match store.create_token(&issued.token).await {
        Ok(()) => {}
        Err(StoreError::NameTaken(_)) => {
            return Err(Exit::bad_input(format!(
                "a token named {name:?} already exists (revoked tokens keep their names): choose another name"
            )));
        }
        Err(error) => return Err(error.into()),
    }
    audit(
        &context,
        &store,
        AuditAction::TokenCreate,
        &name,
        json!({ "token_id": issued.token.id, "role": role.as_str() }),
    )
    .await?;
    println!("token {name:?} created with role {role}.");
    println!(
        "It is shown once, below; the store keeps only its SHA-256. Callers send it as \
         `Authorization: Bearer <token>`."
    );
    println!("{}", issued.secret.expose());
    Ok(())
}

async fn list(context: Context) -> Result<()> {
    let store = context.open_store().await?;
    let tokens = store.tokens().await?;
    if tokens.is_empty() {
        println!("no API tokens (create one with `settle token create --name N --role R`)");
    } else {
        println!("{}", output::tokens_table(&tokens));
    }
    Ok(())
}

async fn revoke(context: Context, name: String) -> Result<()> {
    let store = context.open_store().await?;
    // Stored instants have millisecond precision: compare what was stored with what was asked.
    let now = to_millis(context.clock.now());
    let Some(token) = store.revoke_token(&name, now).await? else {
        return Err(Exit::bad_input(format!("there is no token named {name:?}")));
    };
    let revoked_at = token.revoked_at.unwrap_or(now);
    let already = revoked_at != now;
    audit(
        &context,
        &store,
        AuditAction::TokenRevoke,
        &name,
        json!({
            "token_id": token.id,
            "role": token.role.as_str(),
            "revoked_at": settle_core::time::format_utc(revoked_at),
            "already_revoked": already,
        }),
    )
    .await?;
    let revoked_at = settle_core::time::format_utc(revoked_at);
    if already {
        println!("token {name:?} was already revoked at {revoked_at}");
    } else {
        println!("token {name:?} revoked at {revoked_at}: it no longer authenticates");
    }
    Ok(())
}

fn to_millis(instant: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(instant.timestamp_millis()).unwrap_or(instant)
}

async fn audit(
    context: &Context,
    store: &SharedStore,
    action: AuditAction,
    name: &str,
    detail: serde_json::Value,
) -> Result<()> {
    let event = AuditEvent::new(
        context.clock.now(),
        &context.actor,
        action,
        format!("token={name}"),
        AuditOutcome::Succeeded,
        detail,
    );
    store.record_audit(&event).await?;
    Ok(())
}
