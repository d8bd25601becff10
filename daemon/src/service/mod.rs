//! Running `settle serve` under the platform's service manager: systemd on Linux (the reference
//! unit `ops/systemd/settle.service`, rendered by `unit`, installed by `linux`), the Service
//! Control Manager on Windows (`windows`), and `notify`, the sd_notify messages the daemon sends
//! to systemd. `settle service …` (`commands/service.rs`) is the command line over this module.

pub mod notify;
pub mod unit;

#[cfg(target_os = "linux")]
mod linux;
#[cfg(target_os = "linux")]
use linux as platform;
#[cfg(windows)]
mod windows;
#[cfg(not(any(target_os = "linux", windows)))]
use unsupported as platform;
#[cfg(windows)]
use windows as platform;

use std::path::{Path, PathBuf};

use anyhow::Result;

/// What `settle service install` was asked to do, with every path already absolute.
#[derive(Debug, Clone)]
pub struct InstallRequest {
    /// Where the systemd unit file goes (Linux only).
    pub unit_dir: PathBuf,
    /// The `settle` executable the service runs.
    pub binary: PathBuf,
    /// The configuration file the service reads (Linux: default `/etc/settle/settle.toml`).
    pub config: Option<PathBuf>,
    /// The data directory: passed to the Windows service; the Linux unit keeps its store in
    /// `/var/lib/settle` whatever this says (with a warning).
    pub data_dir: Option<PathBuf>,
    /// Enable and start the service once installed (`--no-start` turns it off).
    pub start: bool,
}

/// Installs the service: writes and enables the systemd unit, or registers the Windows service.
pub fn install(request: &InstallRequest) -> Result<()> {
    platform::install(request)
}

/// Stops and removes the service (`unit_dir`: where the systemd unit file is, on Linux).
pub fn uninstall(unit_dir: &Path) -> Result<()> {
    platform::uninstall(unit_dir)
}

/// Shows the service's state; the exit status says whether it runs (0) or not (3, like systemctl).
pub fn status() -> Result<()> {
    platform::status()
}

/// How a started service runs its command line (`settle … serve`): the command dispatcher, handed
/// in by the command that starts the service, so this layer needs nothing above it.
pub type Serve = fn(crate::cli::Cli) -> ServeFuture;
/// What `Serve` returns: the whole run of the daemon.
pub type ServeFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>>>>;

/// The entry point the Windows Service Control Manager starts (`settle … service run`): runs
/// `settle … serve` through `serve` until the service is told to stop. Refused elsewhere.
pub fn run(serve: Serve) -> Result<()> {
    platform::run(serve)
}

/// Resolves once the service manager has asked the daemon to stop: on Windows, the service's
/// Stop or Shutdown control. `settle serve` awaits it next to its signal handling to shut down
/// gracefully; on Linux systemd sends SIGTERM instead and nothing resolves this.
pub async fn stop_requested() {
    let mut requested = stop_flag().subscribe();
    // The sender lives in a static, so the channel never closes.
    let _ = requested.wait_for(|stop| *stop).await;
}

/// Asks `stop_requested` to resolve (the Windows service control handler calls it).
#[cfg_attr(not(windows), allow(dead_code))]
pub(crate) fn request_stop() {
    stop_flag().send_replace(true);
}

fn stop_flag() -> &'static tokio::sync::watch::Sender<bool> {
    static STOP: std::sync::OnceLock<tokio::sync::watch::Sender<bool>> = std::sync::OnceLock::new();
    STOP.get_or_init(|| tokio::sync::watch::Sender::new(false))
}

/// Platforms with neither systemd nor the Windows service manager.
#[cfg(not(any(target_os = "linux", windows)))]
mod unsupported {
    use std::path::Path;

    use anyhow::Result;

    use super::InstallRequest;
    use crate::exit::Exit;

    const UNSUPPORTED: &str = "`settle service` supports systemd on Linux and the Windows service \
         manager; on this platform run `settle serve` under your own supervisor";

    pub fn install(_: &InstallRequest) -> Result<()> {
        Err(Exit::bad_input(UNSUPPORTED))
    }

    pub fn uninstall(_: &Path) -> Result<()> {
        Err(Exit::bad_input(UNSUPPORTED))
    }

    pub fn status() -> Result<()> {
        Err(Exit::bad_input(UNSUPPORTED))
    }

    pub fn run(_: super::Serve) -> Result<()> {
        Err(Exit::bad_input(UNSUPPORTED))
    }
}
