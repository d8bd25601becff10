//! The service integration: the reference systemd unit `ops/systemd/settle.service` passes
//! `systemd-analyze verify`, and `settle service install` writes that same unit with only its
//! `ExecStart=` paths changed. `systemd-analyze` (Debian package `systemd`, installed by
//! scripts/test.sh) needs no running systemd. Nothing here enables or starts anything: every
//! install is `--no-start` into a temporary directory.

use std::path::Path;
use std::process::Command;

use crate::support::{settle_bin, Sandbox};

/// The reference unit, as the repository ships it.
const REFERENCE_UNIT: &str = include_str!("../../ops/systemd/settle.service");
const REFERENCE_EXEC_START: &str =
    "ExecStart=/usr/local/bin/settle --config /etc/settle/settle.toml serve";

/// The reference unit with another `ExecStart=` line.
fn with_exec_start(exec_start: &str) -> String {
    assert_eq!(
        REFERENCE_UNIT.matches(REFERENCE_EXEC_START).count(),
        1,
        "the reference unit has one ExecStart= line, {REFERENCE_EXEC_START:?}"
    );
    REFERENCE_UNIT.replace(REFERENCE_EXEC_START, exec_start)
}

/// Runs `systemd-analyze verify --man=no` on `unit` (a file named settle.service). Any complaint
/// about the unit fails, since systemd-analyze reports misspelt keys and unparsable values on
/// stderr yet exits 0; only a warning that the user `settle` does not exist on this machine is
/// tolerated, as are lines about the host's own units.
fn systemd_analyze_verify(unit: &Path) -> Result<(), String> {
    let output = match Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
    {
        Ok(output) => output,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => panic!(
            "systemd-analyze is missing: install the Debian package systemd \
             (scripts/test.sh does), then run the tests again"
        ),
        Err(error) => panic!("cannot run systemd-analyze: {error}"),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let unit_name = unit.file_name().unwrap().to_string_lossy().into_owned();
    let problems: Vec<&str> = text
        .lines()
        .filter(|line| line.contains(&unit_name) && !about_the_missing_user(line))
        .collect();
    if output.status.success() && problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "systemd-analyze verify {} ({}):\n{text}",
            unit.display(),
            output.status
        ))
    }
}

/// systemd versions that resolve `User=` while verifying may say the user does not exist here.
fn about_the_missing_user(line: &str) -> bool {
    let line = line.to_lowercase();
    (line.contains("user") || line.contains("group"))
        && line.contains("settle")
        && [
            "not found",
            "no such",
            "does not exist",
            "unknown",
            "failed to resolve",
        ]
        .iter()
        .any(|phrase| line.contains(phrase))
}

/// Writes `text` as `settle.service` in a fresh directory.
fn unit_file(sandbox: &Sandbox, text: &str) -> std::path::PathBuf {
    let dir = sandbox.path().join("units");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("settle.service");
    std::fs::write(&path, text).unwrap();
    path
}

fn real_exec_start(config: &str) -> String {
    format!(
        "ExecStart={} --config {config} serve",
        settle_bin().display()
    )
}

#[test]
fn the_reference_unit_passes_systemd_analyze_verify() {
    let sandbox = Sandbox::new();
    // systemd-analyze checks that the ExecStart= binary exists: point it at the one just built.
    let unit = unit_file(
        &sandbox,
        &with_exec_start(&real_exec_start("/etc/settle/settle.toml")),
    );
    if let Err(report) = systemd_analyze_verify(&unit) {
        panic!("{report}");
    }
}

#[test]
fn the_verify_check_catches_mistakes_that_systemd_analyze_only_warns_about() {
    let sandbox = Sandbox::new();
    let valid = with_exec_start(&real_exec_start("/etc/settle/settle.toml"));
    for (mistake, from, to) in [
        ("a misspelt key", "\nRestartSec=", "\nRestartSek="),
        ("a bad value", "\nType=notify\n", "\nType=notfy\n"),
        ("a misspelt section", "\n[Service]\n", "\n[Servic]\n"),
    ] {
        assert!(valid.contains(from), "{from:?}");
        let unit = unit_file(&sandbox, &valid.replacen(from, to, 1));
        assert!(
            systemd_analyze_verify(&unit).is_err(),
            "{mistake} went unnoticed"
        );
    }
    let missing_binary =
        with_exec_start("ExecStart=/nonexistent/settle --config /etc/settle/settle.toml serve");
    let unit = unit_file(&sandbox, &missing_binary);
    assert!(systemd_analyze_verify(&unit).is_err());
}

#[test]
fn service_install_writes_the_reference_unit_for_the_reference_paths() {
    let sandbox = Sandbox::new();
    let unit_dir = sandbox.path().join("system");
    let ran = sandbox.run(&[
        "service",
        "install",
        "--unit-dir",
        unit_dir.to_str().unwrap(),
        "--binary",
        "/usr/local/bin/settle",
        "--config",
        "/etc/settle/settle.toml",
        "--no-start",
    ]);
    ran.assert_ok();
    let written = std::fs::read_to_string(unit_dir.join("settle.service")).unwrap();
    assert_eq!(written, REFERENCE_UNIT);
    assert!(ran.stdout.contains("wrote"), "{}", ran.stdout);
    assert!(
        ran.stdout.contains("systemctl enable --now settle"),
        "--no-start says what to run: {}",
        ran.stdout
    );
    // Units are world-readable (they hold no secret) and nothing else is left in the directory.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(unit_dir.join("settle.service"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }
    let entries: Vec<_> = std::fs::read_dir(&unit_dir).unwrap().collect();
    assert_eq!(
        entries.len(),
        1,
        "only settle.service in {}",
        unit_dir.display()
    );
}

#[test]
fn service_install_substitutes_only_the_paths_and_the_result_passes_verify() {
    let sandbox = Sandbox::new();
    let unit_dir = sandbox.path().join("system");
    let config = sandbox.write("settle.toml", "");
    let binary = settle_bin();
    sandbox
        .run(&[
            "service",
            "install",
            "--unit-dir",
            unit_dir.to_str().unwrap(),
            "--binary",
            binary.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--no-start",
        ])
        .assert_ok();
    let path = unit_dir.join("settle.service");
    let written = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        written,
        with_exec_start(&real_exec_start(config.to_str().unwrap()))
    );
    if let Err(report) = systemd_analyze_verify(&path) {
        panic!("{report}");
    }
}

#[test]
fn service_install_makes_relative_paths_absolute_and_refuses_what_systemd_would_misread() {
    let sandbox = Sandbox::new();
    let unit_dir = sandbox.path().join("system");
    let unit_dir = unit_dir.to_str().unwrap();
    // The sandbox is the working directory: a relative config is taken from there.
    sandbox
        .run(&[
            "service",
            "install",
            "--unit-dir",
            unit_dir,
            "--binary",
            "/usr/local/bin/settle",
            "--config",
            "conf/settle.toml",
            "--no-start",
        ])
        .assert_ok();
    let written = std::fs::read_to_string(sandbox.path().join("system/settle.service")).unwrap();
    let expected_config = std::path::absolute(sandbox.path().join("conf/settle.toml")).unwrap();
    assert!(
        written.contains(&format!(
            "\nExecStart=/usr/local/bin/settle --config {} serve\n",
            expected_config.display()
        )),
        "{written}"
    );

    let other_dir = sandbox.path().join("other");
    let ran = sandbox.run(&[
        "service",
        "install",
        "--unit-dir",
        other_dir.to_str().unwrap(),
        "--binary",
        "/opt/100%/settle",
        "--no-start",
    ]);
    ran.assert_code(2);
    assert!(ran.stderr.contains("'%'"), "{}", ran.stderr);
    assert!(
        !other_dir.join("settle.service").exists(),
        "nothing is written"
    );
}
