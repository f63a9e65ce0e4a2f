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
/// `p` must be null or point to a NUL-terminated UTF-16 string.
pub unsafe fn pwstr_to_string(p: PWSTR) -> String {
    if p.is_null() { String::new() } else { String::from_utf16_lossy(unsafe { p.as_wide() }) }
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

/// FILETIME (100 ns ticks since 1601-01-01 UTC) as RFC 3339 `YYYY-MM-DDTHH:MM:SSZ`.
pub fn filetime_to_rfc3339(ticks: u64) -> String {
    const TICKS_PER_SEC: u64 = 10_000_000;
    const SECS_1601_TO_1970: i64 = 11_644_473_600;
    let secs = (ticks / TICKS_PER_SEC) as i64 - SECS_1601_TO_1970;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// NetBIOS name of this computer (what failover-cluster owner nodes are called).
pub fn computer_name() -> Result<String, HostError> {
    let mut len = 0u32;
    // First call sizes the buffer (fails with ERROR_MORE_DATA by design).
    let _ = unsafe { GetComputerNameExW(ComputerNamePhysicalNetBIOS, None, &mut len) };
    let mut buf = vec![0u16; len.max(1) as usize + 1];
    let mut len = buf.len() as u32;
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

    #[test]
    fn filetime_converts_to_utc() {
        // 1970-01-01T00:00:00Z and 2126-10-29T02:35:02Z (the test certificate's NotAfter).
        assert_eq!(filetime_to_rfc3339(116_444_736_000_000_000), "1970-01-01T00:00:00Z");
        let secs_2126: u64 = 4_948_914_902;
        assert_eq!(filetime_to_rfc3339((secs_2126 + 11_644_473_600) * 10_000_000), "2126-10-29T02:35:02Z");
        // 2024-02-29T23:59:59Z: a leap day.
        assert_eq!(filetime_to_rfc3339((1_709_251_199 + 11_644_473_600) * 10_000_000), "2024-02-29T23:59:59Z");
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
