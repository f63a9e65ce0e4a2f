//! Running Windows PowerShell for the one operation without a Win32 equivalent (creating the
//! failover-cluster role, `cluster.rs`).
//!
//! - By absolute path: `<system directory>\WindowsPowerShell\v1.0\powershell.exe`, the system
//!   directory (`%SystemRoot%\System32`) from `GetSystemDirectoryW`. Never through `PATH` or the
//!   `SystemRoot` variable, which whoever starts the agent controls.
//! - With `-NoProfile -NonInteractive` (the caller passes them): no profile scripts, no prompts.
//! - Bounded: the agent's pass holds the host lock (`runtime::SharedHost`) while a host call
//!   runs, so a hung PowerShell would stall the agent for good. After [`POWERSHELL_TIMEOUT`] the
//!   process is killed and the call fails; the engine retries on a later pass.

use std::ffi::OsString;
use std::io::Read;
use std::os::windows::ffi::OsStringExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use windows::Win32::Foundation::ERROR_TIMEOUT;
use windows::Win32::System::SystemInformation::GetSystemDirectoryW;

use super::util::map_err;
use crate::host::HostError;

/// How long one PowerShell call may run. `Add-ClusterGenericServiceRole` loads the
/// FailoverClusters module, creates the role and brings it online: seconds normally, a minute on
/// a slow cluster. Longer means it hangs.
pub const POWERSHELL_TIMEOUT: Duration = Duration::from_secs(180);
/// How often a running process is checked.
const POLL: Duration = Duration::from_millis(50);
/// Output kept per stream; the rest is read and dropped so the process never blocks on a full pipe.
const MAX_OUTPUT: u64 = 64 * 1024;
/// How long to wait for the output pipes once the process has exited (a grandchild that inherited
/// them could keep them open).
const PIPE_GRACE: Duration = Duration::from_secs(5);

/// The system directory (`C:\Windows\System32`), as Windows reports it.
fn system_directory() -> Result<PathBuf, HostError> {
    let mut buf = vec![0u16; 260];
    loop {
        // SAFETY: the slice is a live, writable buffer and the binding passes its exact length,
        // so the function writes at most `buf.len()` u16s.
        let len = unsafe { GetSystemDirectoryW(Some(&mut buf)) } as usize;
        if len == 0 {
            return Err(map_err("GetSystemDirectoryW", windows::core::Error::from_thread()));
        }
        // Too small: `len` is the size needed, terminating NUL included.
        if len >= buf.len() {
            buf.resize(len, 0);
            continue;
        }
        return Ok(PathBuf::from(OsString::from_wide(&buf[..len])));
    }
}

/// Absolute path of Windows PowerShell 5.1 (present on every Windows Server since 2016).
pub fn powershell_exe() -> Result<PathBuf, HostError> {
    Ok(system_directory()?.join(r"WindowsPowerShell\v1.0\powershell.exe"))
}

/// A process that ended on its own within the timeout.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// The first [`MAX_OUTPUT`] bytes of its standard error (standard output is discarded).
    pub stderr: Vec<u8>,
}

/// Read a pipe to its end on a thread of its own; the first [`MAX_OUTPUT`] bytes arrive on the
/// returned channel.
fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (done, output) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let _ = (&mut pipe).take(MAX_OUTPUT).read_to_end(&mut kept);
        let _ = std::io::copy(&mut pipe, &mut std::io::sink());
        let _ = done.send(kept);
    });
    output
}

fn kill(child: &mut Child) {
    // Fails only when the process already exited; wait() then reaps it either way.
    let _ = child.kill();
    let _ = child.wait();
}

/// Run `command` (stdin empty, stdout discarded, stderr captured) and wait at most `timeout` for it to exit. On
/// timeout the process is killed and the error carries ERROR_TIMEOUT. `what` names the call in
/// errors; it must not contain secret material.
pub fn run_bounded(command: &mut Command, what: &str, timeout: Duration) -> Result<Finished, HostError> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| HostError::Unsupported(format!("cannot run {what}: {e}")))?;
    let stderr = child.stderr.take().map(drain);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
            Ok(None) => {
                kill(&mut child);
                return Err(HostError::Os {
                    context: format!("{what} did not finish within {} s and was killed", timeout.as_secs()),
                    code: ERROR_TIMEOUT.0,
                });
            }
            Err(e) => {
                kill(&mut child);
                return Err(HostError::Io(format!("wait for {what}: {e}")));
            }
        }
    };
    // A pipe still held open by a grandchild: report the exit without its message, not block.
    let stderr = stderr.and_then(|output| output.recv_timeout(PIPE_GRACE).ok()).unwrap_or_default();
    Ok(Finished { status, stderr })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHILD_MODE: &str = "SSIS_AGENT_TEST_CHILD";

    /// Not a test: the body of the child processes the tests below start (this test binary,
    /// filtered to this one function). Without the variable it does nothing.
    #[test]
    #[ignore = "helper process for run_bounded tests"]
    fn child_process() {
        match std::env::var(CHILD_MODE).as_deref() {
            Ok("hang") => std::thread::sleep(Duration::from_secs(120)),
            Ok("fail") => {
                println!("output nobody reads");
                eprintln!("Add-ClusterGenericServiceRole : the role already exists");
                std::process::exit(3);
            }
            _ => {}
        }
    }

    fn child(mode: &str) -> Command {
        let mut command = Command::new(std::env::current_exe().unwrap());
        command
            .args(["--ignored", "--exact", "--nocapture", "host::windows::powershell::tests::child_process"])
            .env(CHILD_MODE, mode);
        command
    }

    #[test]
    fn powershell_is_found_by_absolute_path_in_the_system_directory() {
        let exe = powershell_exe().unwrap();
        assert!(exe.is_absolute(), "{}", exe.display());
        // What the docs prescribe: %SystemRoot%\System32\WindowsPowerShell\v1.0\powershell.exe.
        let system_root = std::env::var("SystemRoot").unwrap();
        let expected = format!(r"{system_root}\System32\WindowsPowerShell\v1.0\powershell.exe");
        assert!(exe.to_str().unwrap().eq_ignore_ascii_case(&expected), "{} vs {expected}", exe.display());
        // Windows ships it; so does Wine (a stub), at the same place.
        assert!(exe.is_file(), "{}", exe.display());
    }

    #[test]
    fn a_hung_process_is_killed_after_the_timeout() {
        let started = Instant::now();
        let err = run_bounded(&mut child("hang"), "hung helper", Duration::from_secs(2)).unwrap_err();
        let elapsed = started.elapsed();
        assert!(matches!(err, HostError::Os { code, .. } if code == ERROR_TIMEOUT.0), "{err:?}");
        assert!(err.to_string().contains("did not finish within 2 s and was killed"), "{err}");
        // The helper would sleep 120 s: returning long before proves it was killed (and reaped).
        assert!(elapsed >= Duration::from_secs(2) && elapsed < Duration::from_secs(60), "{elapsed:?}");
    }

    #[test]
    fn a_finished_process_reports_its_exit_code_and_error_output() {
        let finished = run_bounded(&mut child("fail"), "failing helper", Duration::from_secs(60)).unwrap();
        assert_eq!(finished.status.code(), Some(3));
        let stderr = String::from_utf8_lossy(&finished.stderr);
        assert!(stderr.contains("the role already exists"), "{stderr}");
    }

    #[test]
    fn a_missing_program_is_unsupported() {
        let mut command = Command::new(r"C:\no\such\powershell.exe");
        let err = run_bounded(&mut command, "powershell.exe", Duration::from_secs(5)).unwrap_err();
        assert!(matches!(err, HostError::Unsupported(_)), "{err:?}");
    }
}
