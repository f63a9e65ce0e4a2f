//! Service lifecycle through the real Service Control Manager (run under Wine in CI): the
//! `ssis-test-service` helper uses the agent's own `run_as_service`, registered with
//! `install_as`, driven through `WindowsHost`.
#![cfg(windows)]

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ssis_agent::host::windows::WindowsHost;
use ssis_agent::host::{Host, HostError, SecretString, ServiceState};
use ssis_agent::windows_service::{install_as, uninstall_named};
use ssis_crds::ServiceStartType;

/// The helper binary sits next to the test's `deps` folder.
fn helper_exe() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let helper = dir.join("ssis-test-service.exe");
    assert!(helper.exists(), "{} not built", helper.display());
    helper
}

/// The marker is written by the service body after the SCM reports it running; wait for it
/// (bounded) instead of sleeping a fixed time.
fn wait_for_marker(path: &PathBuf, expected: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let content = std::fs::read_to_string(path).unwrap_or_default();
        if content == expected || Instant::now() >= deadline {
            return content;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Wine's SCM client is not safe for concurrent use from two threads of one process: run in
/// parallel, these two tests failed in 5 of 47 runs with `Invalid handle (os error 6)` and hung in
/// one more; serialized, none of 160 runs failed. The agent never makes concurrent SCM calls
/// (every host call holds its host lock).
fn scm_lock() -> MutexGuard<'static, ()> {
    static SCM: Mutex<()> = Mutex::new(());
    SCM.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Removes the test service even when an assertion fails, so later runs start clean.
struct Uninstall(String);

impl Drop for Uninstall {
    fn drop(&mut self) {
        let _ = uninstall_named(&self.0);
    }
}

#[test]
fn full_lifecycle_of_a_real_service() {
    let _scm = scm_lock();
    let mut host = WindowsHost::new();
    // Wine reuses small process ids: add the time so names never collide across runs.
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let name = format!("ssis-agent-test-{}-{nanos}", std::process::id());
    let _cleanup = Uninstall(name.clone());
    let dir = PathBuf::from(r"C:\ssis-agent-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let marker = dir.join(format!("{name}.marker"));
    let _ = std::fs::remove_file(&marker);

    assert_eq!(host.query_service(&name).unwrap(), None);
    install_as(&name, &helper_exe(), &[marker.clone().into_os_string()]).unwrap();
    // Installing again updates in place.
    install_as(&name, &helper_exe(), &[marker.clone().into_os_string()]).unwrap();

    let info = host.query_service(&name).unwrap().expect("installed");
    assert_eq!(info.state, ServiceState::Stopped);
    assert_eq!(info.start_type, ServiceStartType::Automatic);
    assert!(info.logon_account.eq_ignore_ascii_case("LocalSystem"), "{}", info.logon_account);

    host.start_service(&name).unwrap();
    assert_eq!(host.query_service(&name).unwrap().unwrap().state, ServiceState::Running);
    assert_eq!(wait_for_marker(&marker, "running"), "running", "the service body ran");
    host.start_service(&name).unwrap(); // already running: Ok

    host.stop_service(&name).unwrap();
    assert_eq!(host.query_service(&name).unwrap().unwrap().state, ServiceState::Stopped);
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "stopped", "the body saw the stop request");
    host.stop_service(&name).unwrap(); // not running: Ok

    // Restart works after a stop.
    host.start_service(&name).unwrap();
    assert_eq!(host.query_service(&name).unwrap().unwrap().state, ServiceState::Running);
    host.stop_service(&name).unwrap();

    host.set_service_start_type(&name, ServiceStartType::Manual).unwrap();
    assert_eq!(host.query_service(&name).unwrap().unwrap().start_type, ServiceStartType::Manual);
    host.set_service_start_type(&name, ServiceStartType::Disabled).unwrap();
    assert_eq!(host.query_service(&name).unwrap().unwrap().start_type, ServiceStartType::Disabled);
    host.set_service_start_type(&name, ServiceStartType::Automatic).unwrap();
    assert_eq!(host.query_service(&name).unwrap().unwrap().start_type, ServiceStartType::Automatic);

    // Wine accepts any account; real Windows checks the account and its logon right.
    host.set_service_logon(&name, r".\ssis-svc", &SecretString::new("S3cret-logon!")).unwrap();
    let info = host.query_service(&name).unwrap().unwrap();
    assert_eq!(info.logon_account, r".\ssis-svc");
    assert_eq!(info.start_type, ServiceStartType::Automatic, "logon change leaves the start type");

    uninstall_named(&name).unwrap();
    assert_eq!(host.query_service(&name).unwrap(), None);
    uninstall_named(&name).unwrap(); // absent: Ok
}

#[test]
fn missing_services_are_absent_or_not_found_and_never_leak_passwords() {
    let _scm = scm_lock();
    let mut host = WindowsHost::new();
    let name = "ssis-agent-test-never-installed";
    assert_eq!(host.query_service(name).unwrap(), None);
    let err = host.start_service(name).unwrap_err();
    assert!(matches!(err, HostError::NotFound(_)), "{err:?}");
    let err = host.stop_service(name).unwrap_err();
    assert!(matches!(err, HostError::NotFound(_)), "{err:?}");
    let err = host.set_service_start_type(name, ServiceStartType::Manual).unwrap_err();
    assert!(matches!(err, HostError::NotFound(_)), "{err:?}");
    let secret = "Do-Not-Print-Me-42";
    let err = host.set_service_logon(name, r"CORP\svc", &SecretString::new(secret)).unwrap_err();
    assert!(matches!(err, HostError::NotFound(_)), "{err:?}");
    assert!(!format!("{err} {err:?}").contains(secret));
    assert!(!format!("{:?}", SecretString::new(secret)).contains(secret));
}
