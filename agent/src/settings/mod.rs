//! Editing the SSIS settings files on bytes: MasterSettings.config, WorkerSettings.config
//! (reference §2, §3) and the legacy MsDtsSrvr.ini.xml (reference §4).
//!
//! Every function here is pure. The agent changes only the keys it owns and keeps everything else —
//! other keys, their order, comments, indentation, line endings and a UTF-8 byte-order mark — as it
//! found it. Editing a file that already holds the desired values returns the input bytes unchanged,
//! which is what makes a converged host see zero writes.

mod json;
pub mod legacy_ini;
mod xml;

use std::collections::BTreeMap;

use ssis_crds::{MasterSettings, WorkerSettings};

/// Owned keys of MasterSettings.config (reference §2): the agent changes nothing else.
pub const MASTER_OWNED_KEYS: [&str; 3] = ["SqlServerName", "SSLCertThumbprint", "PortNumber"];
/// Owned keys of WorkerSettings.config (reference §3).
pub const WORKER_OWNED_KEYS: [&str; 3] = ["MasterEndpoint", "MasterHttpsCertThumbprint", "WorkerHttpsCertThumbprint"];
/// The worker's identity in `catalog.worker_agents` (reference §3); read, never written.
pub const AGENT_ID_KEY: &str = "AgentId";

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Why a settings file could not be read or edited. Messages name the file problem and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("the file is not UTF-8 ({0}); save it as UTF-8 (with or without BOM)")]
    Encoding(String),
    #[error("the file is empty or blank; restore it from the installation or delete it so the agent recreates it")]
    Empty,
    #[error(
        "unrecognised format: the first non-blank character is {0:?}, expected '{{' (JSON) or '<' (XML); fix or restore the file"
    )]
    UnknownFormat(char),
    #[error("invalid JSON at byte {offset}: {problem}; fix the file by hand or restore it")]
    Json { offset: usize, problem: String },
    #[error("invalid XML: {0}; fix the file by hand or restore it")]
    Xml(String),
    #[error("unsupported XML shape: {0}; the agent edits only element-per-key or <add key=\"..\" value=\"..\"/> files")]
    XmlShape(String),
    #[error("key {0} appears more than once; remove the duplicate so the service and the agent agree on its value")]
    DuplicateKey(String),
}

/// How a settings file is encoded, detected from its first non-blank character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingsFormat {
    /// `{`: Json.NET style, the most likely real format (reference §2.1, unconfirmed).
    Json,
    /// `<`: element-per-key or `<add key value>`.
    Xml,
}

impl SettingsFormat {
    /// The name used in `ObservedSettings.format`.
    pub fn as_str(self) -> &'static str {
        match self {
            SettingsFormat::Json => "Json",
            SettingsFormat::Xml => "Xml",
        }
    }
}

/// A value the agent writes for an owned key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettingValue {
    /// Written as a JSON string / XML text.
    Text(String),
    /// Written as a JSON number (or a string when the file already holds the key as a string).
    Integer(i64),
}

impl SettingValue {
    /// The value as it reads back from a file (what `read_values` returns).
    pub fn as_plain_text(&self) -> String {
        match self {
            SettingValue::Text(text) => text.clone(),
            SettingValue::Integer(number) => number.to_string(),
        }
    }
}

/// Owned key/value pairs of MasterSettings.config for a spec (reference §2, HA step 5 of §6).
pub fn master_owned_values(spec: &MasterSettings) -> Vec<(&'static str, SettingValue)> {
    vec![
        ("SqlServerName", SettingValue::Text(spec.sql_server_name.clone())),
        ("SSLCertThumbprint", SettingValue::Text(spec.ssl_cert_thumbprint.clone())),
        ("PortNumber", SettingValue::Integer(i64::from(spec.port_number))),
    ]
}

/// Owned key/value pairs of WorkerSettings.config for a spec (reference §3, §8 step 5).
pub fn worker_owned_values(spec: &WorkerSettings) -> Vec<(&'static str, SettingValue)> {
    vec![
        ("MasterEndpoint", SettingValue::Text(spec.master_endpoint.clone())),
        ("MasterHttpsCertThumbprint", SettingValue::Text(spec.master_https_cert_thumbprint.clone())),
        ("WorkerHttpsCertThumbprint", SettingValue::Text(spec.worker_https_cert_thumbprint.clone())),
    ]
}

/// The text of a settings file with its UTF-8 BOM split off.
struct DecodedText<'a> {
    bom: bool,
    text: &'a str,
}

fn decode(bytes: &[u8]) -> Result<DecodedText<'_>, SettingsError> {
    if bytes.starts_with(b"\xFF\xFE") || bytes.starts_with(b"\xFE\xFF") {
        return Err(SettingsError::Encoding("it starts with a UTF-16 byte-order mark".into()));
    }
    let (bom, body) = match bytes.strip_prefix(UTF8_BOM) {
        Some(rest) => (true, rest),
        None => (false, bytes),
    };
    let text = std::str::from_utf8(body)
        .map_err(|error| SettingsError::Encoding(format!("invalid UTF-8 at byte {}", error.valid_up_to())))?;
    Ok(DecodedText { bom, text })
}

fn encode(bom: bool, text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 3);
    if bom {
        out.extend_from_slice(UTF8_BOM);
    }
    out.extend_from_slice(text.as_bytes());
    out
}

/// Detect the format from the first non-blank character.
pub fn detect_format(bytes: &[u8]) -> Result<SettingsFormat, SettingsError> {
    let decoded = decode(bytes)?;
    match decoded.text.trim_start().chars().next() {
        None => Err(SettingsError::Empty),
        Some('{') => Ok(SettingsFormat::Json),
        Some('<') => Ok(SettingsFormat::Xml),
        Some(other) => Err(SettingsError::UnknownFormat(other)),
    }
}

/// Read the given keys; keys absent from the file are absent from the map.
pub fn read_values(bytes: &[u8], keys: &[&str]) -> Result<(SettingsFormat, BTreeMap<String, String>), SettingsError> {
    let format = detect_format(bytes)?;
    let decoded = decode(bytes)?;
    let mut values = BTreeMap::new();
    for key in keys {
        let found = match format {
            SettingsFormat::Json => json::read_value(decoded.text, key)?,
            SettingsFormat::Xml => xml::read_value(decoded.text, key)?,
        };
        if let Some(value) = found {
            values.insert((*key).to_string(), value);
        }
    }
    Ok((format, values))
}

/// Set the owned keys to the given values, adding missing keys at the end and leaving every other
/// byte alone. Returns the input unchanged when every value already matches.
pub fn apply_owned_values(bytes: &[u8], values: &[(&str, SettingValue)]) -> Result<Vec<u8>, SettingsError> {
    let format = detect_format(bytes)?;
    let decoded = decode(bytes)?;
    let mut text = decoded.text.to_string();
    for (key, value) in values {
        text = match format {
            SettingsFormat::Json => json::set_value(&text, key, value)?,
            SettingsFormat::Xml => xml::set_value(&text, key, value)?,
        };
    }
    if text == decoded.text {
        return Ok(bytes.to_vec());
    }
    Ok(encode(decoded.bom, &text))
}

/// Default MasterSettings.config used when the file is missing: the documented keys and defaults of
/// reference §2 in the likely Json.NET shape of §2.1. The owned keys are then set by the agent.
pub fn default_master_settings() -> String {
    concat!(
        "{\r\n",
        "  \"PortNumber\": 8391,\r\n",
        "  \"SSLCertThumbprint\": \"\",\r\n",
        "  \"SqlServerName\": \".\",\r\n",
        "  \"CleanupCompletedJobsIntervalInMs\": 43200000,\r\n",
        "  \"DealWithExpiredTasksIntervalInMs\": 300000,\r\n",
        "  \"MasterHeartbeatIntervalInMs\": 30000,\r\n",
        "  \"SqlConnectionTimeoutInSecs\": 15\r\n",
        "}\r\n"
    )
    .to_string()
}

/// Default WorkerSettings.config used when the file is missing: the documented keys and defaults of
/// reference §3 (keeping the documented spellings `HeartbeatErrorTollerance` / `LeaseInternval`).
/// Setup generates `AgentId` at install; a recreated file gets the id passed in.
pub fn default_worker_settings(display_name: &str, agent_id: &str) -> String {
    let display_name = json::encode_string(display_name);
    let agent_id = json::encode_string(agent_id);
    [
        "{".to_string(),
        format!("  \"DisplayName\": {display_name},"),
        "  \"Description\": \"\",".to_string(),
        "  \"MasterEndpoint\": \"\",".to_string(),
        "  \"MasterHttpsCertThumbprint\": \"\",".to_string(),
        "  \"WorkerHttpsCertThumbprint\": \"\",".to_string(),
        "  \"StoreLocation\": \"LocalMachine\",".to_string(),
        "  \"StoreName\": \"My\",".to_string(),
        "  \"AgentHeartbeatInterval\": \"00:01:00\",".to_string(),
        "  \"TaskHeartbeatInterval\": \"00:00:10\",".to_string(),
        "  \"HeartbeatErrorTollerance\": \"00:10:00\",".to_string(),
        "  \"TaskRequestMaxCPU\": 70.0,".to_string(),
        "  \"TaskRequestMinMemory\": 100.0,".to_string(),
        "  \"MaxTaskCount\": 10,".to_string(),
        "  \"LeaseInternval\": \"00:01:00\",".to_string(),
        "  \"TasksRootFolder\": \"\",".to_string(),
        "  \"TaskLogLevel\": 126,".to_string(),
        "  \"TaskLogSegment\": \"00:00:00\",".to_string(),
        "  \"TaskLogEnabled\": true,".to_string(),
        "  \"ExecutionLogCacheFolder\": \"\",".to_string(),
        "  \"ExecutionLogMaxBufferLogCount\": 10000,".to_string(),
        "  \"ExecutionLogMaxInMemoryBufferCount\": 10,".to_string(),
        "  \"ExecutionLogRetryCount\": 3,".to_string(),
        "  \"ExecutionLogRetryTimeout\": \"7.00:00:00\",".to_string(),
        format!("  \"AgentId\": {agent_id}"),
        "}".to_string(),
    ]
    .join("\r\n")
        + "\r\n"
}

#[cfg(test)]
mod tests;
