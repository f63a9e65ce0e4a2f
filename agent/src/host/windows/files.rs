//! Settings files: plain reads and atomic replace with a `.bak` of the previous content.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use windows::Win32::Foundation::{
    CloseHandle, ERROR_ACCESS_DENIED, ERROR_LOCK_VIOLATION, ERROR_SHARING_VIOLATION, GENERIC_WRITE, HANDLE, WIN32_ERROR,
};
use windows::Win32::Storage::FileSystem::{
    CREATE_NEW, CopyFileW, CreateFileW, DELETE, DeleteFileW, FILE_ATTRIBUTE_NORMAL, FILE_SHARE_NONE, FlushFileBuffers,
    MOVEFILE_REPLACE_EXISTING, MOVEFILE_WRITE_THROUGH, MoveFileExW, OPEN_EXISTING, WriteFile,
};
use windows::core::PCWSTR;

use super::util::{code_of, map_code, wide};
use crate::host::HostError;

/// How often a replace is retried while another process (antivirus, the SSIS service reading its
/// settings) holds the file; then the caller gets `Busy` and retries on its next pass. Access
/// denied for any other reason is not retried: it is reported as `AccessDenied` at once.
const ATTEMPTS: u32 = 20;
const PAUSE: Duration = Duration::from_millis(50);

static TEMP_SEQ: AtomicU32 = AtomicU32::new(0);

/// Closes a file handle on drop. Holds a handle CreateFileW returned to this process.
struct Handle(HANDLE);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: `self.0` is an open handle from a successful CreateFileW, owned by this guard
        // alone, so it is closed exactly once and not used afterwards.
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

/// A sharing or lock violation: another process holds the file (or a range of it) and lets go
/// soon. These are the only transient failures of a replace.
fn held_elsewhere(code: u32) -> bool {
    matches!(WIN32_ERROR(code), ERROR_SHARING_VIOLATION | ERROR_LOCK_VIOLATION)
}

/// Whether another handle holds `path` open. MoveFileExW reports a replace over a file that is
/// open elsewhere as ERROR_ACCESS_DENIED (on NTFS and under Wine), the same code as a real
/// permission problem (an ACL, a read-only file). An exclusive open for DELETE tells the two
/// apart: it fails with a sharing violation when another handle with data or delete access is
/// open, and succeeds or is denied otherwise.
fn open_elsewhere(path: &[u16]) -> bool {
    debug_assert_eq!(path.last(), Some(&0), "path must be NUL-terminated");
    // SAFETY: `path` is a NUL-terminated UTF-16 buffer (from `wide`) borrowed for the whole call;
    // security attributes and template are null (allowed). A returned handle is owned by `Handle`.
    let probe = unsafe {
        CreateFileW(PCWSTR(path.as_ptr()), DELETE.0, FILE_SHARE_NONE, None, OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, None)
    };
    match probe {
        Ok(handle) => {
            drop(Handle(handle));
            false
        }
        Err(e) => held_elsewhere(code_of(&e)),
    }
}

/// Run `op` until it succeeds or fails for good. Failures `transient` accepts are retried
/// [`ATTEMPTS`] times, then reported as `Busy`; any other failure is reported at once.
fn with_retry(
    context: &str,
    transient: impl Fn(u32) -> bool,
    mut op: impl FnMut() -> windows::core::Result<()>,
) -> Result<(), HostError> {
    let mut attempt = 1;
    loop {
        let code = match op() {
            Ok(()) => return Ok(()),
            Err(e) => code_of(&e),
        };
        if !transient(code) {
            return Err(map_code(context, code));
        }
        if attempt >= ATTEMPTS {
            return Err(HostError::Busy(format!("{context}: os error {code}")));
        }
        attempt += 1;
        std::thread::sleep(PAUSE);
    }
}

/// Write `content` to a new file and flush it to disk before it is renamed over the target.
fn write_temp(temp: &[u16], content: &[u8], context: &str) -> Result<(), HostError> {
    debug_assert_eq!(temp.last(), Some(&0), "path must be NUL-terminated");
    // SAFETY: `temp` is a NUL-terminated UTF-16 buffer (from `wide`) borrowed for the whole call;
    // security attributes and template are null (allowed). The handle is owned by `Handle` below.
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
        // SAFETY: `handle` is open for writing and outlives the call; the binding passes `chunk`'s
        // exact length (at most 1 MiB, fits the u32), `written` is a valid out slot, and without
        // an OVERLAPPED the write is synchronous, so nothing refers to `chunk` afterwards.
        unsafe { WriteFile(handle.0, Some(chunk), Some(&mut written), None) }
            .map_err(|e| map_code(context, code_of(&e)))?;
        rest = &rest[written as usize..];
    }
    // SAFETY: `handle` is an open, writable handle owned by this function until it drops below.
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
            // SAFETY: `target` and `backup` are NUL-terminated buffers that outlive the closure.
            with_retry(&format!("back up {path}"), held_elsewhere, || unsafe {
                CopyFileW(PCWSTR(target.as_ptr()), PCWSTR(backup.as_ptr()), false)
            })?;
        }
        let in_use =
            |code| held_elsewhere(code) || (WIN32_ERROR(code) == ERROR_ACCESS_DENIED && open_elsewhere(&target));
        // SAFETY: `temp` and `target` are NUL-terminated buffers that outlive the closure.
        with_retry(&context, in_use, || unsafe {
            MoveFileExW(
                PCWSTR(temp.as_ptr()),
                PCWSTR(target.as_ptr()),
                MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH,
            )
        })
    })();
    if result.is_err() {
        // Best effort: the temp file is ours and useless once the replace failed.
        // SAFETY: `temp` is a NUL-terminated buffer alive for the call.
        let _ = unsafe { DeleteFileW(PCWSTR(temp.as_ptr())) };
    }
    result
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use windows::Win32::Foundation::{ERROR_ACCESS_DENIED, ERROR_SHARING_VIOLATION};

    use super::*;

    fn failing(code: WIN32_ERROR, calls: &Cell<u32>) -> impl FnMut() -> windows::core::Result<()> + '_ {
        move || {
            calls.set(calls.get() + 1);
            Err(windows::core::Error::from_hresult(code.to_hresult()))
        }
    }

    #[test]
    fn access_denied_is_reported_at_once_not_retried_as_busy() {
        let calls = Cell::new(0);
        let err = with_retry("replace C:\\x", held_elsewhere, failing(ERROR_ACCESS_DENIED, &calls)).unwrap_err();
        assert!(matches!(err, HostError::AccessDenied(_)), "{err:?}");
        assert_eq!(calls.get(), 1, "no retry for a permission problem");
    }

    #[test]
    fn sharing_violations_are_retried_then_busy() {
        let calls = Cell::new(0);
        let err = with_retry("replace C:\\x", held_elsewhere, failing(ERROR_SHARING_VIOLATION, &calls)).unwrap_err();
        assert!(matches!(err, HostError::Busy(_)), "{err:?}");
        assert_eq!(calls.get(), ATTEMPTS);

        // A holder that lets go in time: the replace succeeds without an error.
        let calls = Cell::new(0);
        let mut op = failing(ERROR_LOCK_VIOLATION, &calls);
        let result = with_retry("replace C:\\x", held_elsewhere, || if calls.get() < 2 { op() } else { Ok(()) });
        assert!(result.is_ok());
        assert_eq!(calls.get(), 2);
    }

    #[test]
    fn access_denied_counts_as_busy_only_when_the_classifier_says_so() {
        // What the replace does: access denied while another handle holds the target is transient.
        let calls = Cell::new(0);
        let err = with_retry("replace C:\\x", |_| true, failing(ERROR_ACCESS_DENIED, &calls)).unwrap_err();
        assert!(matches!(err, HostError::Busy(_)), "{err:?}");
        assert_eq!(calls.get(), ATTEMPTS);
    }
}
