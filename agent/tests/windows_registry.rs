//! HKEY_LOCAL_MACHINE through the real Win32 backend (run under Wine in CI).
#![cfg(windows)]

use std::process::Command;

use ssis_agent::host::windows::WindowsHost;
use ssis_agent::host::{Host, RegistryData};

/// A fresh key per test run so runs never see each other's values.
fn test_key(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!(r"SOFTWARE\SsisAgentTests\{name}-{}-{nanos}", std::process::id())
}

/// `reg.exe query` in a separate process: the value is persisted, not just cached by us.
fn reg_query(key: &str, value: Option<&str>) -> String {
    let path = format!(r"HKLM\{key}");
    let mut cmd = Command::new("reg.exe");
    cmd.args(["query", &path]);
    match value {
        Some(v) => cmd.args(["/v", v]),
        None => cmd.arg("/ve"),
    };
    let out = cmd.output().expect("run reg.exe");
    assert!(out.status.success(), "reg query {path} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn default_value_of_a_new_key() {
    let mut host = WindowsHost::new();
    let key = format!(r"{}\SSIS\ServiceConfigFile", test_key("default"));
    assert!(!host.registry_key_exists(&key).unwrap());
    assert_eq!(host.read_registry(&key, None).unwrap(), None);

    let path = r"C:\Program Files\Microsoft SQL Server\160\DTS\Binn\MsDtsSrvr.ini.xml";
    host.write_registry(&key, None, &RegistryData::String(path.into())).unwrap();
    assert!(host.registry_key_exists(&key).unwrap(), "write creates the key");
    assert_eq!(host.read_registry(&key, None).unwrap(), Some(RegistryData::String(path.into())));
    assert!(reg_query(&key, None).contains(path));
    // The default value does not create a value named "" or "(Default)" beside it.
    assert_eq!(host.read_registry(&key, Some("ServiceConfigFile")).unwrap(), None);
}

#[test]
fn named_string_and_dword_values() {
    let mut host = WindowsHost::new();
    let key = format!(r"{}\SCHANNEL", test_key("named"));
    host.write_registry(&key, Some("SendTrustedIssuerList"), &RegistryData::DWord(0)).unwrap();
    host.write_registry(&key, Some("ClientAuthTrustMode"), &RegistryData::DWord(2)).unwrap();
    host.write_registry(&key, Some("Big"), &RegistryData::DWord(u32::MAX)).unwrap();
    host.write_registry(&key, Some("Note"), &RegistryData::String("kept".into())).unwrap();

    assert_eq!(host.read_registry(&key, Some("SendTrustedIssuerList")).unwrap(), Some(RegistryData::DWord(0)));
    assert_eq!(host.read_registry(&key, Some("ClientAuthTrustMode")).unwrap(), Some(RegistryData::DWord(2)));
    assert_eq!(host.read_registry(&key, Some("Big")).unwrap(), Some(RegistryData::DWord(u32::MAX)));
    assert_eq!(host.read_registry(&key, Some("Note")).unwrap(), Some(RegistryData::String("kept".into())));
    assert_eq!(host.read_registry(&key, Some("Missing")).unwrap(), None);
    assert_eq!(host.read_registry(&key, None).unwrap(), None, "no default value was written");

    let out = reg_query(&key, Some("ClientAuthTrustMode"));
    assert!(out.contains("REG_DWORD") && out.contains("0x2"), "{out}");

    // Overwrite, including a type change.
    host.write_registry(&key, Some("Note"), &RegistryData::DWord(7)).unwrap();
    assert_eq!(host.read_registry(&key, Some("Note")).unwrap(), Some(RegistryData::DWord(7)));
    host.write_registry(&key, Some("ClientAuthTrustMode"), &RegistryData::DWord(0)).unwrap();
    assert_eq!(host.read_registry(&key, Some("ClientAuthTrustMode")).unwrap(), Some(RegistryData::DWord(0)));
}

#[test]
fn unicode_names_and_data_round_trip_and_long_values() {
    let mut host = WindowsHost::new();
    let key = format!(r"{}\Ünïcødé ☃", test_key("unicode"));
    let data = "C:\\Dätä\\日本語\\🚀 path";
    host.write_registry(&key, Some("Wert-ß"), &RegistryData::String(data.into())).unwrap();
    assert_eq!(host.read_registry(&key, Some("Wert-ß")).unwrap(), Some(RegistryData::String(data.into())));
    assert!(host.registry_key_exists(&key).unwrap());

    // Longer than the first read buffer.
    let long = "x".repeat(5000);
    host.write_registry(&key, Some("Long"), &RegistryData::String(long.clone())).unwrap();
    assert_eq!(host.read_registry(&key, Some("Long")).unwrap(), Some(RegistryData::String(long)));
    host.write_registry(&key, Some("Empty"), &RegistryData::String(String::new())).unwrap();
    assert_eq!(host.read_registry(&key, Some("Empty")).unwrap(), Some(RegistryData::String(String::new())));
}

#[test]
fn missing_keys_read_as_absent() {
    let host = WindowsHost::new();
    let key = format!(r"{}\Nope", test_key("missing"));
    assert!(!host.registry_key_exists(&key).unwrap());
    assert_eq!(host.read_registry(&key, Some("Value")).unwrap(), None);
    assert!(host.registry_key_exists("SOFTWARE").unwrap());
}
