use ssis_crds::LegacyFolder;

use super::legacy_ini::{apply_legacy_ini, default_legacy_ini, read_legacy_ini};
use super::*;

const THUMB: &str = "0123456789ABCDEF0123456789ABCDEF01234567";

fn master_values(server: &str) -> Vec<(&'static str, SettingValue)> {
    master_owned_values(&MasterSettings {
        sql_server_name: server.into(),
        ssl_cert_thumbprint: THUMB.into(),
        port_number: 8391,
    })
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

#[test]
fn format_is_detected_from_first_non_blank_character() {
    assert_eq!(detect_format(b"  \r\n{}"), Ok(SettingsFormat::Json));
    assert_eq!(detect_format(b"\xEF\xBB\xBF<a/>"), Ok(SettingsFormat::Xml));
    assert_eq!(detect_format(b"   "), Err(SettingsError::Empty));
    assert_eq!(detect_format(b"PortNumber=1"), Err(SettingsError::UnknownFormat('P')));
    assert!(matches!(detect_format(b"\xFF\xFE{\x00"), Err(SettingsError::Encoding(_))));
}

#[test]
fn json_edit_changes_only_owned_values_and_keeps_everything_else() {
    let input = "{\r\n  \"PortNumber\": 8391,\r\n  \"SSLCertThumbprint\": \"OLD\",\r\n  \"SqlServerName\": \"node1\",\r\n  \"CleanupCompletedJobsIntervalInMs\": 43200000,\r\n  \"Unknown\": {\"nested\": [1, 2]}\r\n}\r\n";
    let output = apply_owned_values(input.as_bytes(), &master_values(r"agl-ssis,1433")).unwrap();
    let expected = format!(
        "{{\r\n  \"PortNumber\": 8391,\r\n  \"SSLCertThumbprint\": \"{THUMB}\",\r\n  \"SqlServerName\": \"agl-ssis,1433\",\r\n  \"CleanupCompletedJobsIntervalInMs\": 43200000,\r\n  \"Unknown\": {{\"nested\": [1, 2]}}\r\n}}\r\n"
    );
    assert_eq!(text(&output), expected);
    // Second application is a no-op returning identical bytes.
    assert_eq!(apply_owned_values(&output, &master_values("agl-ssis,1433")).unwrap(), output);
}

#[test]
fn json_backslashes_are_escaped_and_read_back_decoded() {
    let input = br#"{"SqlServerName": "old", "PortNumber": 1}"#;
    let output = apply_owned_values(input, &master_values(r"Server\Instance")).unwrap();
    assert!(text(&output).contains(r#""SqlServerName": "Server\\Instance""#), "{}", text(&output));
    let (_, values) = read_values(&output, &MASTER_OWNED_KEYS).unwrap();
    assert_eq!(values["SqlServerName"], r"Server\Instance");
    // An equal value written with different escapes is not rewritten.
    let escaped = br#"{"SqlServerName": "Server\u005cInstance", "SSLCertThumbprint": "0123456789ABCDEF0123456789ABCDEF01234567", "PortNumber": 8391}"#;
    assert_eq!(apply_owned_values(escaped, &master_values(r"Server\Instance")).unwrap(), escaped.to_vec());
}

#[test]
fn json_missing_keys_are_appended_with_the_file_style_and_bom_kept() {
    let input = "\u{feff}{\n    \"CleanupCompletedJobsIntervalInMs\": 43200000,\n    \"PortNumber\": 8391\n}";
    let output = apply_owned_values(input.as_bytes(), &master_values("agl,1433")).unwrap();
    assert!(output.starts_with(b"\xEF\xBB\xBF"));
    assert_eq!(
        text(&output[3..]),
        format!(
            "{{\n    \"CleanupCompletedJobsIntervalInMs\": 43200000,\n    \"PortNumber\": 8391,\n    \"SqlServerName\": \"agl,1433\",\n    \"SSLCertThumbprint\": \"{THUMB}\"\n}}"
        )
    );
}

#[test]
fn json_empty_object_and_comments_and_string_port() {
    let output = apply_owned_values(b"{}", &[("PortNumber", SettingValue::Integer(8391))]).unwrap();
    assert_eq!(text(&output), "{\n  \"PortNumber\": 8391\n}");
    let commented = "{\n  // the port\n  \"PortNumber\": \"8000\" /* as string */\n}";
    let output = apply_owned_values(commented.as_bytes(), &[("PortNumber", SettingValue::Integer(8391))]).unwrap();
    assert_eq!(text(&output), "{\n  // the port\n  \"PortNumber\": \"8391\" /* as string */\n}");
}

#[test]
fn json_duplicates_and_broken_files_are_refused() {
    let duplicate = br#"{"PortNumber": 1, "portnumber": 2}"#;
    assert_eq!(
        apply_owned_values(duplicate, &[("PortNumber", SettingValue::Integer(3))]).unwrap_err(),
        SettingsError::DuplicateKey("PortNumber".into())
    );
    let broken = br#"{"PortNumber": 1,, }"#;
    let error = apply_owned_values(broken, &[("PortNumber", SettingValue::Integer(3))]).unwrap_err();
    assert!(matches!(error, SettingsError::Json { .. }), "{error}");
    assert!(error.to_string().contains("fix the file"));
}

#[test]
fn json_case_insensitive_key_match_keeps_the_file_spelling() {
    let input = br#"{"portnumber": 1}"#;
    let output = apply_owned_values(input, &[("PortNumber", SettingValue::Integer(2))]).unwrap();
    assert_eq!(text(&output), r#"{"portnumber": 2}"#);
}

#[test]
fn worker_default_has_every_documented_key_and_reads_agent_id() {
    let file = default_worker_settings("W1", "8e1c8c7b-0000-4000-8000-000000000001");
    let (format, values) =
        read_values(file.as_bytes(), &["AgentId", "HeartbeatErrorTollerance", "TaskRequestMaxCPU"]).unwrap();
    assert_eq!(format, SettingsFormat::Json);
    assert_eq!(values["AgentId"], "8e1c8c7b-0000-4000-8000-000000000001");
    assert_eq!(values["HeartbeatErrorTollerance"], "00:10:00");
    assert_eq!(values["TaskRequestMaxCPU"], "70.0");
    let spec = WorkerSettings {
        master_endpoint: "https://ssis-master.corp.local:8391".into(),
        master_https_cert_thumbprint: THUMB.into(),
        worker_https_cert_thumbprint: THUMB.into(),
    };
    let edited = apply_owned_values(file.as_bytes(), &worker_owned_values(&spec)).unwrap();
    let (_, values) = read_values(&edited, &WORKER_OWNED_KEYS).unwrap();
    assert_eq!(values["MasterEndpoint"], "https://ssis-master.corp.local:8391");
    // Only the three lines changed.
    let changed = file.lines().zip(text(&edited).lines()).filter(|(a, b)| a != b).count();
    assert_eq!(changed, 3);
    let master = default_master_settings();
    let (_, values) = read_values(master.as_bytes(), &["PortNumber", "MasterHeartbeatIntervalInMs"]).unwrap();
    assert_eq!(values["PortNumber"], "8391");
}

#[test]
fn xml_element_per_key_with_comments_and_crlf() {
    let input = "<?xml version=\"1.0\"?>\r\n<Settings>\r\n  <!-- port -->\r\n  <PortNumber>8000</PortNumber>\r\n  <SqlServerName>a&amp;b</SqlServerName>\r\n</Settings>\r\n";
    let (format, values) = read_values(input.as_bytes(), &MASTER_OWNED_KEYS).unwrap();
    assert_eq!(format, SettingsFormat::Xml);
    assert_eq!(values["SqlServerName"], "a&b");
    let output = apply_owned_values(input.as_bytes(), &master_values(r"x<y\z")).unwrap();
    assert_eq!(
        text(&output),
        format!(
            "<?xml version=\"1.0\"?>\r\n<Settings>\r\n  <!-- port -->\r\n  <PortNumber>8391</PortNumber>\r\n  <SqlServerName>x&lt;y\\z</SqlServerName>\r\n  <SSLCertThumbprint>{THUMB}</SSLCertThumbprint>\r\n</Settings>\r\n"
        )
    );
    assert_eq!(apply_owned_values(&output, &master_values(r"x<y\z")).unwrap(), output);
}

#[test]
fn xml_add_key_value_shape() {
    let input = "<configuration>\n  <appSettings>\n    <add key=\"PortNumber\" value=\"8000\" />\n    <add key=\"Other\" value=\"keep\"/>\n  </appSettings>\n</configuration>\n";
    let output = apply_owned_values(input.as_bytes(), &master_values("agl,1433")).unwrap();
    assert_eq!(
        text(&output),
        format!(
            "<configuration>\n  <appSettings>\n    <add key=\"PortNumber\" value=\"8391\" />\n    <add key=\"Other\" value=\"keep\"/>\n    <add key=\"SqlServerName\" value=\"agl,1433\" />\n    <add key=\"SSLCertThumbprint\" value=\"{THUMB}\" />\n  </appSettings>\n</configuration>\n"
        )
    );
    let (_, values) = read_values(&output, &MASTER_OWNED_KEYS).unwrap();
    assert_eq!(values["PortNumber"], "8391");
}

#[test]
fn xml_unknown_shapes_are_refused_not_guessed() {
    let user_settings = "<configuration><userSettings><setting name=\"PortNumber\"><value>1</value></setting></userSettings></configuration>";
    let error = apply_owned_values(user_settings.as_bytes(), &master_values("a")).unwrap_err();
    assert!(matches!(error, SettingsError::XmlShape(_)), "{error}");
    let broken = "<Settings><PortNumber>1</Port></Settings>";
    assert!(matches!(apply_owned_values(broken.as_bytes(), &master_values("a")), Err(SettingsError::Xml(_))));
}

fn folders() -> Vec<LegacyFolder> {
    vec![
        LegacyFolder { name: "MSDB-NODE1".into(), server_name: Some(r"NODE1\SSIS".into()), store_path: None },
        LegacyFolder { name: "MSDB-NODE2".into(), server_name: Some("NODE2".into()), store_path: None },
        LegacyFolder { name: "File System".into(), server_name: None, store_path: Some(r"..\Packages".into()) },
    ]
}

#[test]
fn legacy_default_reads_as_the_reference_says() {
    let content = read_legacy_ini(default_legacy_ini().as_bytes()).unwrap();
    assert_eq!(content.stop_executing_packages_on_shutdown, Some(true));
    assert_eq!(
        content.folders.unwrap(),
        vec![
            LegacyFolder { name: "MSDB".into(), server_name: Some(".".into()), store_path: None },
            LegacyFolder { name: "File System".into(), server_name: None, store_path: Some(r"..\Packages".into()) },
        ]
    );
}

#[test]
fn legacy_rewrite_keeps_other_elements_and_writes_folders_like_the_reference() {
    let input = default_legacy_ini().replace(
        "  <TopLevelFolders>",
        "  <!-- managed by hand before -->\r\n  <ExtraSetting>keep</ExtraSetting>\r\n  <TopLevelFolders>",
    );
    let output = apply_legacy_ini(input.as_bytes(), false, &folders()).unwrap();
    let expected = [
        r#"<?xml version="1.0" encoding="utf-8"?>"#,
        r#"<DtsServiceConfiguration xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">"#,
        r#"  <StopExecutingPackagesOnShutdown>false</StopExecutingPackagesOnShutdown>"#,
        r#"  <!-- managed by hand before -->"#,
        r#"  <ExtraSetting>keep</ExtraSetting>"#,
        r#"  <TopLevelFolders>"#,
        r#"    <Folder xsi:type="SqlServerFolder">"#,
        r#"      <Name>MSDB-NODE1</Name>"#,
        r#"      <ServerName>NODE1\SSIS</ServerName>"#,
        r#"    </Folder>"#,
        r#"    <Folder xsi:type="SqlServerFolder">"#,
        r#"      <Name>MSDB-NODE2</Name>"#,
        r#"      <ServerName>NODE2</ServerName>"#,
        r#"    </Folder>"#,
        r#"    <Folder xsi:type="FileSystemFolder">"#,
        r#"      <Name>File System</Name>"#,
        r#"      <StorePath>..\Packages</StorePath>"#,
        r#"    </Folder>"#,
        r#"  </TopLevelFolders>"#,
        r#"</DtsServiceConfiguration>"#,
    ]
    .join("\r\n")
        + "\r\n";
    assert_eq!(text(&output), expected);
    assert_eq!(apply_legacy_ini(&output, false, &folders()).unwrap(), output, "second pass changes nothing");
    let content = read_legacy_ini(&output).unwrap();
    assert_eq!(content.folders.unwrap(), folders());
}

#[test]
fn legacy_missing_elements_and_namespace_are_added() {
    let input = "<DtsServiceConfiguration>\n</DtsServiceConfiguration>\n";
    let output = apply_legacy_ini(input.as_bytes(), true, &folders()[..1]).unwrap();
    assert_eq!(
        text(&output),
        "<DtsServiceConfiguration xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\n  <StopExecutingPackagesOnShutdown>true</StopExecutingPackagesOnShutdown>\n  <TopLevelFolders>\n    <Folder xsi:type=\"SqlServerFolder\">\n      <Name>MSDB-NODE1</Name>\n      <ServerName>NODE1\\SSIS</ServerName>\n    </Folder>\n  </TopLevelFolders>\n</DtsServiceConfiguration>\n"
    );
    let wrong_root = "<Other/>";
    assert!(matches!(apply_legacy_ini(wrong_root.as_bytes(), true, &[]), Err(SettingsError::XmlShape(_))));
}
