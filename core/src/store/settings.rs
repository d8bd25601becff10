//! `[store]`: which store adapter holds the data and where, with the module it configures; `config`
//! reads and validates it from the file and the environment.

use std::fmt;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// `sqlite` (the default) or `mongodb`.
    pub kind: StoreKind,
    /// The SQLite file; relative paths are relative to the data directory.
    pub path: Option<PathBuf>,
    /// The MongoDB connection string. From the file it never holds a password (that comes from
    /// `SETTLE_MONGO_PASSWORD` or the systemd credential `mongo-password`).
    pub uri: Option<String>,
    /// The MongoDB database (default `settle`).
    pub database: String,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            kind: StoreKind::Sqlite,
            path: None,
            uri: None,
            database: DEFAULT_MONGO_DATABASE.into(),
        }
    }
}

/// The MongoDB database used unless `[store] database` or `--mongo-db` names another.
pub const DEFAULT_MONGO_DATABASE: &str = "settle";

/// Which store adapter holds the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoreKind {
    /// The embedded SQLite file: one machine, zero setup.
    #[default]
    Sqlite,
    /// A MongoDB server, replica set or cluster shared by several processes or machines.
    Mongodb,
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Mongodb => "mongodb",
        }
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for StoreKind {
    type Err = String;

    fn from_str(text: &str) -> Result<StoreKind, String> {
        match text {
            "sqlite" => Ok(StoreKind::Sqlite),
            "mongodb" => Ok(StoreKind::Mongodb),
            other => Err(format!(
                "unknown store {other:?} (expected \"sqlite\" or \"mongodb\")"
            )),
        }
    }
}

/// Checks a `mongodb://` or `mongodb+srv://` connection string's shape (not its reachability).
/// Messages never repeat the string: it may hold a password.
pub fn check_mongo_uri(uri: &str) -> Result<(), String> {
    let Some(rest) = uri
        .strip_prefix("mongodb://")
        .or_else(|| uri.strip_prefix("mongodb+srv://"))
    else {
        return Err("expected a mongodb:// or mongodb+srv:// URI".into());
    };
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let hosts = authority.rsplit('@').next().unwrap_or("");
    if hosts.is_empty() {
        return Err("the URI names no host".into());
    }
    Ok(())
}

/// True when a MongoDB URI carries a (non-empty) password in its userinfo: `mongodb://user:pw@…`.
pub fn mongo_uri_has_password(uri: &str) -> bool {
    let rest = uri.split_once("://").map(|(_, rest)| rest).unwrap_or(uri);
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    match authority.rsplit_once('@') {
        Some((userinfo, _)) => userinfo
            .split_once(':')
            .is_some_and(|(_, password)| !password.is_empty()),
        None => false,
    }
}

/// A MongoDB database name: 1 to 63 bytes, none of `/\. "$` nor NUL.
pub fn check_mongo_database(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the database name is empty".into());
    }
    if name.len() > 63 {
        return Err(format!("{name:?} is longer than 63 bytes"));
    }
    if let Some(bad) = name.chars().find(|c| "/\\. \"$\0".contains(*c)) {
        return Err(format!(
            "{name:?} contains {bad:?}; a database name cannot contain / \\ . space \" $"
        ));
    }
    Ok(())
}
