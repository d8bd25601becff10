//! Windows: the daemon as a Windows service, through the Service Control Manager (the
//! `windows-service` crate). `install` registers the service `settle` to start
//! `settle.exe [--config FILE] [--data-dir DIR] service run` automatically as LocalService;
//! `service run` connects to the SCM and runs the same future as `settle … serve` until the
//! service's Stop (or Shutdown) control. `uninstall` stops and deletes it; `status` reports its
//! state.
//!
//! Compiled only on Windows and not exercised by the test suite (CI builds and tests Linux).
//! Secrets come from the environment as elsewhere: set them in the service's `Environment`
//! registry value (`HKLM\SYSTEM\CurrentControlSet\Services\settle`).

use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use clap::Parser as _;
use windows_service::service::{
    ServiceAccess, ServiceControl, ServiceControlAccept, ServiceErrorControl, ServiceExitCode,
    ServiceInfo, ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};

use super::unit::SERVICE_NAME;
use super::InstallRequest;
use crate::exit::Exit;

const DISPLAY_NAME: &str = "Settle";
const DESCRIPTION: &str = "Settle settlement daemon (HTTP API and nightly scheduler)";
/// The least-privileged built-in account that still has network access.
const ACCOUNT: &str = r"NT AUTHORITY\LocalService";
const SERVICE_TYPE: ServiceType = ServiceType::OWN_PROCESS;
/// How long the daemon may take to stop gracefully (its shutdown timeout is 30 s), as the
/// Linux unit's TimeoutStopSec=.
const STOP_TIMEOUT: Duration = Duration::from_secs(45);
/// `ERROR_SERVICE_DOES_NOT_EXIST`.
const SERVICE_DOES_NOT_EXIST: i32 = 1060;
/// The arguments that make the SCM's command line `settle … service run`.
const RUN_ARGUMENTS: [&str; 2] = ["service", "run"];

pub fn install(request: &InstallRequest) -> Result<()> {
    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )
    .context("cannot open the service manager (run as Administrator)")?;
    let mut launch_arguments: Vec<OsString> = Vec::new();
    if let Some(config) = &request.config {
        launch_arguments.extend(["--config".into(), config.clone().into_os_string()]);
    }
    if let Some(data_dir) = &request.data_dir {
        launch_arguments.extend(["--data-dir".into(), data_dir.clone().into_os_string()]);
    }
    launch_arguments.extend(RUN_ARGUMENTS.map(OsString::from));
    let info = ServiceInfo {
        name: SERVICE_NAME.into(),
        display_name: DISPLAY_NAME.into(),
        service_type: SERVICE_TYPE,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: request.binary.clone(),
        launch_arguments,
        dependencies: vec![],
        account_name: Some(ACCOUNT.into()),
        account_password: None,
    };
    let service = manager
        .create_service(&info, ServiceAccess::CHANGE_CONFIG | ServiceAccess::START)
        .context("cannot register the service settle")?;
    service.set_description(DESCRIPTION)?;
    println!("registered the Windows service {SERVICE_NAME}");
    if request.start {
        service
            .start::<&str>(&[])
            .context("cannot start the service")?;
        println!("started {SERVICE_NAME}; `settle service status` shows how it is doing");
    }
    Ok(())
}

pub fn uninstall(_unit_dir: &Path) -> Result<()> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .context("cannot open the service manager (run as Administrator)")?;
    let access = ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE;
    let service = match manager.open_service(SERVICE_NAME, access) {
        Ok(service) => service,
        Err(error) if does_not_exist(&error) => {
            println!("the service {SERVICE_NAME} is not installed");
            return Ok(());
        }
        Err(error) => return Err(error).context("cannot open the service settle"),
    };
    // Deletion takes effect once the service has stopped and every handle is closed.
    service
        .delete()
        .context("cannot delete the service settle")?;
    if service.query_status()?.current_state != ServiceState::Stopped {
        service.stop().context("cannot stop the service settle")?;
    }
    println!("removed the Windows service {SERVICE_NAME} (it is deleted once stopped)");
    Ok(())
}

pub fn status() -> Result<()> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .context("cannot open the service manager")?;
    let service = match manager.open_service(SERVICE_NAME, ServiceAccess::QUERY_STATUS) {
        Ok(service) => service,
        Err(error) if does_not_exist(&error) => {
            return Err(Exit {
                code: 4,
                message: format!("the service {SERVICE_NAME} is not installed"),
            }
            .into())
        }
        Err(error) => return Err(error).context("cannot open the service settle"),
    };
    let status = service.query_status()?;
    let pid = status
        .process_id
        .map(|pid| format!(" (pid {pid})"))
        .unwrap_or_default();
    println!("{SERVICE_NAME}: {:?}{pid}", status.current_state);
    if status.current_state == ServiceState::Running {
        Ok(())
    } else {
        Err(Exit {
            code: 3,
            message: format!("the service {SERVICE_NAME} is not running"),
        }
        .into())
    }
}

fn does_not_exist(error: &windows_service::Error) -> bool {
    matches!(error, windows_service::Error::Winapi(io) if io.raw_os_error() == Some(SERVICE_DOES_NOT_EXIST))
}

/// Connects this process to the SCM, which calls `service_main` on a thread of its own; returns
/// when the service has stopped.
pub fn run(serve: super::Serve) -> Result<()> {
    // The SCM calls `service_main` with no context of ours: the dispatcher waits in a static.
    let _ = SERVE.set(serve);
    service_dispatcher::start(SERVICE_NAME, ffi_service_main)
        .context("cannot connect to the service manager (`service run` is for the SCM only)")
}

/// How the started service runs `settle … serve`, set by `run` before the SCM calls in.
static SERVE: std::sync::OnceLock<super::Serve> = std::sync::OnceLock::new();

define_windows_service!(ffi_service_main, service_main);

fn service_main(_arguments: Vec<OsString>) {
    if let Err(error) = run_service() {
        tracing::error!("the service failed: {error:#}");
    }
}

fn run_service() -> Result<()> {
    let stop = Arc::new(tokio::sync::Notify::new());
    let on_stop = Arc::clone(&stop);
    let handler = move |control: ServiceControl| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            on_stop.notify_one();
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let handle = service_control_handler::register(SERVICE_NAME, handler)?;
    let report = |state, exit_code, wait_hint| {
        handle.set_service_status(ServiceStatus {
            service_type: SERVICE_TYPE,
            current_state: state,
            controls_accepted: if state == ServiceState::Running {
                ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
            } else {
                ServiceControlAccept::empty()
            },
            exit_code,
            checkpoint: 0,
            wait_hint,
            process_id: None,
        })
    };

    let outcome = serve_command_line().and_then(|cli| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        report(
            ServiceState::Running,
            ServiceExitCode::NO_ERROR,
            Duration::ZERO,
        )?;
        runtime.block_on(async {
            let dispatch = SERVE
                .get()
                .ok_or_else(|| anyhow::anyhow!("the service started without its command line"))?;
            let serve = dispatch(cli);
            tokio::pin!(serve);
            tokio::select! {
                outcome = &mut serve => outcome,
                () = stop.notified() => {
                    let _ = report(ServiceState::StopPending, ServiceExitCode::NO_ERROR, STOP_TIMEOUT);
                    super::request_stop();
                    // A daemon that does not stop in time is dropped, as systemd would kill it.
                    tokio::time::timeout(STOP_TIMEOUT, serve).await.unwrap_or(Ok(()))
                }
            }
        })
    });
    let exit_code = match &outcome {
        Ok(()) => ServiceExitCode::NO_ERROR,
        Err(error) => ServiceExitCode::ServiceSpecific(u32::from(crate::exit::code_for(error))),
    };
    report(ServiceState::Stopped, exit_code, Duration::ZERO)?;
    outcome
}

/// This process's own command line with its trailing `service run` replaced by `serve`: the
/// same global options (`--config`, `--data-dir`, …) for the daemon the service runs.
fn serve_command_line() -> Result<crate::cli::Cli> {
    let mut arguments: Vec<OsString> = std::env::args_os().collect();
    let tail = arguments.len().saturating_sub(RUN_ARGUMENTS.len());
    if arguments[tail..] != RUN_ARGUMENTS.map(OsString::from) {
        bail!("the service's command line does not end with `service run`: reinstall it");
    }
    arguments.truncate(tail);
    arguments.push("serve".into());
    Ok(crate::cli::Cli::try_parse_from(arguments)?)
}
