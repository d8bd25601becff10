//! Linux: the daemon as a systemd service. `install` writes the rendered unit into the unit
//! directory (atomically), creates the `settle` system user, and runs `systemctl daemon-reload`
//! and `systemctl enable --now settle`; `uninstall` undoes that; `status` is `systemctl status`.
//!
//! Without systemd (systemctl missing, or a machine or container not booted with systemd as
//! init) `install` still writes the unit, prints the commands to run later, and succeeds with a
//! warning: the file is the useful part, e.g. when building an image.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _, Result};

use super::unit::{self, SERVICE_NAME, SERVICE_USER, STATE_DIRECTORY, UNIT_FILE};
use super::InstallRequest;
use crate::exit::Exit;

/// Where credentials go, as the reference unit's commented `LoadCredential=` lines say.
const CREDENTIALS_DIR: &str = "/etc/settle/credentials";

/// The `systemd-sysusers` line for the unit's static user: a system user and group `settle`,
/// home the state directory, no login shell.
fn sysusers_line() -> String {
    format!("u {SERVICE_USER} - \"Settle daemon\" {STATE_DIRECTORY}")
}

pub fn install(request: &InstallRequest) -> Result<()> {
    let config = request
        .config
        .clone()
        .unwrap_or_else(|| unit::DEFAULT_CONFIG.into());
    let text = unit::render(&request.binary, &config)
        .map_err(|error| Exit::bad_input(error.to_string()))?;
    warn_about_paths(&request.binary, &config);
    if let Some(data_dir) = request.data_dir.as_deref() {
        if data_dir != Path::new(STATE_DIRECTORY) {
            eprintln!(
                "warning: the service keeps its store in {STATE_DIRECTORY} (the unit's \
                 StateDirectory=), not in {}",
                data_dir.display()
            );
        }
    }

    let path = request.unit_dir.join(UNIT_FILE);
    write_unit(&path, &text)?;
    println!("wrote {}", path.display());

    if !request.start {
        println!("not started (--no-start); to run it:");
        print_next_steps();
        return Ok(());
    }
    if let Err(reason) = systemd_available() {
        eprintln!("warning: {reason}: the unit is written but not enabled; to run it:");
        print_next_steps();
        return Ok(());
    }
    create_user()?;
    systemctl(&["daemon-reload"])?;
    systemctl(&["enable", "--now", SERVICE_NAME])?;
    println!(
        "{SERVICE_NAME} is enabled and started; `settle service status` shows how it is doing"
    );
    println!(
        "secrets: put them in {CREDENTIALS_DIR}/ and enable their LoadCredential= lines in {}",
        path.display()
    );
    Ok(())
}

pub fn uninstall(unit_dir: &Path) -> Result<()> {
    let path = unit_dir.join(UNIT_FILE);
    let systemd = systemd_available();
    if systemd.is_ok() {
        disable()?;
    }
    match std::fs::remove_file(&path) {
        Ok(()) => println!("removed {}", path.display()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            println!("{} was not there", path.display())
        }
        Err(error) => return Err(io_error(error, format!("cannot remove {}", path.display()))),
    }
    match systemd {
        Ok(()) => systemctl(&["daemon-reload"])?,
        Err(reason) => eprintln!("warning: {reason}: nothing was disabled or reloaded"),
    }
    println!(
        "the data in {STATE_DIRECTORY} and the user {SERVICE_USER} are kept; remove them by hand if \
         they are no longer needed"
    );
    Ok(())
}

/// `systemctl status settle --no-pager`, its output and its exit status (3: not running, 4: no
/// such unit).
pub fn status() -> Result<()> {
    let status = Command::new("systemctl")
        .args(["status", SERVICE_NAME, "--no-pager"])
        .status()
        .map_err(|error| systemctl_error(error, "status"))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(Exit {
            code: u8::try_from(code).unwrap_or(crate::exit::FAILED),
            message: format!("`systemctl status {SERVICE_NAME}` exited with status {code}"),
        }
        .into()),
        None => bail!("`systemctl status {SERVICE_NAME}` was killed by a signal"),
    }
}

pub fn run(_: super::Serve) -> Result<()> {
    Err(Exit::bad_input(
        "`settle service run` is how the Windows service manager starts Settle; on Linux systemd \
         runs `settle serve` (see `settle service install`)",
    ))
}

/// Writes the unit so that systemd never reads half of it: a temporary file in the same
/// directory, readable by everyone like every unit (it holds no secret), renamed over the target.
fn write_unit(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;

    let dir = path.parent().context("the unit path has no directory")?;
    std::fs::create_dir_all(dir)
        .map_err(|error| io_error(error, format!("cannot create {}", dir.display())))?;
    let mut temporary = tempfile::Builder::new()
        .prefix(".settle.service.")
        .tempfile_in(dir)
        .map_err(|error| io_error(error, format!("cannot write in {}", dir.display())))?;
    temporary.write_all(text.as_bytes())?;
    temporary
        .as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    temporary.as_file().sync_all()?;
    temporary
        .persist(path)
        .map_err(|error| io_error(error.error, format!("cannot write {}", path.display())))?;
    Ok(())
}

/// An I/O error with what was being done, and how to get the permission when that was missing.
fn io_error(error: std::io::Error, doing: String) -> anyhow::Error {
    let hint = if error.kind() == std::io::ErrorKind::PermissionDenied {
        " (run as root, e.g. with sudo, or choose another --unit-dir)"
    } else {
        ""
    };
    anyhow::Error::new(error).context(format!("{doing}{hint}"))
}

/// Warnings, not errors: the paths are right for the machine the service will run on, which
/// need not be this one.
fn warn_about_paths(binary: &Path, config: &Path) {
    if !is_executable(binary) {
        eprintln!(
            "warning: {} is not an executable file here; the service will not start until it is",
            binary.display()
        );
    }
    if !config.is_file() {
        eprintln!(
            "warning: {} does not exist yet; the daemon refuses to start without it",
            config.display()
        );
    }
    for (what, path) in [("the binary", binary), ("the configuration", config)] {
        if ["/home", "/root", "/run/user"]
            .iter()
            .any(|hidden| path.starts_with(hidden))
        {
            eprintln!(
                "warning: {what} {} is in a home directory, which the unit hides (ProtectHome=yes); \
                 install it under /usr/local or /etc instead",
                path.display()
            );
        }
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The commands `install` would have run.
fn print_next_steps() {
    println!("  systemd-sysusers --inline '{}'", sysusers_line());
    println!("  systemctl daemon-reload");
    println!("  systemctl enable --now {SERVICE_NAME}");
    println!(
        "secrets go in {CREDENTIALS_DIR}/ (see the unit's LoadCredential= lines); `settle service \
         status` shows how it is doing"
    );
}

/// Whether systemd manages this machine, as `sd_booted()` decides it: `/run/systemd/system`
/// exists only when systemd is the init system. Else the reason, for a warning.
fn systemd_available() -> Result<(), String> {
    if !Path::new("/run/systemd/system").is_dir() {
        return Err("this system is not running systemd".into());
    }
    match Command::new("systemctl")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
    {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            Err("systemctl is not installed".into())
        }
        Err(error) => Err(format!("cannot run systemctl: {error}")),
    }
}

/// Creates the unit's `User=` (a system user and group) unless it exists; idempotent.
fn create_user() -> Result<()> {
    let status = Command::new("systemd-sysusers")
        .args(["--inline", &sysusers_line()])
        .status()
        .with_context(|| {
            format!("cannot run systemd-sysusers to create the user {SERVICE_USER}")
        })?;
    if !status.success() {
        bail!("systemd-sysusers could not create the user {SERVICE_USER} ({status})");
    }
    Ok(())
}

/// `systemctl disable --now settle`; a unit systemd does not know is nothing to disable.
fn disable() -> Result<()> {
    let output = Command::new("systemctl")
        .args(["disable", "--now", SERVICE_NAME])
        .stdin(Stdio::null())
        .output()
        .map_err(|error| systemctl_error(error, "disable"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if output.status.success() {
        eprint!("{stderr}");
        println!("stopped and disabled {SERVICE_NAME}");
        return Ok(());
    }
    let unknown_unit = ["not loaded", "does not exist", "not found"]
        .iter()
        .any(|phrase| stderr.contains(phrase));
    if unknown_unit {
        println!("{SERVICE_NAME} was not enabled");
        return Ok(());
    }
    bail!(
        "`systemctl disable --now {SERVICE_NAME}` failed ({}): {}",
        output.status,
        stderr.trim()
    )
}

/// Runs `systemctl ARGS`, its output going to ours; a failure is an error.
fn systemctl(args: &[&str]) -> Result<()> {
    let shown = args.join(" ");
    let status = Command::new("systemctl")
        .args(args)
        .stdin(Stdio::null())
        .status()
        .map_err(|error| systemctl_error(error, &shown))?;
    if !status.success() {
        bail!("`systemctl {shown}` failed ({status})");
    }
    Ok(())
}

fn systemctl_error(error: std::io::Error, what: &str) -> anyhow::Error {
    if error.kind() == std::io::ErrorKind::NotFound {
        anyhow::anyhow!("systemctl is not installed: cannot run `systemctl {what}`")
    } else {
        anyhow::Error::new(error).context(format!("cannot run `systemctl {what}`"))
    }
}
