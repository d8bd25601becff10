//! The systemd unit: the reference file `ops/systemd/settle.service`, embedded at build time, with
//! its `ExecStart=` line rewritten for the binary and configuration file of an installation. Only
//! that line changes, so what `settle service install` writes is what the repository reviews.

use std::fmt::Write as _;
use std::path::Path;

/// The unit's file name, and the name `systemctl` knows the service by.
pub const UNIT_FILE: &str = "settle.service";
pub const SERVICE_NAME: &str = "settle";

/// The reference unit, as shipped in `ops/systemd/`.
pub const TEMPLATE: &str = include_str!("../../../ops/systemd/settle.service");

/// The paths the reference unit names.
#[cfg(test)]
pub const DEFAULT_BINARY: &str = "/usr/local/bin/settle";
pub const DEFAULT_CONFIG: &str = "/etc/settle/settle.toml";

/// The user the unit runs as (`User=`/`Group=`), and its home, the unit's `StateDirectory=`.
pub const SERVICE_USER: &str = "settle";
pub const STATE_DIRECTORY: &str = "/var/lib/settle";

const EXEC_START: &str = "ExecStart=";

/// A path that cannot go into the unit as it is.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{what} {path:?} must be an absolute path: systemd resolves nothing relative to a directory")]
    NotAbsolute { what: &'static str, path: String },
    #[error("{what} {path:?} is not valid UTF-8, which a unit file must be")]
    NotUtf8 { what: &'static str, path: String },
    #[error(
        "{what} {path:?} contains {character:?}, which systemd would interpret in ExecStart=: \
         choose a plainer path"
    )]
    Unquotable {
        what: &'static str,
        path: String,
        character: char,
    },
}

/// The unit with `ExecStart=BINARY --config CONFIG serve`; the reference paths give the template
/// back unchanged.
pub fn render(binary: &Path, config: &Path) -> Result<String, RenderError> {
    let binary = exec_word("the binary", binary)?;
    let config = exec_word("the configuration file", config)?;
    let mut unit = String::with_capacity(TEMPLATE.len() + binary.len() + config.len());
    for line in TEMPLATE.split_inclusive('\n') {
        if line.starts_with(EXEC_START) {
            let ending = &line[line.trim_end_matches(['\r', '\n']).len()..];
            let _ = write!(unit, "{EXEC_START}{binary} --config {config} serve{ending}");
        } else {
            unit.push_str(line);
        }
    }
    Ok(unit)
}

/// One word of an `ExecStart=` command line: an absolute path, double-quoted when it holds
/// spaces. Characters systemd would expand or unescape (`%` specifiers, `$` variables, quotes,
/// backslashes) and control characters are refused rather than escaped: no real install needs them.
fn exec_word(what: &'static str, path: &Path) -> Result<String, RenderError> {
    let shown = path.display().to_string();
    let text = path.to_str().ok_or_else(|| RenderError::NotUtf8 {
        what,
        path: shown.clone(),
    })?;
    if !path.is_absolute() {
        return Err(RenderError::NotAbsolute { what, path: shown });
    }
    if let Some(character) = text
        .chars()
        .find(|c| matches!(c, '%' | '$' | '"' | '\'' | '\\') || c.is_control())
    {
        return Err(RenderError::Unquotable {
            what,
            path: shown,
            character,
        });
    }
    if text.contains(char::is_whitespace) {
        Ok(format!("\"{text}\""))
    } else {
        Ok(text.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec_start_lines(unit: &str) -> Vec<&str> {
        unit.lines()
            .filter(|line| line.starts_with(EXEC_START))
            .collect()
    }

    #[test]
    fn the_template_runs_the_daemon_from_the_reference_paths() {
        assert_eq!(
            exec_start_lines(TEMPLATE),
            [format!(
                "ExecStart={DEFAULT_BINARY} --config {DEFAULT_CONFIG} serve"
            )]
        );
        assert!(TEMPLATE.contains(&format!("\nUser={SERVICE_USER}\n")));
        assert!(TEMPLATE.contains(&format!(
            "\nEnvironment=SETTLE_DATA_DIR={STATE_DIRECTORY}\n"
        )));
        assert!(TEMPLATE.contains("\nType=notify\n"));
    }

    #[test]
    fn rendering_the_reference_paths_gives_the_template_back() {
        let unit = render(Path::new(DEFAULT_BINARY), Path::new(DEFAULT_CONFIG)).unwrap();
        assert_eq!(unit, TEMPLATE);
    }

    #[test]
    fn rendering_changes_only_the_exec_start_line() {
        let unit = render(
            Path::new("/opt/settle/bin/settle"),
            Path::new("/srv/settle conf/settle.toml"),
        )
        .unwrap();
        assert_eq!(
            exec_start_lines(&unit),
            ["ExecStart=/opt/settle/bin/settle --config \"/srv/settle conf/settle.toml\" serve"]
        );
        let other_lines = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|line| !line.starts_with(EXEC_START))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(other_lines(&unit), other_lines(TEMPLATE));
    }

    #[test]
    fn paths_systemd_would_misread_are_refused() {
        let config = Path::new(DEFAULT_CONFIG);
        for (binary, expected) in [
            ("settle", "absolute"),
            ("./target/release/settle", "absolute"),
            ("/opt/100%/settle", "'%'"),
            ("/opt/$HOME/settle", "'$'"),
            ("/opt/a\"b/settle", "'\"'"),
            ("/opt/a\\b/settle", "'\\\\'"),
            ("/opt/a\nb/settle", "'\\n'"),
        ] {
            let error = render(Path::new(binary), config).unwrap_err().to_string();
            assert!(error.contains(expected), "{binary:?}: {error}");
            assert!(error.starts_with("the binary"), "{error}");
        }
        let error = render(Path::new(DEFAULT_BINARY), Path::new("settle.toml"))
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("the configuration file"), "{error}");
    }
}
