//! Windows services through the Service Control Manager.

use std::time::{Duration, Instant};

use ssis_crds::ServiceStartType;
use windows::Win32::Foundation::{
    ERROR_INSUFFICIENT_BUFFER, ERROR_SERVICE_ALREADY_RUNNING, ERROR_SERVICE_DATABASE_LOCKED,
    ERROR_SERVICE_DOES_NOT_EXIST, ERROR_SERVICE_NOT_ACTIVE, WIN32_ERROR,
};
use windows::Win32::System::Services::{
    ChangeServiceConfigW, CloseServiceHandle, ControlService, ENUM_SERVICE_TYPE, OpenSCManagerW, OpenServiceW,
    QUERY_SERVICE_CONFIGW, QueryServiceConfigW, QueryServiceStatusEx, SC_HANDLE, SC_MANAGER_CONNECT,
    SC_STATUS_PROCESS_INFO, SERVICE_AUTO_START, SERVICE_CHANGE_CONFIG, SERVICE_CONTROL_STOP, SERVICE_DEMAND_START,
    SERVICE_DISABLED, SERVICE_ERROR, SERVICE_NO_CHANGE, SERVICE_QUERY_CONFIG, SERVICE_QUERY_STATUS, SERVICE_START,
    SERVICE_START_TYPE, SERVICE_STATUS, SERVICE_STATUS_PROCESS, SERVICE_STOP, StartServiceW,
};
use windows::core::PCWSTR;

use super::util::{code_of, map_code, map_err, pwstr_to_string, wide};
use crate::host::{HostError, SecretString, ServiceInfo, ServiceState};

/// The SCM reports 1055 while it is busy (e.g. right after boot); give it this long.
const LOCKED_BUDGET: Duration = Duration::from_secs(30);
/// How long start/stop wait for the service to leave its pending state.
const STATE_BUDGET: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

/// Closes the SCM or service handle on drop.
struct Sc(SC_HANDLE);

impl Drop for Sc {
    fn drop(&mut self) {
        unsafe {
            let _ = CloseServiceHandle(self.0);
        }
    }
}

fn open(name: &str, access: u32) -> Result<Option<Sc>, HostError> {
    let manager = unsafe { OpenSCManagerW(PCWSTR::null(), PCWSTR::null(), SC_MANAGER_CONNECT) }
        .map_err(|e| map_err("OpenSCManagerW", e))?;
    let manager = Sc(manager);
    let n = wide(name);
    match unsafe { OpenServiceW(manager.0, PCWSTR(n.as_ptr()), access) } {
        Ok(h) => Ok(Some(Sc(h))),
        Err(e) if code_of(&e) == ERROR_SERVICE_DOES_NOT_EXIST.0 => Ok(None),
        Err(e) => Err(map_err(&format!("open service {name}"), e)),
    }
}

fn open_existing(name: &str, access: u32) -> Result<Sc, HostError> {
    open(name, access)?.ok_or_else(|| HostError::NotFound(format!("service {name}")))
}

pub(crate) fn state_from_raw(raw: u32) -> ServiceState {
    match raw {
        1 => ServiceState::Stopped,
        2 => ServiceState::StartPending,
        3 => ServiceState::StopPending,
        4 => ServiceState::Running,
        5 => ServiceState::ContinuePending,
        6 => ServiceState::PausePending,
        _ => ServiceState::Paused,
    }
}

fn status(h: &Sc, name: &str) -> Result<SERVICE_STATUS_PROCESS, HostError> {
    let mut st = SERVICE_STATUS_PROCESS::default();
    let mut needed = 0u32;
    // SAFETY: the buffer is exactly one SERVICE_STATUS_PROCESS, as SC_STATUS_PROCESS_INFO requires.
    let buf = unsafe {
        std::slice::from_raw_parts_mut(
            (&mut st as *mut SERVICE_STATUS_PROCESS).cast::<u8>(),
            size_of::<SERVICE_STATUS_PROCESS>(),
        )
    };
    unsafe { QueryServiceStatusEx(h.0, SC_STATUS_PROCESS_INFO, Some(buf), &mut needed) }
        .map_err(|e| map_err(&format!("query status of {name}"), e))?;
    Ok(st)
}

fn config(h: &Sc, name: &str) -> Result<(SERVICE_START_TYPE, String), HostError> {
    let context = format!("query config of {name}");
    let mut needed = 0u32;
    match unsafe { QueryServiceConfigW(h.0, None, 0, &mut needed) } {
        Ok(()) => return Err(HostError::Invalid(context)),
        Err(e) if code_of(&e) == ERROR_INSUFFICIENT_BUFFER.0 => {}
        Err(e) => return Err(map_err(&context, e)),
    }
    // u64 elements keep the buffer aligned for QUERY_SERVICE_CONFIGW.
    let mut buf = vec![0u64; (needed as usize).div_ceil(8)];
    let cfg = buf.as_mut_ptr().cast::<QUERY_SERVICE_CONFIGW>();
    unsafe { QueryServiceConfigW(h.0, Some(cfg), (buf.len() * 8) as u32, &mut needed) }
        .map_err(|e| map_err(&context, e))?;
    let cfg = unsafe { &*cfg };
    let account = unsafe { pwstr_to_string(cfg.lpServiceStartName) };
    Ok((cfg.dwStartType, account))
}

pub(crate) fn start_type_from_raw(raw: SERVICE_START_TYPE) -> ServiceStartType {
    match raw {
        SERVICE_DEMAND_START => ServiceStartType::Manual,
        SERVICE_DISABLED => ServiceStartType::Disabled,
        // Boot, system and auto start all start without being asked.
        _ => ServiceStartType::Automatic,
    }
}

pub(crate) fn start_type_to_raw(start_type: ServiceStartType) -> SERVICE_START_TYPE {
    match start_type {
        ServiceStartType::Automatic => SERVICE_AUTO_START,
        ServiceStartType::Manual => SERVICE_DEMAND_START,
        ServiceStartType::Disabled => SERVICE_DISABLED,
    }
}

pub fn query(name: &str) -> Result<Option<ServiceInfo>, HostError> {
    let Some(h) = open(name, SERVICE_QUERY_STATUS | SERVICE_QUERY_CONFIG)? else {
        return Ok(None);
    };
    let st = status(&h, name)?;
    let (start, account) = config(&h, name)?;
    Ok(Some(ServiceInfo {
        state: state_from_raw(st.dwCurrentState.0),
        start_type: start_type_from_raw(start),
        logon_account: account,
    }))
}

/// Poll while `busy(state)` holds; bounded by STATE_BUDGET. Returns the last state seen.
fn wait_while(h: &Sc, name: &str, busy: impl Fn(ServiceState) -> bool) -> Result<ServiceState, HostError> {
    let deadline = Instant::now() + STATE_BUDGET;
    loop {
        let state = state_from_raw(status(h, name)?.dwCurrentState.0);
        if !busy(state) || Instant::now() >= deadline {
            return Ok(state);
        }
        std::thread::sleep(POLL);
    }
}

pub fn start(name: &str) -> Result<(), HostError> {
    let h = open_existing(name, SERVICE_START | SERVICE_QUERY_STATUS)?;
    // A service still stopping cannot be started yet.
    wait_while(&h, name, |s| s == ServiceState::StopPending)?;
    let deadline = Instant::now() + LOCKED_BUDGET;
    loop {
        match unsafe { StartServiceW(h.0, None) } {
            Ok(()) => break,
            Err(e) => match WIN32_ERROR(code_of(&e)) {
                ERROR_SERVICE_ALREADY_RUNNING => return Ok(()),
                ERROR_SERVICE_DATABASE_LOCKED if Instant::now() < deadline => std::thread::sleep(POLL * 5),
                code => return Err(map_code(&format!("start service {name}"), code.0)),
            },
        }
    }
    match wait_while(&h, name, |s| s == ServiceState::StartPending)? {
        ServiceState::Stopped => {
            let st = status(&h, name)?;
            Err(HostError::Os {
                context: format!("service {name} stopped right after start"),
                code: st.dwWin32ExitCode,
            })
        }
        // Running, or still starting after the budget: the next pass observes it.
        _ => Ok(()),
    }
}

pub fn stop(name: &str) -> Result<(), HostError> {
    let h = open_existing(name, SERVICE_STOP | SERVICE_QUERY_STATUS)?;
    let mut st = SERVICE_STATUS::default();
    match unsafe { ControlService(h.0, SERVICE_CONTROL_STOP, &mut st) } {
        Ok(()) => {}
        Err(e) if code_of(&e) == ERROR_SERVICE_NOT_ACTIVE.0 => return Ok(()),
        Err(e) => return Err(map_err(&format!("stop service {name}"), e)),
    }
    // The service may still report Running until its stop handling begins: wait for Stopped.
    match wait_while(&h, name, |s| s != ServiceState::Stopped)? {
        ServiceState::Stopped => Ok(()),
        other => Err(HostError::Busy(format!("service {name} is {other:?} after stop"))),
    }
}

fn change_config(
    name: &str,
    start_type: SERVICE_START_TYPE,
    account: PCWSTR,
    password: PCWSTR,
    what: &str,
) -> Result<(), HostError> {
    let h = open_existing(name, SERVICE_CHANGE_CONFIG)?;
    unsafe {
        ChangeServiceConfigW(
            h.0,
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
    change_config(name, start_type_to_raw(start_type), PCWSTR::null(), PCWSTR::null(), "start type")
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
    p.iter_mut().for_each(|c| unsafe { std::ptr::write_volatile(c, 0) });
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_types_round_trip() {
        for t in [ServiceStartType::Automatic, ServiceStartType::Manual, ServiceStartType::Disabled] {
            assert_eq!(start_type_from_raw(start_type_to_raw(t)), t);
        }
    }

    #[test]
    fn states_follow_dw_current_state() {
        assert_eq!(state_from_raw(1), ServiceState::Stopped);
        assert_eq!(state_from_raw(2), ServiceState::StartPending);
        assert_eq!(state_from_raw(3), ServiceState::StopPending);
        assert_eq!(state_from_raw(4), ServiceState::Running);
        assert_eq!(state_from_raw(7), ServiceState::Paused);
    }
}
