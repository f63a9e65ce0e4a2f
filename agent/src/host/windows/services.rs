//! Windows services through the Service Control Manager, with the `windows-service` crate.
//!
//! One call stays raw: `windows-service` has no partial `ChangeServiceConfigW`. Its
//! `Service::change_config` passes every field of a `ServiceInfo`, so changing only the start type
//! or only the logon account through it would also rewrite the binary path (with its arguments),
//! display name, error control and dependencies of a service the agent does not own. The agent
//! calls `ChangeServiceConfigW` with `SERVICE_NO_CHANGE` / NULL for everything else, on the
//! crate's service handle.

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use ssis_crds::ServiceStartType;
use windows::Win32::Foundation::{
    ERROR_SERVICE_ALREADY_RUNNING, ERROR_SERVICE_DATABASE_LOCKED, ERROR_SERVICE_DOES_NOT_EXIST,
    ERROR_SERVICE_NOT_ACTIVE, ERROR_SERVICE_SPECIFIC_ERROR, WIN32_ERROR,
};
use windows::Win32::System::Services::{
    ChangeServiceConfigW, ENUM_SERVICE_TYPE, SC_HANDLE, SERVICE_ERROR, SERVICE_NO_CHANGE, SERVICE_START_TYPE,
};
use windows::core::PCWSTR;
use windows_service::service::{
    Service, ServiceAccess, ServiceExitCode, ServiceStartType as ScmStartType, ServiceState as ScmState,
};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

use super::util::{map_code, map_err, wide};
use crate::host::{HostError, SecretString, ServiceInfo, ServiceState};

/// The SCM reports 1055 while it is busy (e.g. right after boot); give it this long.
const LOCKED_BUDGET: Duration = Duration::from_secs(30);
/// How long start/stop wait for the service to leave its pending state.
const STATE_BUDGET: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

/// The Win32 error code of a failed SCM call (`None` for the crate's own argument errors).
fn win32(e: &windows_service::Error) -> Option<WIN32_ERROR> {
    match e {
        windows_service::Error::Winapi(io) => io.raw_os_error().map(|code| WIN32_ERROR(code as u32)),
        _ => None,
    }
}

/// Map a `windows-service` error to a [`HostError`], keeping Windows' error code.
fn map_scm(context: &str, e: windows_service::Error) -> HostError {
    match win32(&e) {
        Some(code) => map_code(context, code.0),
        // A name with a NUL, or a state/start type the crate cannot represent.
        None => HostError::Invalid(match std::error::Error::source(&e) {
            Some(source) => format!("{context}: {e}: {source}"),
            None => format!("{context}: {e}"),
        }),
    }
}

fn open(name: &str, access: ServiceAccess) -> Result<Option<Service>, HostError> {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .map_err(|e| map_scm("OpenSCManagerW", e))?;
    // The service handle stays valid after the manager handle is closed.
    match manager.open_service(name, access) {
        Ok(service) => Ok(Some(service)),
        Err(e) if win32(&e) == Some(ERROR_SERVICE_DOES_NOT_EXIST) => Ok(None),
        Err(e) => Err(map_scm(&format!("open service {name}"), e)),
    }
}

fn open_existing(name: &str, access: ServiceAccess) -> Result<Service, HostError> {
    open(name, access)?.ok_or_else(|| HostError::NotFound(format!("service {name}")))
}

pub(crate) fn state_of(state: ScmState) -> ServiceState {
    match state {
        ScmState::Stopped => ServiceState::Stopped,
        ScmState::StartPending => ServiceState::StartPending,
        ScmState::StopPending => ServiceState::StopPending,
        ScmState::Running => ServiceState::Running,
        ScmState::ContinuePending => ServiceState::ContinuePending,
        ScmState::PausePending => ServiceState::PausePending,
        ScmState::Paused => ServiceState::Paused,
    }
}

pub(crate) fn start_type_of(start_type: ScmStartType) -> ServiceStartType {
    match start_type {
        ScmStartType::OnDemand => ServiceStartType::Manual,
        ScmStartType::Disabled => ServiceStartType::Disabled,
        // Boot, system and auto start all start without being asked.
        ScmStartType::AutoStart | ScmStartType::SystemStart | ScmStartType::BootStart => ServiceStartType::Automatic,
    }
}

pub(crate) fn scm_start_type(start_type: ServiceStartType) -> ScmStartType {
    match start_type {
        ServiceStartType::Automatic => ScmStartType::AutoStart,
        ServiceStartType::Manual => ScmStartType::OnDemand,
        ServiceStartType::Disabled => ScmStartType::Disabled,
    }
}

fn state(service: &Service, name: &str) -> Result<ServiceState, HostError> {
    let status = service.query_status().map_err(|e| map_scm(&format!("query status of {name}"), e))?;
    Ok(state_of(status.current_state))
}

pub fn query(name: &str) -> Result<Option<ServiceInfo>, HostError> {
    let Some(service) = open(name, ServiceAccess::QUERY_STATUS | ServiceAccess::QUERY_CONFIG)? else {
        return Ok(None);
    };
    let state = state(&service, name)?;
    let config = service.query_config().map_err(|e| map_scm(&format!("query config of {name}"), e))?;
    Ok(Some(ServiceInfo {
        state,
        start_type: start_type_of(config.start_type),
        logon_account: config.account_name.map(|a| a.to_string_lossy().into_owned()).unwrap_or_default(),
    }))
}

/// Poll while `busy(state)` holds; bounded by STATE_BUDGET. Returns the last state seen.
fn wait_while(service: &Service, name: &str, busy: impl Fn(ServiceState) -> bool) -> Result<ServiceState, HostError> {
    let deadline = Instant::now() + STATE_BUDGET;
    loop {
        let state = state(service, name)?;
        if !busy(state) || Instant::now() >= deadline {
            return Ok(state);
        }
        std::thread::sleep(POLL);
    }
}

pub fn start(name: &str) -> Result<(), HostError> {
    let service = open_existing(name, ServiceAccess::START | ServiceAccess::QUERY_STATUS)?;
    // A service still stopping cannot be started yet.
    wait_while(&service, name, |s| s == ServiceState::StopPending)?;
    let deadline = Instant::now() + LOCKED_BUDGET;
    loop {
        match service.start::<&OsStr>(&[]) {
            Ok(()) => break,
            Err(e) => match win32(&e) {
                Some(ERROR_SERVICE_ALREADY_RUNNING) => return Ok(()),
                Some(ERROR_SERVICE_DATABASE_LOCKED) if Instant::now() < deadline => std::thread::sleep(POLL * 5),
                _ => return Err(map_scm(&format!("start service {name}"), e)),
            },
        }
    }
    match wait_while(&service, name, |s| s == ServiceState::StartPending)? {
        ServiceState::Stopped => {
            let status = service.query_status().map_err(|e| map_scm(&format!("query status of {name}"), e))?;
            // dwWin32ExitCode: a service-specific exit code shows as ERROR_SERVICE_SPECIFIC_ERROR.
            let code = match status.exit_code {
                ServiceExitCode::Win32(code) => code,
                ServiceExitCode::ServiceSpecific(_) => ERROR_SERVICE_SPECIFIC_ERROR.0,
            };
            Err(HostError::Os { context: format!("service {name} stopped right after start"), code })
        }
        // Running, or still starting after the budget: the next pass observes it.
        _ => Ok(()),
    }
}

pub fn stop(name: &str) -> Result<(), HostError> {
    let service = open_existing(name, ServiceAccess::STOP | ServiceAccess::QUERY_STATUS)?;
    match service.stop() {
        Ok(_) => {}
        Err(e) if win32(&e) == Some(ERROR_SERVICE_NOT_ACTIVE) => return Ok(()),
        Err(e) => return Err(map_scm(&format!("stop service {name}"), e)),
    }
    // The service may still report Running until its stop handling begins: wait for Stopped.
    match wait_while(&service, name, |s| s != ServiceState::Stopped)? {
        ServiceState::Stopped => Ok(()),
        other => Err(HostError::Busy(format!("service {name} is {other:?} after stop"))),
    }
}

/// `ChangeServiceConfigW` changing only `start_type`, `account` and `password` (each left alone
/// when `SERVICE_NO_CHANGE` / null): the call `windows-service` lacks (see the module comment).
fn change_config(
    name: &str,
    start_type: SERVICE_START_TYPE,
    account: PCWSTR,
    password: PCWSTR,
    what: &str,
) -> Result<(), HostError> {
    let service = open_existing(name, ServiceAccess::CHANGE_CONFIG)?;
    // SAFETY: `service` owns an open handle with SERVICE_CHANGE_CONFIG access and outlives the
    // call (it is closed when `service` drops afterwards). `account` and `password` are null or
    // point to NUL-terminated buffers the caller keeps alive until this function returns; every
    // other pointer is null / SERVICE_NO_CHANGE, which the API documents as "leave unchanged".
    unsafe {
        ChangeServiceConfigW(
            SC_HANDLE(service.raw_handle()),
            ENUM_SERVICE_TYPE(SERVICE_NO_CHANGE),
            start_type,
            SERVICE_ERROR(SERVICE_NO_CHANGE),
            PCWSTR::null(),
            PCWSTR::null(),
            None,
            PCWSTR::null(),
            account,
            password,
            PCWSTR::null(),
        )
    }
    .map_err(|e| map_err(&format!("change {what} of service {name}"), e))
}

pub fn set_start_type(name: &str, start_type: ServiceStartType) -> Result<(), HostError> {
    let raw = SERVICE_START_TYPE(scm_start_type(start_type).to_raw());
    change_config(name, raw, PCWSTR::null(), PCWSTR::null(), "start type")
}

pub fn set_logon(name: &str, account: &str, password: &SecretString) -> Result<(), HostError> {
    let a = wide(account);
    let mut p = wide(password.expose());
    let result = change_config(
        name,
        SERVICE_START_TYPE(SERVICE_NO_CHANGE),
        PCWSTR(a.as_ptr()),
        PCWSTR(p.as_ptr()),
        "logon account",
    );
    // Do not leave the password in freed memory.
    // SAFETY: each `c` is a `&mut u16` into `p`, which is alive here: valid and aligned for one
    // write. Volatile so the zeroing of a buffer about to be freed is not optimised away.
    p.iter_mut().for_each(|c| unsafe { std::ptr::write_volatile(c, 0) });
    result
}

#[cfg(test)]
mod tests {
    use windows::Win32::System::Services::{SERVICE_AUTO_START, SERVICE_DEMAND_START, SERVICE_DISABLED};

    use super::*;

    #[test]
    fn start_types_round_trip_and_match_the_header_values() {
        for t in [ServiceStartType::Automatic, ServiceStartType::Manual, ServiceStartType::Disabled] {
            assert_eq!(start_type_of(scm_start_type(t)), t);
        }
        // What the raw ChangeServiceConfigW call receives.
        assert_eq!(scm_start_type(ServiceStartType::Automatic).to_raw(), SERVICE_AUTO_START.0);
        assert_eq!(scm_start_type(ServiceStartType::Manual).to_raw(), SERVICE_DEMAND_START.0);
        assert_eq!(scm_start_type(ServiceStartType::Disabled).to_raw(), SERVICE_DISABLED.0);
        assert_eq!(start_type_of(ScmStartType::BootStart), ServiceStartType::Automatic);
        assert_eq!(start_type_of(ScmStartType::SystemStart), ServiceStartType::Automatic);
    }

    #[test]
    fn states_follow_dw_current_state() {
        assert_eq!(state_of(ScmState::Stopped), ServiceState::Stopped);
        assert_eq!(state_of(ScmState::StartPending), ServiceState::StartPending);
        assert_eq!(state_of(ScmState::StopPending), ServiceState::StopPending);
        assert_eq!(state_of(ScmState::Running), ServiceState::Running);
        assert_eq!(state_of(ScmState::Paused), ServiceState::Paused);
    }

    #[test]
    fn scm_errors_keep_the_windows_code() {
        let io = |code: WIN32_ERROR| windows_service::Error::Winapi(std::io::Error::from_raw_os_error(code.0 as i32));
        assert!(matches!(map_scm("x", io(ERROR_SERVICE_DOES_NOT_EXIST)), HostError::NotFound(_)));
        assert!(matches!(map_scm("x", io(ERROR_SERVICE_DATABASE_LOCKED)), HostError::Busy(_)));
        let err = map_scm("start service s", io(ERROR_SERVICE_SPECIFIC_ERROR));
        assert!(matches!(err, HostError::Os { code: 1066, .. }), "{err:?}");
        assert_eq!(win32(&io(ERROR_SERVICE_ALREADY_RUNNING)), Some(ERROR_SERVICE_ALREADY_RUNNING));
        let nul = map_scm("open service a\0b", windows_service::Error::ArgumentHasNulByte("service name"));
        assert!(matches!(nul, HostError::Invalid(_)), "{nul:?}");
    }
}
