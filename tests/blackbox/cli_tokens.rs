//! `settle token create | list | revoke` end to end: the token is shown once, alone on the last
//! line; the store, the listing and the audit trail never hold it (the store keeps its SHA-256).

use settle_core::auth::{hash_token, TOKEN_PREFIX};

use crate::support::{Ran, Sandbox};

/// Creates a token and returns it (the last line of stdout).
fn create(sandbox: &Sandbox, name: &str, role: &str) -> (String, Ran) {
    let ran = sandbox.run(&["token", "create", "--name", name, "--role", role]);
    ran.assert_ok();
    let token = ran.stdout.lines().last().expect("a last line").to_string();
    (token, ran)
}

/// Every byte of the SQLite store: the database file and, if present, its WAL.
fn store_bytes(sandbox: &Sandbox) -> Vec<u8> {
    let mut bytes = std::fs::read(sandbox.data_dir().join("settle.db")).expect("the database");
    if let Ok(wal) = std::fs::read(sandbox.data_dir().join("settle.db-wal")) {
        bytes.extend(wal);
    }
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}

/// The table row naming `name`.
fn row<'a>(listing: &'a str, name: &str) -> &'a str {
    listing
        .lines()
        .find(|line| line.split_whitespace().nth(1) == Some(name))
        .unwrap_or_else(|| panic!("no row for {name} in\n{listing}"))
}

#[test]
fn create_prints_the_token_alone_on_the_last_line_and_stores_only_its_hash() {
    let sandbox = Sandbox::new();
    let (token, ran) = create(&sandbox, "finance-desk", "operator");
    assert!(token.starts_with(TOKEN_PREFIX), "{token:?}");
    assert_eq!(token.len(), TOKEN_PREFIX.len() + 64, "{token:?}");
    assert!(
        token.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "the line is the token alone: {token:?}"
    );
    assert!(
        ran.stdout.contains("finance-desk") && ran.stdout.contains("operator"),
        "{}",
        ran.stdout
    );
    assert!(ran.stdout.contains("SHA-256"), "{}", ran.stdout);
    assert_eq!(
        ran.stdout.matches(&token).count(),
        1,
        "shown once: {}",
        ran.stdout
    );
    assert!(!ran.stderr.contains(&token), "{}", ran.stderr);

    let bytes = store_bytes(&sandbox);
    assert!(
        !contains(&bytes, &token),
        "the store must not hold the token"
    );
    assert!(
        !contains(&bytes, &token[TOKEN_PREFIX.len()..]),
        "nor its random part"
    );
    assert!(
        contains(&bytes, &hash_token(&token)),
        "the store holds the token's SHA-256"
    );
}

#[test]
fn list_shows_names_and_roles_but_never_a_token_or_its_hash() {
    let sandbox = Sandbox::new();
    let empty = sandbox.run(&["token", "list"]);
    empty.assert_ok();
    assert!(empty.stdout.contains("no API tokens"), "{}", empty.stdout);

    let (ops, _) = create(&sandbox, "ops", "operator");
    let (admin, _) = create(&sandbox, "root.admin", "admin");
    let listed = sandbox.run(&["token", "list"]);
    listed.assert_ok();
    assert!(
        row(&listed.stdout, "ops").contains("operator"),
        "{}",
        listed.stdout
    );
    assert!(
        row(&listed.stdout, "root.admin").contains("admin"),
        "{}",
        listed.stdout
    );
    assert!(
        row(&listed.stdout, "ops").contains("cli:tester"),
        "{}",
        listed.stdout
    );
    for secret in [&ops, &admin] {
        assert!(
            !listed.stdout.contains(secret.as_str()),
            "{}",
            listed.stdout
        );
        assert!(
            !listed.stdout.contains(&hash_token(secret)),
            "{}",
            listed.stdout
        );
    }
    assert!(!listed.stdout.contains(TOKEN_PREFIX), "{}", listed.stdout);
}

#[test]
fn a_taken_name_a_bad_name_and_a_bad_role_are_refused_with_exit_2() {
    let sandbox = Sandbox::new();
    create(&sandbox, "ops", "viewer");

    let taken = sandbox.run(&["token", "create", "--name", "ops", "--role", "admin"]);
    taken.assert_code(2);
    assert!(taken.stderr.contains("already exists"), "{}", taken.stderr);
    assert!(!taken.stdout.contains(TOKEN_PREFIX), "{}", taken.stdout);

    let role = sandbox.run(&["token", "create", "--name", "other", "--role", "root"]);
    role.assert_code(2);
    assert!(
        role.stderr.contains("viewer, operator, admin"),
        "the message lists the roles: {}",
        role.stderr
    );
    assert!(!role.stdout.contains(TOKEN_PREFIX), "{}", role.stdout);

    let name = sandbox.run(&["token", "create", "--name", "has space", "--role", "viewer"]);
    name.assert_code(2);
    assert!(name.stderr.contains("token name"), "{}", name.stderr);

    let listed = sandbox.run(&["token", "list"]);
    listed.assert_ok();
    assert!(
        row(&listed.stdout, "ops").contains("viewer"),
        "the first token is kept"
    );
    assert!(!listed.stdout.contains("other"), "{}", listed.stdout);
}

#[test]
fn a_revoked_token_is_listed_as_revoked_and_unknown_names_exit_2() {
    let sandbox = Sandbox::new();
    create(&sandbox, "ops", "operator");
    create(&sandbox, "keep", "viewer");
    let before = sandbox.run(&["token", "list"]);
    assert!(
        row(&before.stdout, "ops").contains("┆ no "),
        "{}",
        before.stdout
    );

    let revoked = sandbox.run(&["token", "revoke", "ops"]);
    revoked.assert_ok();
    assert!(revoked.stdout.contains("revoked at"), "{}", revoked.stdout);

    let after = sandbox.run(&["token", "list"]);
    after.assert_ok();
    let ops = row(&after.stdout, "ops");
    assert!(!ops.contains("┆ no "), "{}", after.stdout);
    assert_eq!(
        ops.matches('Z').count(),
        2,
        "created and revoked times: {}",
        after.stdout
    );
    assert!(
        row(&after.stdout, "keep").contains("┆ no "),
        "{}",
        after.stdout
    );

    let again = sandbox.run(&["token", "revoke", "ops"]);
    again.assert_ok();
    assert!(again.stdout.contains("already revoked"), "{}", again.stdout);
    assert_eq!(
        row(&sandbox.run(&["token", "list"]).stdout, "ops"),
        ops,
        "the first revocation time stays"
    );

    let unknown = sandbox.run(&["token", "revoke", "nobody"]);
    unknown.assert_code(2);
    assert!(unknown.stderr.contains("nobody"), "{}", unknown.stderr);
}

#[tokio::test]
async fn the_audit_trail_records_create_and_revoke_without_the_token() {
    let sandbox = Sandbox::new();
    let (token, _) = create(&sandbox, "ops", "admin");
    sandbox.run(&["token", "revoke", "ops"]).assert_ok();

    let store = sandbox.store().await;
    let events = store.audit_events(50, 0).await.unwrap();
    let actions: Vec<_> = events.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["token.revoke", "token.create"]);
    for event in &events {
        assert_eq!(event.actor, "cli:tester");
        assert_eq!(event.subject, "token=ops");
        assert_eq!(event.outcome, "succeeded");
        let text = serde_json::to_string(event).unwrap();
        assert!(!text.contains(&token), "{text}");
        assert!(!text.contains(&token[TOKEN_PREFIX.len()..]), "{text}");
        assert!(!text.contains(&hash_token(&token)), "{text}");
    }
    assert_eq!(events[1].detail["role"], "admin");
}

#[tokio::test]
async fn without_user_variables_the_audit_trail_names_the_os_account() {
    let sandbox = Sandbox::new();
    let mut command = sandbox.command(&["token", "create", "--name", "ops", "--role", "admin"]);
    for name in ["USER", "LOGNAME", "USERNAME"] {
        command.env_remove(name);
    }
    let ran = command.output().expect("run settle");
    assert!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );

    // The test process asks the OS the same way (the password database entry of its uid).
    let expected = match whoami::username() {
        Ok(name) => format!("cli:{name}"),
        Err(_) => "cli:uid:".to_string(),
    };
    let events = sandbox.store().await.audit_events(10, 0).await.unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].action, "token.create");
    assert_ne!(events[0].actor, "cli:unknown");
    assert!(
        events[0].actor.starts_with(&expected),
        "{} is not {expected}",
        events[0].actor
    );
    let listed = sandbox.run(&["token", "list"]);
    assert!(
        row(&listed.stdout, "ops").contains(&expected),
        "{}",
        listed.stdout
    );
}
