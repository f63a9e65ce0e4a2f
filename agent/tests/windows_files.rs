//! Atomic settings-file replace through the real Win32 backend (run under Wine in CI).
#![cfg(windows)]

use std::os::windows::fs::OpenOptionsExt;
use std::path::PathBuf;

use ssis_agent::host::windows::WindowsHost;
use ssis_agent::host::{Host, HostError};
use windows::Win32::Storage::FileSystem::{FILE_SHARE_DELETE, FILE_SHARE_READ, FILE_SHARE_WRITE};

fn test_dir(name: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = PathBuf::from(format!(r"C:\ssis-agent-tests\{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn leftovers(dir: &PathBuf) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect()
}

#[test]
fn replace_keeps_the_previous_content_as_bak() {
    let mut host = WindowsHost::new();
    let dir = test_dir("replace");
    let path = dir.join("MasterSettings.config");
    let p = path.to_str().unwrap();

    assert_eq!(host.read_file(p).unwrap(), None);
    host.write_file_atomic(p, br#"{"PortNumber":8391}"#).unwrap();
    assert_eq!(host.read_file(p).unwrap().as_deref(), Some(&br#"{"PortNumber":8391}"#[..]));
    assert!(!dir.join("MasterSettings.config.bak").exists(), "nothing to back up on first write");

    host.write_file_atomic(p, br#"{"PortNumber":8392}"#).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), br#"{"PortNumber":8392}"#);
    assert_eq!(std::fs::read(dir.join("MasterSettings.config.bak")).unwrap(), br#"{"PortNumber":8391}"#);

    host.write_file_atomic(p, b"").unwrap();
    assert_eq!(host.read_file(p).unwrap().as_deref(), Some(&b""[..]));
    assert_eq!(std::fs::read(dir.join("MasterSettings.config.bak")).unwrap(), br#"{"PortNumber":8392}"#);
    assert!(leftovers(&dir).is_empty(), "{:?}", leftovers(&dir));
}

#[test]
fn creates_missing_folders_and_handles_unicode_and_large_content() {
    let mut host = WindowsHost::new();
    let dir = test_dir("unicode");
    let path = dir.join(r"Binn\Dätä 日本\MsDtsSrvr.ini.xml");
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    host.write_file_atomic(path.to_str().unwrap(), &content).unwrap();
    assert_eq!(host.read_file(path.to_str().unwrap()).unwrap(), Some(content));
}

#[test]
fn replace_while_another_handle_holds_the_file_is_busy_then_succeeds() {
    let mut host = WindowsHost::new();
    let dir = test_dir("busy");
    let path = dir.join("WorkerSettings.config");
    let p = path.to_str().unwrap();
    host.write_file_atomic(p, b"old").unwrap();

    // Like a service that opened its settings without FILE_SHARE_DELETE: the rename must fail.
    let holder = std::fs::OpenOptions::new().read(true).share_mode(FILE_SHARE_READ.0).open(&path).unwrap();
    let err = host.write_file_atomic(p, b"new").unwrap_err();
    assert!(matches!(err, HostError::Busy(_)), "{err:?}");
    assert_eq!(std::fs::read(&path).unwrap(), b"old", "the target is untouched");
    assert!(leftovers(&dir).is_empty(), "temp file removed after failure: {:?}", leftovers(&dir));

    drop(holder);
    host.write_file_atomic(p, b"new").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new");
    assert_eq!(std::fs::read(dir.join("WorkerSettings.config.bak")).unwrap(), b"old");
}

#[test]
fn replace_while_a_handle_shares_everything_is_still_busy() {
    let mut host = WindowsHost::new();
    let dir = test_dir("shared");
    let path = dir.join("WorkerSettings.config");
    let p = path.to_str().unwrap();
    host.write_file_atomic(p, b"old").unwrap();

    // Like an antivirus scanner: read access, sharing read, write and delete. A rename over an
    // open file still fails with ERROR_ACCESS_DENIED, and the agent must see that as busy.
    let holder = std::fs::OpenOptions::new()
        .read(true)
        .share_mode((FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE).0)
        .open(&path)
        .unwrap();
    let err = host.write_file_atomic(p, b"new").unwrap_err();
    assert!(matches!(err, HostError::Busy(_)), "{err:?}");
    assert_eq!(std::fs::read(&path).unwrap(), b"old", "the target is untouched");

    drop(holder);
    host.write_file_atomic(p, b"new").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new");
}

#[test]
fn replace_over_a_folder_is_access_denied_not_busy() {
    let mut host = WindowsHost::new();
    let dir = test_dir("folder");
    // A folder where the settings file should be: Windows answers ERROR_ACCESS_DENIED, and no
    // other process holds anything, so waiting cannot help. (A read-only target fails the same
    // way on Windows; Wine replaces read-only files, so that case is not provable here.)
    let path = dir.join("MasterSettings.config");
    std::fs::create_dir(&path).unwrap();
    let err = host.write_file_atomic(path.to_str().unwrap(), b"new").unwrap_err();
    assert!(matches!(err, HostError::AccessDenied(_)), "{err:?}");
    assert!(path.is_dir(), "the folder is untouched");
    assert!(leftovers(&dir).is_empty(), "temp file removed after failure: {:?}", leftovers(&dir));
}

#[test]
fn computer_name_is_the_netbios_name() {
    let name = WindowsHost::new().computer_name().unwrap();
    assert!(!name.is_empty());
    assert_eq!(name.to_uppercase(), std::env::var("COMPUTERNAME").unwrap().to_uppercase());
}
