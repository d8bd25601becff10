//! Real OS keyrings for tests: a test re-runs itself (its test binary, filtered to that test alone)
//! inside `keyctl session -` or a `dbus-run-session` with an unlocked gnome-keyring-daemon.
//! Shared by the credentials unit tests and the console's integration tests.

use std::path::Path;
use std::process::Command;

/// Set in the re-run child to the session it runs in.
pub const SESSION_VARIABLE: &str = "SETTLE_CONSOLE_TEST_KEYRING_SESSION";
/// Set in a gnome-keyring session to its temporary home, where the keyring files are.
pub const HOME_VARIABLE: &str = "SETTLE_CONSOLE_TEST_HOME";

#[derive(Clone, Copy)]
pub enum Session {
    /// `keyctl session -`, with no D-Bus session bus.
    Keyutils,
    /// `dbus-run-session` with gnome-keyring-daemon unlocked, in a temporary home.
    GnomeKeyring,
    /// A D-Bus address nobody listens on.
    NoDbus,
}

impl Session {
    fn marker(self) -> &'static str {
        match self {
            Session::Keyutils => "keyutils",
            Session::GnomeKeyring => "gnome-keyring",
            Session::NoDbus => "no-dbus",
        }
    }
}

/// `program` to be run inside `session`, with `home` as its home (gnome-keyring keeps its files
/// there). Add the program's arguments to the returned command.
pub fn wrap(session: Session, program: &Path, home: &Path) -> Command {
    match session {
        Session::Keyutils => {
            let mut command = Command::new("keyctl");
            command
                .args(["session", "-"])
                .arg(program)
                .env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus");
            command
        }
        Session::GnomeKeyring => {
            let runtime_dir = home.join("run");
            std::fs::create_dir_all(&runtime_dir).expect("a runtime folder");
            std::fs::set_permissions(
                &runtime_dir,
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            )
            .expect("a private runtime folder");
            let mut command = Command::new("dbus-run-session");
            // gnome-keyring-daemon reads the login keyring's password on stdin and stays until
            // the session bus goes away; its environment lines go to stderr.
            command
                .args(["--", "sh", "-c"])
                .arg(
                    "printf %s test-password | gnome-keyring-daemon --unlock \
                     --components=secrets 1>&2 && exec \"$@\"",
                )
                .arg("sh")
                .arg(program)
                .env("HOME", home)
                .env("XDG_DATA_HOME", home.join("data"))
                .env("XDG_CONFIG_HOME", home.join("config"))
                .env("XDG_RUNTIME_DIR", &runtime_dir)
                .env(HOME_VARIABLE, home);
            command
        }
        Session::NoDbus => {
            let mut command = Command::new(program);
            command.env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus");
            command
        }
    }
}

/// True in the re-run child inside `session`.
pub fn is_inside(session: Session) -> bool {
    std::env::var(SESSION_VARIABLE).as_deref() == Ok(session.marker())
}

/// Runs `body` when this process is the child inside `session`; otherwise re-runs the test
/// binary, filtered to `test_path` (e.g. `credentials::tests::NAME`) alone, inside `session` and
/// asserts that it ran and passed. Fails, never skips, when the keyring programs are missing.
pub fn inside(session: Session, test_path: &str, body: impl FnOnce()) {
    if is_inside(session) {
        body();
        return;
    }
    let test_binary = std::env::current_exe().expect("the test binary's path");
    let home = tempfile::tempdir().expect("a temporary home");
    let mut command = wrap(session, &test_binary, home.path());
    command
        .args([test_path, "--exact", "--nocapture", "--test-threads=1"])
        .env(SESSION_VARIABLE, session.marker());
    let program = format!("{:?}", command.get_program());
    let output = command.output().unwrap_or_else(|error| {
        panic!(
            "cannot run {program} ({error}): the keyring tests need keyutils, dbus, \
             gnome-keyring and libsecret-tools; run ./scripts/test.sh, which installs them"
        )
    });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{test_path} failed inside its {} session ({}); if a keyring program is missing, run \
         ./scripts/test.sh, which installs keyutils, dbus, gnome-keyring and \
         libsecret-tools.\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        session.marker(),
        output.status,
    );
}
