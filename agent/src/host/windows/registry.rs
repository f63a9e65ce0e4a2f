//! HKEY_LOCAL_MACHINE values (REG_SZ and REG_DWORD), key default value or named values.

use windows::Win32::Foundation::{ERROR_FILE_NOT_FOUND, ERROR_MORE_DATA, ERROR_SUCCESS};
use windows::Win32::System::Registry::{
    HKEY, HKEY_LOCAL_MACHINE, KEY_READ, KEY_SET_VALUE, REG_DWORD, REG_OPTION_NON_VOLATILE, REG_SZ, REG_VALUE_TYPE,
    RRF_RT_REG_DWORD, RRF_RT_REG_SZ, RegCloseKey, RegCreateKeyExW, RegGetValueW, RegOpenKeyExW, RegSetValueExW,
};
use windows::core::PCWSTR;

use super::util::{from_wide, map_win32, wide};
use crate::host::{HostError, RegistryData};

/// Closes the key on drop. Holds an open key this process owns; nothing else closes it.
struct Key(HKEY);

impl Drop for Key {
    fn drop(&mut self) {
        // SAFETY: `self.0` is an open key returned by RegOpenKeyExW/RegCreateKeyExW and owned by
        // this guard alone, so it is closed exactly once and never used afterwards.
        unsafe {
            let _ = RegCloseKey(self.0);
        }
    }
}

fn value_ptr(name: &Option<Vec<u16>>) -> PCWSTR {
    name.as_ref().map_or(PCWSTR::null(), |n| PCWSTR(n.as_ptr()))
}

pub fn key_exists(key: &str) -> Result<bool, HostError> {
    let k = wide(key);
    let mut h = HKEY::default();
    // SAFETY: `k` is a NUL-terminated UTF-16 buffer alive for the call; `h` is a valid out slot
    // that receives a key only on success (then owned by `Key`).
    let rc = unsafe { RegOpenKeyExW(HKEY_LOCAL_MACHINE, PCWSTR(k.as_ptr()), None, KEY_READ, &mut h) };
    match rc {
        ERROR_SUCCESS => {
            drop(Key(h));
            Ok(true)
        }
        ERROR_FILE_NOT_FOUND => Ok(false),
        e => Err(map_win32(&format!("open HKLM\\{key}"), e)),
    }
}

pub fn read(key: &str, value_name: Option<&str>) -> Result<Option<RegistryData>, HostError> {
    let k = wide(key);
    let v = value_name.map(wide);
    let context = || format!("read HKLM\\{key} value {}", value_name.unwrap_or("(default)"));
    let flags = RRF_RT_REG_SZ | RRF_RT_REG_DWORD;
    let mut buf: Vec<u8> = vec![0; 256];
    // The value may grow between the two calls: retry while the OS says the buffer is short.
    loop {
        let mut ty = REG_VALUE_TYPE::default();
        let mut len = buf.len() as u32;
        // SAFETY: `k` and `v` (when present) are NUL-terminated buffers alive for the call; `len`
        // is the exact byte size of `buf`, so RegGetValueW writes at most that many bytes (it
        // reports ERROR_MORE_DATA instead of overflowing); `ty` and `len` are valid out slots.
        let rc = unsafe {
            RegGetValueW(
                HKEY_LOCAL_MACHINE,
                PCWSTR(k.as_ptr()),
                value_ptr(&v),
                flags,
                Some(&mut ty),
                Some(buf.as_mut_ptr().cast()),
                Some(&mut len),
            )
        };
        match rc {
            ERROR_SUCCESS => {
                let data = &buf[..len as usize];
                return Ok(Some(if ty == REG_DWORD {
                    let bytes: [u8; 4] =
                        data.try_into().map_err(|_| HostError::Invalid(format!("{}: bad REG_DWORD", context())))?;
                    RegistryData::DWord(u32::from_le_bytes(bytes))
                } else {
                    let units: Vec<u16> = data.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
                    RegistryData::String(from_wide(&units))
                }));
            }
            ERROR_MORE_DATA => buf.resize(len.max(buf.len() as u32 * 2) as usize, 0),
            ERROR_FILE_NOT_FOUND => return Ok(None),
            e => return Err(map_win32(&context(), e)),
        }
    }
}

pub fn write(key: &str, value_name: Option<&str>, data: &RegistryData) -> Result<(), HostError> {
    let k = wide(key);
    let v = value_name.map(wide);
    let mut h = HKEY::default();
    // SAFETY: `k` is a NUL-terminated buffer alive for the call; the class and security
    // attributes are null (allowed); `h` receives an open key on success, owned by `Key` below.
    let rc = unsafe {
        RegCreateKeyExW(
            HKEY_LOCAL_MACHINE,
            PCWSTR(k.as_ptr()),
            None,
            PCWSTR::null(),
            REG_OPTION_NON_VOLATILE,
            KEY_SET_VALUE,
            None,
            &mut h,
            None,
        )
    };
    if rc != ERROR_SUCCESS {
        return Err(map_win32(&format!("create HKLM\\{key}"), rc));
    }
    let key_guard = Key(h);
    let (ty, bytes) = match data {
        RegistryData::String(s) => (REG_SZ, wide(s).iter().flat_map(|u| u.to_le_bytes()).collect::<Vec<u8>>()),
        RegistryData::DWord(d) => (REG_DWORD, d.to_le_bytes().to_vec()),
    };
    // SAFETY: `key_guard` holds an open key with KEY_SET_VALUE for the whole call; the value name
    // is null or the NUL-terminated `v`; `bytes` is passed as a slice with its exact length, and
    // REG_SZ data includes its terminating NUL as the API requires.
    let rc = unsafe { RegSetValueExW(key_guard.0, value_ptr(&v), None, ty, Some(&bytes)) };
    if rc != ERROR_SUCCESS {
        return Err(map_win32(&format!("write HKLM\\{key} value {}", value_name.unwrap_or("(default)")), rc));
    }
    Ok(())
}
