//! Token-level editing of a Json.NET settings file: the top-level object is scanned for member
//! positions and only the value tokens of owned keys are replaced, so every other byte stays as it
//! was. Comments (`//`, `/* */`), which Json.NET accepts, are treated as blanks.

use std::ops::Range;

use super::{SettingValue, SettingsError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueKind {
    String,
    Other,
}

#[derive(Debug)]
struct Member {
    key: String,
    /// Just after the `{` or `,` that precedes this member.
    leading_start: usize,
    /// The key token including quotes.
    key_span: Range<usize>,
    value_span: Range<usize>,
    kind: ValueKind,
}

#[derive(Debug)]
struct TopLevelObject {
    open: usize,
    members: Vec<Member>,
}

struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn error<T>(&self, problem: impl Into<String>) -> Result<T, SettingsError> {
        Err(SettingsError::Json { offset: self.pos, problem: problem.into() })
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_blanks(&mut self) -> Result<(), SettingsError> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\r' | b'\n') => self.pos += 1,
                Some(b'/') if self.bytes.get(self.pos + 1) == Some(&b'/') => {
                    while let Some(byte) = self.peek() {
                        if byte == b'\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                Some(b'/') if self.bytes.get(self.pos + 1) == Some(&b'*') => {
                    match self.text[self.pos + 2..].find("*/") {
                        Some(end) => self.pos += 2 + end + 2,
                        None => return self.error("unterminated /* comment"),
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), SettingsError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            self.error(format!("expected '{}'", byte as char))
        }
    }

    /// A string token; returns its decoded value. `pos` ends after the closing quote.
    fn string(&mut self) -> Result<String, SettingsError> {
        let start = self.pos;
        self.expect(b'"')?;
        loop {
            match self.peek() {
                None => {
                    self.pos = start;
                    return self.error("unterminated string");
                }
                Some(b'\\') => self.pos += 2,
                Some(b'"') => {
                    self.pos += 1;
                    return decode_string(&self.text[start..self.pos])
                        .map_err(|problem| SettingsError::Json { offset: start, problem });
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<ValueKind, SettingsError> {
        if depth > 64 {
            return self.error("nesting deeper than 64 levels");
        }
        match self.peek() {
            Some(b'"') => {
                self.string()?;
                Ok(ValueKind::String)
            }
            Some(b'{') => {
                self.pos += 1;
                self.skip_blanks()?;
                if self.peek() == Some(b'}') {
                    self.pos += 1;
                    return Ok(ValueKind::Other);
                }
                loop {
                    self.skip_blanks()?;
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                        return Ok(ValueKind::Other);
                    }
                    self.string()?;
                    self.skip_blanks()?;
                    self.expect(b':')?;
                    self.skip_blanks()?;
                    self.value(depth + 1)?;
                    self.skip_blanks()?;
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b'}') => {
                            self.pos += 1;
                            return Ok(ValueKind::Other);
                        }
                        _ => return self.error("expected ',' or '}' in object"),
                    }
                }
            }
            Some(b'[') => {
                self.pos += 1;
                loop {
                    self.skip_blanks()?;
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        return Ok(ValueKind::Other);
                    }
                    self.value(depth + 1)?;
                    self.skip_blanks()?;
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(ValueKind::Other);
                        }
                        _ => return self.error("expected ',' or ']' in array"),
                    }
                }
            }
            Some(byte) if byte == b'-' || byte.is_ascii_alphanumeric() || byte == b'.' || byte == b'+' => {
                let start = self.pos;
                while let Some(byte) = self.peek() {
                    if byte == b'-' || byte == b'+' || byte == b'.' || byte.is_ascii_alphanumeric() {
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                let token = &self.text[start..self.pos];
                let is_literal = matches!(token, "true" | "false" | "null");
                let is_number = token.parse::<f64>().is_ok()
                    && !token.chars().any(|c| c.is_ascii_alphabetic() && c != 'e' && c != 'E');
                if !is_literal && !is_number {
                    self.pos = start;
                    return self.error(format!("unexpected token {token:?}"));
                }
                Ok(ValueKind::Other)
            }
            _ => self.error("expected a value"),
        }
    }
}

fn scan(text: &str) -> Result<TopLevelObject, SettingsError> {
    let mut scanner = Scanner { text, bytes: text.as_bytes(), pos: 0 };
    scanner.skip_blanks()?;
    let open = scanner.pos;
    scanner.expect(b'{')?;
    let mut members = Vec::new();
    let mut leading_start = scanner.pos;
    loop {
        scanner.skip_blanks()?;
        if scanner.peek() == Some(b'}') {
            scanner.pos += 1;
            break;
        }
        let key_start = scanner.pos;
        let key = scanner.string()?;
        let key_span = key_start..scanner.pos;
        scanner.skip_blanks()?;
        scanner.expect(b':')?;
        scanner.skip_blanks()?;
        let value_start = scanner.pos;
        let kind = scanner.value(1)?;
        members.push(Member { key, leading_start, key_span, value_span: value_start..scanner.pos, kind });
        scanner.skip_blanks()?;
        match scanner.peek() {
            Some(b',') => {
                scanner.pos += 1;
                leading_start = scanner.pos;
            }
            Some(b'}') => {
                scanner.pos += 1;
                break;
            }
            _ => return scanner.error("expected ',' or '}' after a member of the top-level object"),
        }
    }
    scanner.skip_blanks()?;
    if scanner.pos != text.len() {
        return scanner.error("unexpected content after the top-level object");
    }
    Ok(TopLevelObject { open, members })
}

/// Decode a JSON string token (with quotes).
fn decode_string(token: &str) -> Result<String, String> {
    let inner = &token[1..token.len() - 1];
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('"') => out.push('"'),
            Some('\\') => out.push('\\'),
            Some('/') => out.push('/'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('u') => {
                let high = read_hex4(&mut chars)?;
                let code = if (0xD800..0xDC00).contains(&high) {
                    if chars.next() != Some('\\') || chars.next() != Some('u') {
                        return Err("unpaired surrogate in \\u escape".into());
                    }
                    let low = read_hex4(&mut chars)?;
                    0x10000 + ((high - 0xD800) << 10) + (low.wrapping_sub(0xDC00) & 0x3FF)
                } else {
                    high
                };
                out.push(char::from_u32(code).ok_or("invalid \\u escape")?);
            }
            other => return Err(format!("invalid escape \\{}", other.map(String::from).unwrap_or_default())),
        }
    }
    Ok(out)
}

fn read_hex4(chars: &mut std::str::Chars<'_>) -> Result<u32, String> {
    let digits: String = chars.by_ref().take(4).collect();
    if digits.len() != 4 {
        return Err("short \\u escape".into());
    }
    u32::from_str_radix(&digits, 16).map_err(|_| format!("invalid \\u escape {digits:?}"))
}

/// Encode a string as a JSON string token; a backslash becomes `\\` (`Server\\Instance`).
pub(super) fn encode_string(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The member for `key`, matched case-insensitively as Json.NET reads keys. A key present twice
/// (in any spelling) is an error rather than a guess.
fn find_member<'m>(object: &'m TopLevelObject, key: &str) -> Result<Option<&'m Member>, SettingsError> {
    let candidates: Vec<&Member> = object.members.iter().filter(|m| m.key.eq_ignore_ascii_case(key)).collect();
    match candidates.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => Err(SettingsError::DuplicateKey(key.to_string())),
    }
}

fn plain_value(text: &str, member: &Member) -> String {
    let token = &text[member.value_span.clone()];
    match member.kind {
        ValueKind::String => decode_string(token).unwrap_or_else(|_| token.to_string()),
        ValueKind::Other => token.to_string(),
    }
}

pub(super) fn read_value(text: &str, key: &str) -> Result<Option<String>, SettingsError> {
    let object = scan(text)?;
    Ok(find_member(&object, key)?.map(|member| plain_value(text, member)))
}

/// The token to write, keeping the type the file already uses for the key.
fn value_token(value: &SettingValue, existing: Option<ValueKind>) -> String {
    match (value, existing) {
        (SettingValue::Integer(number), Some(ValueKind::String)) => encode_string(&number.to_string()),
        (SettingValue::Integer(number), _) => number.to_string(),
        (SettingValue::Text(text), _) => encode_string(text),
    }
}

pub(super) fn set_value(text: &str, key: &str, value: &SettingValue) -> Result<String, SettingsError> {
    let object = scan(text)?;
    if let Some(member) = find_member(&object, key)? {
        if plain_value(text, member) == value.as_plain_text() {
            return Ok(text.to_string());
        }
        let mut out = String::with_capacity(text.len() + 16);
        out.push_str(&text[..member.value_span.start]);
        out.push_str(&value_token(value, Some(member.kind)));
        out.push_str(&text[member.value_span.end..]);
        return Ok(out);
    }
    Ok(insert_member(text, &object, key, value))
}

/// Add `"key": value` after the last member, copying its line break, indentation and colon style.
fn insert_member(text: &str, object: &TopLevelObject, key: &str, value: &SettingValue) -> String {
    let newline = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let token = encode_string(key);
    let value_token = value_token(value, None);
    let mut out = String::with_capacity(text.len() + key.len() + 32);
    match object.members.last() {
        Some(last) => {
            let leading = &text[last.leading_start..last.key_span.start];
            let separator = if leading.contains('/') {
                format!("{newline}  ")
            } else if let Some(line_start) = leading.rfind('\n') {
                format!("{newline}{}", &leading[line_start + 1..])
            } else {
                " ".to_string()
            };
            let colon = &text[last.key_span.end..last.value_span.start];
            let colon = if colon.contains('/') { ": " } else { colon };
            out.push_str(&text[..last.value_span.end]);
            out.push(',');
            out.push_str(&separator);
            out.push_str(&token);
            out.push_str(colon);
            out.push_str(&value_token);
            out.push_str(&text[last.value_span.end..]);
        }
        None => {
            let after_open = object.open + 1;
            out.push_str(&text[..after_open]);
            out.push_str(newline);
            out.push_str("  ");
            out.push_str(&token);
            out.push_str(": ");
            out.push_str(&value_token);
            out.push_str(newline);
            out.push_str(text[after_open..].trim_start_matches([' ', '\t', '\r', '\n']));
        }
    }
    out
}
