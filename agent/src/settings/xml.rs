//! XML settings files, handled conservatively: either one element per key under the root
//! (`<PortNumber>8391</PortNumber>`) or `<add key="PortNumber" value="8391" />` entries. quick-xml
//! tokenises the file; edits splice the original text at token positions, so comments, the
//! declaration, indentation and line endings stay as they were. Any other shape is refused.

use std::ops::Range;

use quick_xml::events::Event;
use quick_xml::reader::Reader;

use super::{SettingValue, SettingsError};

/// One markup token with its byte span in the text and its nesting depth.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub kind: TokenKind,
    pub span: Range<usize>,
    /// Depth of the element a Start/Empty/End belongs to (root = 0); for text, the depth of the
    /// enclosing element's children.
    pub depth: usize,
    /// Element name for Start/Empty/End.
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenKind {
    Start,
    Empty,
    End,
    /// Text, entity reference or CDATA.
    Content,
    Other,
}

/// Tokenise an XML document (the BOM already removed).
pub(crate) fn tokenize(text: &str) -> Result<Vec<Token>, SettingsError> {
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(false);
    reader.config_mut().check_end_names = true;
    let mut tokens = Vec::new();
    let mut depth = 0usize;
    let mut roots = 0usize;
    loop {
        let start = reader.buffer_position() as usize;
        let event = reader
            .read_event()
            .map_err(|error| SettingsError::Xml(format!("{error} at byte {}", reader.error_position())))?;
        let end = reader.buffer_position() as usize;
        let (kind, token_depth, name) = match &event {
            Event::Eof => break,
            Event::Start(element) => {
                if depth == 0 {
                    roots += 1;
                }
                depth += 1;
                (TokenKind::Start, depth - 1, element.name().as_ref().to_string())
            }
            Event::Empty(element) => {
                if depth == 0 {
                    roots += 1;
                }
                (TokenKind::Empty, depth, element.name().as_ref().to_string())
            }
            Event::End(element) => {
                depth = depth.saturating_sub(1);
                (TokenKind::End, depth, element.name().as_ref().to_string())
            }
            Event::Text(_) | Event::GeneralRef(_) | Event::CData(_) => (TokenKind::Content, depth, String::new()),
            _ => (TokenKind::Other, depth, String::new()),
        };
        tokens.push(Token { kind, span: start..end, depth: token_depth, name });
    }
    if depth != 0 {
        return Err(SettingsError::Xml("the document ends inside an element".into()));
    }
    if roots != 1 {
        return Err(SettingsError::Xml(format!("expected exactly one root element, found {roots}")));
    }
    Ok(tokens)
}

/// Decoded text of the content tokens between two positions (entities and CDATA resolved).
pub(crate) fn content_text(text: &str, range: Range<usize>) -> Result<String, SettingsError> {
    let slice = &text[range];
    let mut reader = Reader::from_str(slice);
    reader.config_mut().trim_text(false);
    let mut out = String::new();
    loop {
        match reader.read_event().map_err(|error| SettingsError::Xml(error.to_string()))? {
            Event::Eof => break,
            Event::Text(text) => out.push_str(&text.xml10_content()),
            Event::CData(data) => out.push_str(&data.xml10_content()),
            Event::GeneralRef(reference) => {
                if let Some(c) = reference.resolve_char_ref().map_err(|error| SettingsError::Xml(error.to_string()))? {
                    out.push(c);
                } else {
                    let name = reference.into_inner();
                    out.push_str(match name.as_ref() {
                        "amp" => "&",
                        "lt" => "<",
                        "gt" => ">",
                        "quot" => "\"",
                        "apos" => "'",
                        other => return Err(SettingsError::Xml(format!("undefined entity &{other};"))),
                    });
                }
            }
            Event::Comment(_) => {}
            _ => return Err(SettingsError::XmlShape("a setting value contains markup".into())),
        }
    }
    Ok(out)
}

/// Escape text for element content or a double-quoted attribute.
pub(crate) fn escape(value: &str) -> String {
    quick_xml::escape::escape(value).into_owned()
}

/// An attribute inside a start tag: its name and the span of its value (inside the quotes),
/// relative to the text.
#[derive(Debug)]
pub(crate) struct RawAttribute {
    pub name: String,
    pub value_span: Range<usize>,
}

/// Scan the attributes of a start/empty tag at `span` (`<name a="1" b='2'>`).
pub(crate) fn attributes(text: &str, span: Range<usize>) -> Result<Vec<RawAttribute>, SettingsError> {
    let tag = &text[span.clone()];
    let bytes = tag.as_bytes();
    let mut pos = 1;
    while pos < bytes.len() && !bytes[pos].is_ascii_whitespace() && bytes[pos] != b'>' && bytes[pos] != b'/' {
        pos += 1;
    }
    let mut found = Vec::new();
    loop {
        while pos < bytes.len() && bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if pos >= bytes.len() || bytes[pos] == b'>' || bytes[pos] == b'/' {
            return Ok(found);
        }
        let name_start = pos;
        while pos < bytes.len() && !bytes[pos].is_ascii_whitespace() && bytes[pos] != b'=' {
            pos += 1;
        }
        let name = tag[name_start..pos].to_string();
        while pos < bytes.len() && bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if bytes.get(pos) != Some(&b'=') {
            return Err(SettingsError::Xml(format!("attribute {name} has no value")));
        }
        pos += 1;
        while pos < bytes.len() && bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        let quote = match bytes.get(pos) {
            Some(q @ (b'"' | b'\'')) => *q,
            _ => return Err(SettingsError::Xml(format!("attribute {name} is not quoted"))),
        };
        pos += 1;
        let value_start = pos;
        while pos < bytes.len() && bytes[pos] != quote {
            pos += 1;
        }
        if pos >= bytes.len() {
            return Err(SettingsError::Xml(format!("attribute {name} is not terminated")));
        }
        found.push(RawAttribute { name, value_span: span.start + value_start..span.start + pos });
        pos += 1;
    }
}

/// Decode an attribute value (entities resolved).
pub(crate) fn attribute_value(text: &str, span: Range<usize>) -> Result<String, SettingsError> {
    quick_xml::escape::unescape(&text[span])
        .map(|value| value.into_owned())
        .map_err(|error| SettingsError::Xml(error.to_string()))
}

/// Index of the End token matching the Start token at `start_index`.
pub(crate) fn matching_end(tokens: &[Token], start_index: usize) -> usize {
    let depth = tokens[start_index].depth;
    tokens[start_index + 1..]
        .iter()
        .position(|token| token.kind == TokenKind::End && token.depth == depth)
        .map(|offset| start_index + 1 + offset)
        .unwrap_or(tokens.len() - 1)
}

fn local_name(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

/// Where a key's value lives in the file.
enum KeyLocation {
    /// `<Key>value</Key>`: the span between the start and end tags.
    Element { content: Range<usize> },
    /// `<Key/>`: an empty element (value empty); the span of the whole tag.
    EmptyElement { tag: Range<usize> },
    /// `<add key="Key" value="..."/>`: the span of the value attribute's text.
    AddAttribute { value: Range<usize> },
    /// `<add key="Key"/>` without a value attribute: insert one before the tag end.
    AddWithoutValue { insert_at: usize },
}

enum Shape {
    /// `root_end`: start of the root's end tag; `last_child`: start of its last child element.
    ElementPerKey { root_end: usize, last_child: Option<usize> },
    /// `parent_end`: start of the parent's end tag; `last_add`: start of the last `<add>`.
    AddKeyValue { parent_end: usize, last_add: usize },
}

fn analyse(text: &str, tokens: &[Token], key: &str) -> Result<(Shape, Vec<KeyLocation>), SettingsError> {
    let add_tokens: Vec<usize> = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| matches!(t.kind, TokenKind::Start | TokenKind::Empty) && local_name(&t.name) == "add")
        .map(|(index, _)| index)
        .collect();
    if !add_tokens.is_empty() {
        return analyse_add_shape(text, tokens, &add_tokens, key);
    }
    let root_index = tokens
        .iter()
        .position(|t| matches!(t.kind, TokenKind::Start | TokenKind::Empty) && t.depth == 0)
        .ok_or_else(|| SettingsError::Xml("no root element".into()))?;
    if tokens[root_index].kind == TokenKind::Empty {
        return Err(SettingsError::XmlShape(format!(
            "the root element <{}/> is empty, so the file's shape cannot be told",
            tokens[root_index].name
        )));
    }
    let root_end_index = matching_end(tokens, root_index);
    let mut locations = Vec::new();
    let mut index = root_index + 1;
    while index < root_end_index {
        let token = &tokens[index];
        match token.kind {
            TokenKind::Start if token.depth == 1 => {
                let end_index = matching_end(tokens, index);
                if tokens[index + 1..end_index]
                    .iter()
                    .any(|t| t.kind != TokenKind::Content && t.kind != TokenKind::Other)
                {
                    return Err(SettingsError::XmlShape(format!(
                        "<{}> under the root has child elements (neither element-per-key nor <add key value>)",
                        token.name
                    )));
                }
                if token.name == key || token.name.eq_ignore_ascii_case(key) {
                    locations.push(KeyLocation::Element { content: token.span.end..tokens[end_index].span.start });
                }
                index = end_index + 1;
            }
            TokenKind::Empty if token.depth == 1 => {
                if token.name == key || token.name.eq_ignore_ascii_case(key) {
                    locations.push(KeyLocation::EmptyElement { tag: token.span.clone() });
                }
                index += 1;
            }
            _ => index += 1,
        }
    }
    let last_child = tokens[root_index + 1..root_end_index]
        .iter()
        .rev()
        .find(|t| matches!(t.kind, TokenKind::Start | TokenKind::Empty) && t.depth == 1)
        .map(|t| t.span.start);
    Ok((Shape::ElementPerKey { root_end: tokens[root_end_index].span.start, last_child }, locations))
}

fn analyse_add_shape(
    text: &str,
    tokens: &[Token],
    add_tokens: &[usize],
    key: &str,
) -> Result<(Shape, Vec<KeyLocation>), SettingsError> {
    let add_depth = tokens[add_tokens[0]].depth;
    if add_depth == 0 || add_tokens.iter().any(|&i| tokens[i].depth != add_depth) {
        return Err(SettingsError::XmlShape("<add> elements appear at different levels".into()));
    }
    // The parent: the nearest Start before the first <add> one level up; all <add> share it.
    let parent_index = (0..add_tokens[0])
        .rev()
        .find(|&i| tokens[i].kind == TokenKind::Start && tokens[i].depth == add_depth - 1)
        .ok_or_else(|| SettingsError::Xml("<add> without a parent element".into()))?;
    let parent_end_index = matching_end(tokens, parent_index);
    if add_tokens.iter().any(|&i| i > parent_end_index) {
        return Err(SettingsError::XmlShape("<add> elements are spread over several parent elements".into()));
    }
    let mut locations = Vec::new();
    for &index in add_tokens {
        let attributes = attributes(text, tokens[index].span.clone())?;
        let key_attribute = attributes
            .iter()
            .find(|a| a.name == "key")
            .ok_or_else(|| SettingsError::XmlShape("an <add> element has no key attribute".into()))?;
        let found_key = attribute_value(text, key_attribute.value_span.clone())?;
        if found_key != key && !found_key.eq_ignore_ascii_case(key) {
            continue;
        }
        match attributes.iter().find(|a| a.name == "value") {
            Some(value) => locations.push(KeyLocation::AddAttribute { value: value.value_span.clone() }),
            None => {
                let tag = &tokens[index].span;
                let tag_text = &text[tag.clone()];
                let close = if tag_text.ends_with("/>") { 2 } else { 1 };
                let insert_at = tag.start + tag_text[..tag_text.len() - close].trim_end().len();
                locations.push(KeyLocation::AddWithoutValue { insert_at });
            }
        }
        if tokens[index].kind == TokenKind::Start {
            let end_index = matching_end(tokens, index);
            if end_index > index + 1 && tokens[index + 1..end_index].iter().any(|t| t.kind != TokenKind::Content) {
                return Err(SettingsError::XmlShape("an <add> element has child elements".into()));
            }
        }
    }
    let last_add = tokens[add_tokens[add_tokens.len() - 1]].span.start;
    Ok((Shape::AddKeyValue { parent_end: tokens[parent_end_index].span.start, last_add }, locations))
}

fn single(key: &str, locations: Vec<KeyLocation>) -> Result<Option<KeyLocation>, SettingsError> {
    if locations.len() > 1 {
        return Err(SettingsError::DuplicateKey(key.to_string()));
    }
    Ok(locations.into_iter().next())
}

pub(super) fn read_value(text: &str, key: &str) -> Result<Option<String>, SettingsError> {
    let tokens = tokenize(text)?;
    let (_, locations) = analyse(text, &tokens, key)?;
    match single(key, locations)? {
        None => Ok(None),
        Some(KeyLocation::Element { content }) => content_text(text, content).map(Some),
        Some(KeyLocation::EmptyElement { .. }) | Some(KeyLocation::AddWithoutValue { .. }) => Ok(Some(String::new())),
        Some(KeyLocation::AddAttribute { value }) => attribute_value(text, value).map(Some),
    }
}

/// Indentation of the line holding `pos` (blanks between the previous line break and `pos`).
pub(crate) fn indentation_before(text: &str, pos: usize) -> &str {
    let line_start = text[..pos].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let prefix = &text[line_start..pos];
    if prefix.chars().all(|c| c == ' ' || c == '\t') { prefix } else { "" }
}

pub(super) fn set_value(text: &str, key: &str, value: &SettingValue) -> Result<String, SettingsError> {
    let tokens = tokenize(text)?;
    let (shape, locations) = analyse(text, &tokens, key)?;
    let desired = value.as_plain_text();
    let escaped = escape(&desired);
    let splice = |range: Range<usize>, with: &str| format!("{}{}{}", &text[..range.start], with, &text[range.end..]);
    match single(key, locations)? {
        Some(KeyLocation::Element { content }) => {
            if content_text(text, content.clone())? == desired {
                return Ok(text.to_string());
            }
            Ok(splice(content, &escaped))
        }
        Some(KeyLocation::EmptyElement { tag }) => {
            if desired.is_empty() {
                return Ok(text.to_string());
            }
            Ok(splice(tag, &format!("<{key}>{escaped}</{key}>")))
        }
        Some(KeyLocation::AddAttribute { value: span }) => {
            if attribute_value(text, span.clone())? == desired {
                return Ok(text.to_string());
            }
            Ok(splice(span, &escaped))
        }
        Some(KeyLocation::AddWithoutValue { insert_at }) => {
            Ok(splice(insert_at..insert_at, &format!(" value=\"{escaped}\"")))
        }
        None => {
            let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
            let (insert_at, element, last_child) = match shape {
                Shape::ElementPerKey { root_end, last_child } => {
                    (root_end, format!("<{key}>{escaped}</{key}>"), last_child)
                }
                Shape::AddKeyValue { parent_end, last_add } => {
                    (parent_end, format!("<add key=\"{}\" value=\"{escaped}\" />", escape(key)), Some(last_add))
                }
            };
            let closing_indent = indentation_before(text, insert_at);
            let child_indent = match last_child {
                Some(child) => indentation_before(text, child).to_string(),
                None => format!("{closing_indent}  "),
            };
            // On its own line just before the closing tag's line when the closing tag starts a line.
            let line_start = insert_at - closing_indent.len();
            if line_start == 0 || text[..line_start].ends_with('\n') {
                Ok(splice(line_start..line_start, &format!("{child_indent}{element}{newline}")))
            } else {
                Ok(splice(insert_at..insert_at, &format!("{newline}{child_indent}{element}{newline}")))
            }
        }
    }
}
