//! Settings files: plain reads and atomic replace with a `.bak` of the previous content.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use windows::Win32::Foundation::{
    CloseHandle, ERROR_ACCESS_DENIED, ERROR_LOCK_VIOLATION, ERROR_SHARING_VIOLATION, GENERIC_WRITE, HANDLE, WIN32_ERROR,
};
use windows::Win32::Storage::FileSystem::{
    CREATE_NEW, CopyFileW, CreateFileW, DeleteFileW, FILE_ATTRIBUTE_NORMAL, FILE_SHARE_NONE, FlushFileBuffers,
    MOVEFILE_REPLACE_EXISTING, MOVEFILE_WRITE_THROUGH, MoveFileExW, WriteFile,
};
use windows::core::PCWSTR;

use super::util::{code_of, map_code, wide};
use crate::host::HostError;

/// How often a replace is retried while another process (antivirus, the SSIS service reading its
/// settings) holds the file; then the caller gets `Busy` and retries on its next pass.
const ATTEMPTS: u32 = 20;
const PAUSE: Duration = Duration::from_millis(50);

static TEMP_SEQ: AtomicU32 = AtomicU32::new(0);

struct Handle(HANDLE);

impl Drop for Handle {
    fn drop(&mut self) {
        unsafe {
            let _ = CloseHandle(self.0);
        }
    }
}

fn io_error(context: &str, e: &std::io::Error) -> HostError {
    match e.raw_os_error() {
        Some(code) => map_code(context, code as u32),
        None => HostError::Io(format!("{context}: {e}")),
    }
}

pub fn read(path: &str) -> Result<Option<Vec<u8>>, HostError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error(&format!("read {path}"), &e)),
    }
}

fn retryable(code: u32) -> bool {
    matches!(WIN32_ERROR(code), ERROR_ACCESS_DENIED | ERROR_SHARING_VIOLATION | ERROR_LOCK_VIOLATION)
}

/// Run `op` until it succeeds, fails for good, or the retry budget for lock errors is spent.
fn with_retry(context: &str, mut op: impl FnMut() -> windows::core::Result<()>) -> Result<(), HostError> {
    let mut attempt = 1;
    loop {
        match op() {
            Ok(()) => return Ok(()),
            Err(e) => {
                let code = code_of(&e);
                if !retryable(code) || attempt >= ATTEMPTS {
                    return Err(map_code(context, code));
                }
            }
        }
        attempt += 1;
        std::thread::sleep(PAUSE);
    }
}

/// Write `content` to a new file and flush it to disk before it is renamed over the target.
fn write_temp(temp: &[u16], content: &[u8], context: &str) -> Result<(), HostError> {
    let handle = unsafe {
        CreateFileW(
            PCWSTR(temp.as_ptr()),
            GENERIC_WRITE.0,
            FILE_SHARE_NONE,
            None,
            CREATE_NEW,
            FILE_ATTRIBUTE_NORMAL,
            None,
        )
    }
    .map_err(|e| map_code(context, code_of(&e)))?;
    let handle = Handle(handle);
    let mut rest = content;
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(1 << 20)];
        let mut written = 0u32;
        unsafe { WriteFile(handle.0, Some(chunk), Some(&mut written), None) }
            .map_err(|e| map_code(context, code_of(&e)))?;
        rest = &rest[written as usize..];
    }
    unsafe { FlushFileBuffers(handle.0) }.map_err(|e| map_code(context, code_of(&e)))
}

pub fn write_atomic(path: &str, content: &[u8]) -> Result<(), HostError> {
    let context = format!("replace {path}");
    if let Some(parent) = std::path::Path::new(path).parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| io_error(&context, &e))?;
    }
    let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
    let temp_path = format!("{path}.{}-{seq}.tmp", std::process::id());
    let temp = wide(&temp_path);
    let target = wide(path);
    let backup = wide(&format!("{path}.bak"));

    let result = (|| {
        write_temp(&temp, content, &context)?;
        if std::path::Path::new(path).exists() {
            with_retry(&format!("back up {path}"), || unsafe {
                CopyFileW(PCWSTR(target.as_ptr()), PCWSTR(backup.as_ptr()), false)
            })?;
        }
        with_retry(&context, || unsafe {
            MoveFileExW(
                PCWSTR(temp.as_ptr()),
                PCWSTR(target.as_ptr()),
                MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH,
            )
        })
    })();
    if result.is_err() {
        // Best effort: the temp file is ours and useless once the replace failed.
        let _ = unsafe { DeleteFileW(PCWSTR(temp.as_ptr())) };
    }
    result
}
