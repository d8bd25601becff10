//! `settle service install|uninstall|status`: runs `settle serve` under the platform's service
//! manager (systemd on Linux, the Service Control Manager on Windows). Resolves the command
//! line into absolute paths and hands over to `crate::service`.
//!
//! Unlike the other commands it loads no configuration: the global `--config` names the file the
//! *service* will read (default `/etc/settle/settle.toml` on Linux), which need not exist, or be
//! valid, on the machine that installs it — and a broken file must not stop an uninstall.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use crate::cli::{Cli, ServiceCommand};
use crate::service::{self, InstallRequest};

pub fn run(cli: &Cli, command: &ServiceCommand) -> Result<()> {
    match command {
        ServiceCommand::Install {
            unit_dir,
            binary,
            no_start,
        } => {
            let binary = match binary {
                Some(binary) => absolute(binary)?,
                None => std::env::current_exe()
                    .context("cannot find this executable's path; pass --binary")?,
            };
            let request = InstallRequest {
                unit_dir: unit_dir.clone(),
                binary,
                config: cli.config.as_deref().map(absolute).transpose()?,
                data_dir: cli.data_dir.as_deref().map(absolute).transpose()?,
                start: !no_start,
            };
            service::install(&request)
        }
        ServiceCommand::Uninstall { unit_dir } => service::uninstall(unit_dir),
        ServiceCommand::Status => service::status(),
        ServiceCommand::Run => service::run(|cli| Box::pin(super::dispatch(cli))),
    }
}

/// A service starts in another directory than this shell: relative paths are made absolute here.
fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
}
