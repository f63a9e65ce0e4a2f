//! MsDtsSrvr.ini.xml, the legacy SSIS service's configuration (reference §4). The agent owns
//! `StopExecutingPackagesOnShutdown` and `TopLevelFolders`; every other element, comment and the
//! declaration are kept. Folders are written exactly in the shape of the reference's default file
//! (`<Folder xsi:type="SqlServerFolder">` with `Name` + `ServerName`, `FileSystemFolder` with
//! `Name` + `StorePath`).

use ssis_crds::LegacyFolder;

use super::xml::{
    TokenKind, attribute_value, attributes, content_text, escape, indentation_before, matching_end, tokenize,
};
use super::{SettingsError, decode, encode};

const ROOT: &str = "DtsServiceConfiguration";
const XSI_NAMESPACE: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// The default file written by setup, verbatim from reference §4 (CRLF line ends, as Windows
/// setup writes them).
pub fn default_legacy_ini() -> String {
    [
        r#"<?xml version="1.0" encoding="utf-8"?>"#,
        r#"<DtsServiceConfiguration xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">"#,
        r#"  <StopExecutingPackagesOnShutdown>true</StopExecutingPackagesOnShutdown>"#,
        r#"  <TopLevelFolders>"#,
        r#"    <Folder xsi:type="SqlServerFolder">"#,
        r#"      <Name>MSDB</Name>"#,
        r#"      <ServerName>.</ServerName>"#,
        r#"    </Folder>"#,
        r#"    <Folder xsi:type="FileSystemFolder">"#,
        r#"      <Name>File System</Name>"#,
        r#"      <StorePath>..\Packages</StorePath>"#,
        r#"    </Folder>"#,
        r#"  </TopLevelFolders>"#,
        r#"</DtsServiceConfiguration>"#,
    ]
    .join("\r\n")
        + "\r\n"
}

/// What the agent owns in the file, as found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LegacyIniContent {
    pub stop_executing_packages_on_shutdown: Option<bool>,
    /// `None` when `TopLevelFolders` is missing or holds a folder of an unknown `xsi:type`.
    pub folders: Option<Vec<LegacyFolder>>,
}

struct Layout {
    root_start: usize,
    root_end_tag: usize,
    /// Prefix bound to the XML-Schema-instance namespace on the root, if declared there.
    xsi_prefix: Option<String>,
    /// Span of the content of `StopExecutingPackagesOnShutdown`, or of the whole empty tag.
    stop: Option<(std::ops::Range<usize>, bool)>,
    /// Span of the whole `TopLevelFolders` element.
    folders: Option<std::ops::Range<usize>>,
    folders_parsed: Option<Vec<LegacyFolder>>,
}

fn layout(text: &str) -> Result<Layout, SettingsError> {
    let tokens = tokenize(text)?;
    let root_index = tokens
        .iter()
        .position(|t| matches!(t.kind, TokenKind::Start | TokenKind::Empty) && t.depth == 0)
        .ok_or_else(|| SettingsError::Xml("no root element".into()))?;
    let root = &tokens[root_index];
    if root.name != ROOT {
        return Err(SettingsError::XmlShape(format!("the root element is <{}>, expected <{ROOT}>", root.name)));
    }
    if root.kind == TokenKind::Empty {
        return Err(SettingsError::XmlShape(format!("<{ROOT}/> is empty; restore the default file")));
    }
    let mut xsi_prefix = None;
    for attribute in attributes(text, root.span.clone())? {
        if let Some(prefix) = attribute.name.strip_prefix("xmlns:")
            && attribute_value(text, attribute.value_span.clone())? == XSI_NAMESPACE
        {
            xsi_prefix = Some(prefix.to_string());
        }
    }
    let root_end_index = matching_end(&tokens, root_index);
    let mut result = Layout {
        root_start: root.span.start,
        root_end_tag: tokens[root_end_index].span.start,
        xsi_prefix,
        stop: None,
        folders: None,
        folders_parsed: None,
    };
    let mut index = root_index + 1;
    while index < root_end_index {
        let token = &tokens[index];
        if token.depth != 1 || !matches!(token.kind, TokenKind::Start | TokenKind::Empty) {
            index += 1;
            continue;
        }
        let end_index = if token.kind == TokenKind::Start { matching_end(&tokens, index) } else { index };
        match token.name.as_str() {
            "StopExecutingPackagesOnShutdown" => {
                if result.stop.is_some() {
                    return Err(SettingsError::DuplicateKey(token.name.clone()));
                }
                let (span, value) = if token.kind == TokenKind::Start {
                    let content = token.span.end..tokens[end_index].span.start;
                    let value = content_text(text, content.clone())?.trim().eq_ignore_ascii_case("true");
                    (content, value)
                } else {
                    (token.span.clone(), false)
                };
                result.stop = Some((span, value));
            }
            "TopLevelFolders" => {
                if result.folders.is_some() {
                    return Err(SettingsError::DuplicateKey(token.name.clone()));
                }
                result.folders = Some(token.span.start..tokens[end_index].span.end);
                result.folders_parsed = parse_folders(text, &tokens, index, end_index)?;
            }
            _ => {}
        }
        index = end_index + 1;
    }
    Ok(result)
}

fn parse_folders(
    text: &str,
    tokens: &[super::xml::Token],
    start_index: usize,
    end_index: usize,
) -> Result<Option<Vec<LegacyFolder>>, SettingsError> {
    let mut folders = Vec::new();
    let folder_depth = tokens[start_index].depth + 1;
    let mut index = start_index + 1;
    while index < end_index {
        let token = &tokens[index];
        if token.depth != folder_depth || !matches!(token.kind, TokenKind::Start | TokenKind::Empty) {
            index += 1;
            continue;
        }
        let folder_end = if token.kind == TokenKind::Start { matching_end(tokens, index) } else { index };
        let mut folder_type = String::new();
        for attribute in attributes(text, token.span.clone())? {
            if attribute.name == "type" || attribute.name.ends_with(":type") {
                folder_type = attribute_value(text, attribute.value_span)?;
            }
        }
        let mut folder = LegacyFolder::default();
        let mut child = index + 1;
        while child < folder_end {
            let element = &tokens[child];
            if element.kind == TokenKind::Start && element.depth == folder_depth + 1 {
                let element_end = matching_end(tokens, child);
                let value = content_text(text, element.span.end..tokens[element_end].span.start)?;
                match element.name.as_str() {
                    "Name" => folder.name = value,
                    "ServerName" => folder.server_name = Some(value),
                    "StorePath" => folder.store_path = Some(value),
                    _ => {}
                }
                child = element_end + 1;
            } else {
                child += 1;
            }
        }
        // The xsi:type decides which child counts; an unknown type makes the whole list
        // unrecognised, so the agent rewrites it from the spec.
        match folder_type.as_str() {
            "SqlServerFolder" => folder.store_path = None,
            "FileSystemFolder" => folder.server_name = None,
            _ => return Ok(None),
        }
        folders.push(folder);
        index = folder_end + 1;
    }
    Ok(Some(folders))
}

/// Read the owned parts of MsDtsSrvr.ini.xml.
pub fn read_legacy_ini(bytes: &[u8]) -> Result<LegacyIniContent, SettingsError> {
    let decoded = decode(bytes)?;
    let layout = layout(decoded.text)?;
    Ok(LegacyIniContent {
        stop_executing_packages_on_shutdown: layout.stop.map(|(_, value)| value),
        folders: layout.folders_parsed,
    })
}

fn render_folders(folders: &[LegacyFolder], indent: &str, unit: &str, newline: &str, xsi: &str) -> String {
    let mut out = format!("<TopLevelFolders>{newline}");
    for folder in folders {
        let (folder_type, child, value) = match (&folder.server_name, &folder.store_path) {
            (Some(server), _) => ("SqlServerFolder", "ServerName", server),
            (None, Some(path)) => ("FileSystemFolder", "StorePath", path),
            (None, None) => ("FileSystemFolder", "StorePath", &String::new()),
        };
        out.push_str(&format!("{indent}{unit}<Folder {xsi}:type=\"{folder_type}\">{newline}"));
        out.push_str(&format!("{indent}{unit}{unit}<Name>{}</Name>{newline}", escape(&folder.name)));
        out.push_str(&format!("{indent}{unit}{unit}<{child}>{}</{child}>{newline}", escape(value)));
        out.push_str(&format!("{indent}{unit}</Folder>{newline}"));
    }
    out.push_str(&format!("{indent}</TopLevelFolders>"));
    out
}

/// Set `StopExecutingPackagesOnShutdown` and `TopLevelFolders` (in spec order). Returns the input
/// unchanged when both already match.
pub fn apply_legacy_ini(
    bytes: &[u8],
    stop_on_shutdown: bool,
    folders: &[LegacyFolder],
) -> Result<Vec<u8>, SettingsError> {
    let decoded = decode(bytes)?;
    let mut text = decoded.text.to_string();
    let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let stop_value = if stop_on_shutdown { "true" } else { "false" };

    let current = layout(&text)?;
    if current.xsi_prefix.is_none() {
        // xsi:type needs the namespace declared; add it to the root start tag.
        let root_tag_end = text[current.root_start..].find('>').map(|i| current.root_start + i).unwrap_or(text.len());
        let insert_at = if text[..root_tag_end].ends_with('/') { root_tag_end - 1 } else { root_tag_end };
        text.insert_str(insert_at, &format!(" xmlns:xsi=\"{XSI_NAMESPACE}\""));
    }

    let current = layout(&text)?;
    let xsi = current.xsi_prefix.clone().unwrap_or_else(|| "xsi".to_string());
    let first_child_indent = {
        let probe = current.stop.as_ref().map(|(span, _)| span.start).or(current.folders.as_ref().map(|f| f.start));
        probe.map(|pos| {
            let tag_start = text[..pos].rfind('<').unwrap_or(pos);
            indentation_before(&text, tag_start).to_string()
        })
    };
    let unit = first_child_indent.clone().filter(|i| !i.is_empty()).unwrap_or_else(|| "  ".to_string());

    if current.folders_parsed.as_deref() != Some(folders) {
        let rendered_indent = match &current.folders {
            Some(span) => indentation_before(&text, span.start).to_string(),
            None => unit.clone(),
        };
        let rendered = render_folders(folders, &rendered_indent, &unit, newline, &xsi);
        match current.folders.clone() {
            Some(span) => text.replace_range(span, &rendered),
            None => {
                let closing_indent = indentation_before(&text, current.root_end_tag).len();
                let line_start = current.root_end_tag - closing_indent;
                let insertion = format!("{rendered_indent}{rendered}{newline}");
                if line_start == 0 || text[..line_start].ends_with('\n') {
                    text.insert_str(line_start, &insertion);
                } else {
                    text.insert_str(current.root_end_tag, &format!("{newline}{insertion}"));
                }
            }
        }
    }

    let current = layout(&text)?;
    match current.stop {
        Some((_, value)) if value == stop_on_shutdown => {}
        Some((span, _)) => {
            let is_empty_tag = text[span.clone()].starts_with('<');
            let replacement = if is_empty_tag {
                format!("<StopExecutingPackagesOnShutdown>{stop_value}</StopExecutingPackagesOnShutdown>")
            } else {
                stop_value.to_string()
            };
            text.replace_range(span, &replacement);
        }
        None => {
            // Before TopLevelFolders, where the default file has it.
            let anchor = current.folders.as_ref().map(|f| f.start).unwrap_or(current.root_end_tag);
            let indent = indentation_before(&text, anchor).to_string();
            let line_start = anchor - indent.len();
            let element = format!("<StopExecutingPackagesOnShutdown>{stop_value}</StopExecutingPackagesOnShutdown>");
            if line_start == 0 || text[..line_start].ends_with('\n') {
                let indent = if current.folders.is_some() { indent } else { unit.clone() };
                text.insert_str(line_start, &format!("{indent}{element}{newline}"));
            } else {
                text.insert_str(anchor, &format!("{element}{newline}"));
            }
        }
    }

    if text == decoded.text {
        return Ok(bytes.to_vec());
    }
    Ok(encode(decoded.bom, &text))
}
