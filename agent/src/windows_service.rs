//! Running the agent as a Windows service, and registering / removing that service.
//!
//! `main.rs` wires three commands to these functions: `install [agent args]`, `uninstall`, and
//! `service [agent args]` (what the SCM starts), which calls [`run_as_service`] with the agent
//! loop.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use windows::Win32::Foundation::{
    ERROR_SERVICE_DOES_NOT_EXIST, ERROR_SERVICE_EXISTS, ERROR_SERVICE_NOT_ACTIVE, WIN32_ERROR,
};
use windows_service::service::{
    ServiceAccess, ServiceAction, ServiceActionType, ServiceControl, ServiceControlAccept, ServiceErrorControl,
    ServiceExitCode, ServiceFailureActions, ServiceFailureResetPeriod, ServiceInfo, ServiceStartType, ServiceState,
    ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};
use windows_service::{define_windows_service, service_dispatcher};

/// Name the agent is registered under.
pub const SERVICE_NAME: &str = "ssis-agent";
const DISPLAY_NAME: &str = "SSIS Scale Out node agent";
const DESCRIPTION: &str = "Keeps this node's SSIS Scale Out configuration equal to its HostConfig (ssis.sqlops.io).";
/// Command-line word that makes `main` call [`run_as_service`].
pub const SERVICE_COMMAND: &str = "service";

/// The agent loop run by the service: returns when the receiver yields (stop or shutdown).
pub type ServiceRun = fn(shutdown: Receiver<()>) -> anyhow::Result<()>;

/// Register `ssis-agent` as an auto-start service running `<this exe> service <args>`.
pub fn install(args: &[OsString]) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locate the agent executable")?;
    install_as(SERVICE_NAME, &exe, args)
}

/// Remove the `ssis-agent` service (stopping it first). Absent is fine.
pub fn uninstall() -> anyhow::Result<()> {
    uninstall_named(SERVICE_NAME)
}

/// The Win32 error code of a failed SCM call.
fn os_code(e: &windows_service::Error) -> Option<WIN32_ERROR> {
    match e {
        windows_service::Error::Winapi(io) => io.raw_os_error().map(|code| WIN32_ERROR(code as u32)),
        _ => None,
    }
}

/// [`install`] with an explicit name and executable (tests register a throwaway service).
/// Idempotent: an existing service gets the same configuration.
pub fn install_as(name: &str, exe: &Path, args: &[OsString]) -> anyhow::Result<()> {
    let manager = ServiceManager::local_computer(
        None::<&str>,
        ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE,
    )
    .context("connect to the Service Control Manager")?;
    let mut launch_arguments = vec![OsString::from(SERVICE_COMMAND)];
    launch_arguments.extend(args.iter().cloned());
    let info = ServiceInfo {
        name: OsString::from(name),
        // Display names must be unique too; other names (tests) get their own.
        display_name: OsString::from(if name == SERVICE_NAME {
            DISPLAY_NAME.to_string()
        } else {
            format!("{DISPLAY_NAME} ({name})")
        }),
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: exe.to_path_buf(),
        launch_arguments,
        dependencies: vec![],
        // LocalSystem: the agent edits HKLM, LocalMachine stores and services.
        account_name: None,
        account_password: None,
    };
    let access = ServiceAccess::CHANGE_CONFIG | ServiceAccess::QUERY_CONFIG | ServiceAccess::START;
    let service = match manager.create_service(&info, access) {
        Ok(s) => s,
        Err(e) if os_code(&e) == Some(ERROR_SERVICE_EXISTS) => {
            let s = manager.open_service(name, access).with_context(|| format!("open service {name}"))?;
            s.change_config(&info).with_context(|| format!("update service {name}"))?;
            s
        }
        Err(e) => return Err(e).with_context(|| format!("create service {name}")),
    };
    service.set_description(DESCRIPTION).with_context(|| format!("describe service {name}"))?;
    // Restart after a crash or an error exit: the agent is level-triggered, so a restart resumes.
    let restart = |secs| ServiceAction { action_type: ServiceActionType::Restart, delay: Duration::from_secs(secs) };
    let recovery = ServiceFailureActions {
        reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(24 * 3600)),
        reboot_msg: None,
        command: None,
        actions: Some(vec![restart(10), restart(30), restart(60)]),
    };
    // Recovery is best effort: some hosts (and Wine) do not implement failure actions.
    if service.update_failure_actions(recovery).is_ok() {
        let _ = service.set_failure_actions_on_non_crash_failures(true);
    }
    Ok(())
}

/// [`uninstall`] for any service name.
pub fn uninstall_named(name: &str) -> anyhow::Result<()> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .context("connect to the Service Control Manager")?;
    let access = ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE;
    let service = match manager.open_service(name, access) {
        Ok(s) => s,
        Err(e) if os_code(&e) == Some(ERROR_SERVICE_DOES_NOT_EXIST) => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("open service {name}")),
    };
    match service.stop() {
        Ok(_) => {}
        Err(e) if os_code(&e) == Some(ERROR_SERVICE_NOT_ACTIVE) => {}
        Err(e) => return Err(e).with_context(|| format!("stop service {name}")),
    }
    // Deleting a running service only marks it; wait (bounded) so a reinstall can follow.
    let deadline = Instant::now() + Duration::from_secs(30);
    while service.query_status().map(|s| s.current_state != ServiceState::Stopped).unwrap_or(false)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    service.delete().with_context(|| format!("delete service {name}"))
}

static RUN: OnceLock<ServiceRun> = OnceLock::new();

define_windows_service!(ffi_service_main, service_main);

/// Hand the process to the SCM dispatcher and run `run` as the service body. Blocks until the
/// service stops. Fails when the process was not started by the SCM.
pub fn run_as_service(run: ServiceRun) -> anyhow::Result<()> {
    RUN.set(run).map_err(|_| anyhow::anyhow!("run_as_service called twice"))?;
    // For an own-process service the dispatcher ignores the name.
    service_dispatcher::start(SERVICE_NAME, ffi_service_main).context("start the service dispatcher")
}

fn status(state: ServiceState, exit_code: ServiceExitCode, wait_hint: Duration) -> ServiceStatus {
    ServiceStatus {
        service_type: ServiceType::OWN_PROCESS,
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
    }
}

fn service_main(_args: Vec<OsString>) {
    let Some(run) = RUN.get().copied() else { return };
    let (tx, rx) = channel();
    let handler = move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            let _ = tx.send(());
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let Ok(handle) = service_control_handler::register(OsStr::new(SERVICE_NAME), handler) else { return };
    let _ = handle.set_service_status(status(ServiceState::Running, ServiceExitCode::Win32(0), Duration::ZERO));
    let exit = match run(rx) {
        Ok(()) => ServiceExitCode::Win32(0),
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "agent loop failed");
            // ServiceSpecific makes the SCM apply the recovery actions (non-crash failure).
            ServiceExitCode::ServiceSpecific(1)
        }
    };
    let _ = handle.set_service_status(status(ServiceState::StopPending, exit, Duration::from_secs(5)));
    let _ = handle.set_service_status(status(ServiceState::Stopped, exit, Duration::ZERO));
}
