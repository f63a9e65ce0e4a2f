//! Small helpers shared by the Win32 adapters: UTF-16 strings, error mapping, hex, time.

use windows::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_CALL_NOT_IMPLEMENTED, ERROR_FILE_NOT_FOUND, ERROR_LOCK_VIOLATION, ERROR_NOT_SUPPORTED,
    ERROR_PATH_NOT_FOUND, ERROR_SERVICE_DATABASE_LOCKED, ERROR_SERVICE_DOES_NOT_EXIST, ERROR_SHARING_VIOLATION,
    WIN32_ERROR,
};
use windows::Win32::System::SystemInformation::{ComputerNamePhysicalNetBIOS, GetComputerNameExW};
use windows::core::PWSTR;

use crate::host::HostError;

/// NUL-terminated UTF-16 for a `PCWSTR` parameter.
pub fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(std::iter::once(0)).collect()
}

/// UTF-16 up to the first NUL.
pub fn from_wide(buf: &[u16]) -> String {
    let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
    String::from_utf16_lossy(&buf[..end])
}

/// A NUL-terminated wide string owned by the OS.
///
/// # Safety
/// `p` must be null or point to a NUL-terminated UTF-16 string that stays valid and unchanged
/// for the duration of the call (e.g. inside a buffer the caller owns).
pub unsafe fn pwstr_to_string(p: PWSTR) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: `p` is non-null, and the caller guarantees it points to a live NUL-terminated
    // string; `as_wide` reads up to (not including) the NUL and the slice is copied at once.
    String::from_utf16_lossy(unsafe { p.as_wide() })
}

/// The Win32 error code inside a `windows` error (HRESULT_FROM_WIN32 unwrapped; other HRESULTs
/// such as CRYPT_E_* are kept whole).
pub fn code_of(e: &windows::core::Error) -> u32 {
    let h = e.code().0 as u32;
    if h & 0xFFFF_0000 == 0x8007_0000 { h & 0xFFFF } else { h }
}

/// Map a Win32 error code to a [`HostError`]. `context` must not contain secret material.
pub fn map_code(context: &str, code: u32) -> HostError {
    // HRESULTs that are not Win32 codes (CRYPT_E_*) match none of these constants.
    match WIN32_ERROR(code) {
        ERROR_FILE_NOT_FOUND | ERROR_PATH_NOT_FOUND | ERROR_SERVICE_DOES_NOT_EXIST => {
            HostError::NotFound(context.to_string())
        }
        // Only a holder letting go makes these succeed later; access denied stays denied.
        ERROR_SHARING_VIOLATION | ERROR_LOCK_VIOLATION | ERROR_SERVICE_DATABASE_LOCKED => {
            HostError::Busy(format!("{context}: os error {code}"))
        }
        ERROR_ACCESS_DENIED => HostError::AccessDenied(format!("{context}: os error {code}")),
        ERROR_NOT_SUPPORTED | ERROR_CALL_NOT_IMPLEMENTED => {
            HostError::Unsupported(format!("{context}: os error {code}"))
        }
        _ => HostError::Os { context: context.to_string(), code },
    }
}

pub fn map_err(context: &str, e: windows::core::Error) -> HostError {
    map_code(context, code_of(&e))
}

pub fn map_win32(context: &str, e: WIN32_ERROR) -> HostError {
    map_code(context, e.0)
}

/// Upper-case hex, the thumbprint format of `CertInfo`.
pub fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// A SHA-1 thumbprint (40 hex digits; spaces and colons as shown by certmgr are ignored).
pub fn parse_thumbprint(thumbprint: &str) -> Result<[u8; 20], HostError> {
    let digits: Vec<u8> = thumbprint.bytes().filter(|b| !matches!(b, b' ' | b':')).collect();
    let invalid = || HostError::Invalid(format!("thumbprint {thumbprint:?} is not 40 hex digits"));
    if digits.len() != 40 {
        return Err(invalid());
    }
    let mut out = [0u8; 20];
    for (i, pair) in digits.chunks(2).enumerate() {
        let s = std::str::from_utf8(pair).map_err(|_| invalid())?;
        out[i] = u8::from_str_radix(s, 16).map_err(|_| invalid())?;
    }
    Ok(out)
}

/// 100 ns FILETIME ticks per second.
const TICKS_PER_SECOND: u64 = 10_000_000;
/// 1601-01-01T00:00:00 UTC, where FILETIME counts from.
const FILETIME_EPOCH: jiff::civil::DateTime = jiff::civil::date(1601, 1, 1).at(0, 0, 0, 0);

/// A FILETIME (100 ns ticks since 1601-01-01 UTC) as a UTC date and time in whole seconds
/// (sub-second ticks are dropped). A civil date-time rather than a `jiff::Timestamp`: a timestamp
/// ends on 9999-12-30, one day before RFC 5280's "no expiration" NotAfter, 9999-12-31T23:59:59Z.
/// `None` after that, which no X.509 date reaches.
pub fn filetime_to_utc(ticks: u64) -> Option<jiff::civil::DateTime> {
    let seconds = i64::try_from(ticks / TICKS_PER_SECOND).ok()?;
    // A Span, not a SignedDuration: jiff adds the latter within the timestamp range only.
    FILETIME_EPOCH.checked_add(jiff::Span::new().try_seconds(seconds).ok()?).ok()
}

/// A FILETIME as RFC 3339 `YYYY-MM-DDTHH:MM:SSZ` (empty when out of range, like an unreadable
/// date elsewhere in `CertInfo`).
pub fn filetime_to_rfc3339(ticks: u64) -> String {
    filetime_to_utc(ticks).map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_default()
}

/// NetBIOS name of this computer (what failover-cluster owner nodes are called).
pub fn computer_name() -> Result<String, HostError> {
    let mut len = 0u32;
    // First call sizes the buffer (fails with ERROR_MORE_DATA by design).
    // SAFETY: a null buffer with a valid `len` out-pointer is the documented sizing call; the
    // function writes only `len`.
    let _ = unsafe { GetComputerNameExW(ComputerNamePhysicalNetBIOS, None, &mut len) };
    let mut buf = vec![0u16; len.max(1) as usize + 1];
    let mut len = buf.len() as u32;
    // SAFETY: `buf` is a live allocation of exactly `len` u16s (in: capacity in characters), so
    // the name and its NUL fit; on return `len` is the length written without the NUL.
    unsafe { GetComputerNameExW(ComputerNamePhysicalNetBIOS, Some(PWSTR(buf.as_mut_ptr())), &mut len) }
        .map_err(|e| map_err("GetComputerNameExW", e))?;
    Ok(from_wide(&buf[..len as usize]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_round_trip_and_separators() {
        let t = "366A09ABBDF44FA33537249A05EA24A939AF71CF";
        assert_eq!(hex_upper(&parse_thumbprint(t).unwrap()), t);
        assert_eq!(hex_upper(&parse_thumbprint(&t.to_lowercase()).unwrap()), t);
        let spaced = "36 6a 09 ab bd f4 4f a3 35 37 24 9a 05 ea 24 a9 39 af 71 cf";
        assert_eq!(hex_upper(&parse_thumbprint(spaced).unwrap()), t);
        assert!(matches!(parse_thumbprint("366A"), Err(HostError::Invalid(_))));
        assert!(matches!(parse_thumbprint(&"Z".repeat(40)), Err(HostError::Invalid(_))));
    }

    /// The inverse, for the round trip: whole seconds only, as FILETIMEs from certificates are.
    fn rfc3339_to_filetime(text: &str) -> u64 {
        let utc = text.strip_suffix('Z').unwrap().parse::<jiff::civil::DateTime>().unwrap();
        u64::try_from(FILETIME_EPOCH.duration_until(utc).as_secs()).unwrap() * TICKS_PER_SECOND
    }

    #[test]
    fn filetime_epoch_is_1601_utc() {
        let unix_seconds = "1601-01-01T00:00:00Z".parse::<jiff::Timestamp>().unwrap().as_second();
        assert_eq!(unix_seconds, -11_644_473_600);
        assert_eq!(filetime_to_rfc3339(0), "1601-01-01T00:00:00Z");
    }

    #[test]
    fn filetime_converts_to_utc_and_round_trips() {
        // (FILETIME, RFC 3339): the Unix epoch; the test certificate's NotAfter; a leap day;
        // RFC 5280's "no expiration" NotAfter, the last second X.509 can express.
        let known = [
            (116_444_736_000_000_000u64, "1970-01-01T00:00:00Z"),
            ((4_948_914_902 + 11_644_473_600) * 10_000_000, "2126-10-29T02:35:02Z"),
            ((1_709_251_199 + 11_644_473_600) * 10_000_000, "2024-02-29T23:59:59Z"),
            (2_650_467_743_990_000_000, "9999-12-31T23:59:59Z"),
        ];
        for (ticks, text) in known {
            assert_eq!(filetime_to_rfc3339(ticks), text);
            assert_eq!(rfc3339_to_filetime(text), ticks, "{text}");
            // Sub-second ticks are dropped, never rounded up.
            assert_eq!(filetime_to_rfc3339(ticks + TICKS_PER_SECOND - 1), text);
        }
        // After 9999-12-31T23:59:59Z: no date rather than a wrong one.
        assert_eq!(filetime_to_rfc3339(2_650_467_744_000_000_000), "");
        assert_eq!(filetime_to_rfc3339(u64::MAX), "");
    }

    #[test]
    fn error_codes_map_to_host_errors() {
        assert!(matches!(map_code("x", 2), HostError::NotFound(_)));
        assert!(matches!(map_code("x", 1060), HostError::NotFound(_)));
        assert!(matches!(map_code("x", 32), HostError::Busy(_)));
        assert!(matches!(map_code("x", 33), HostError::Busy(_)));
        assert!(matches!(map_code("x", 1055), HostError::Busy(_)));
        // A permission problem is not a busy object: retrying unchanged cannot help.
        assert!(matches!(map_code("x", 5), HostError::AccessDenied(_)));
        assert_eq!(map_code("open HKLM\\X", 5).to_string(), "access denied: open HKLM\\X: os error 5");
        assert!(matches!(map_code("x", 120), HostError::Unsupported(_)));
        assert!(matches!(map_code("x", 1056), HostError::Os { code: 1056, .. }));
        let e = windows::core::Error::from_hresult(windows::core::HRESULT(0x8007_0005u32 as i32));
        assert_eq!(code_of(&e), 5);
    }
}
