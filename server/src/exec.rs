//! Running a command in a node and collecting its output (`POST .../exec`, template steps and
//! file uploads). The command runs through the runtime's exec helper, so it joins all of the
//! node's namespaces and cgroups. Output is bounded per stream; a command that outlives its
//! timeout is killed (the helper dies with its handle and the command with the helper).

use std::process::Stdio;
use std::time::Duration;

use sandbox::{ExecOptions, Runtime};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use crate::session::SessionError;

/// Most bytes kept of each of stdout and stderr.
pub(crate) const MAX_OUTPUT: usize = 1 << 20;
/// Timeout when the request names none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest timeout a request may ask for.
pub(crate) const MAX_TIMEOUT_SECS: u64 = 600;

/// `POST /api/sessions/{sid}/nodes/{node}/exec`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExecRequest {
    pub cmd: Vec<String>,
    pub stdin: Option<String>,
    pub timeout_secs: Option<u64>,
}

#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct ExecResult {
    /// The command's exit status; 128+N when signal N ended it; null when it timed out.
    pub exit_code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Whether stdout or stderr was cut at [`MAX_OUTPUT`] bytes.
    pub truncated: bool,
    pub timed_out: bool,
}

impl ExecRequest {
    fn validate(&self) -> Result<Duration, SessionError> {
        if self.cmd.is_empty() || self.cmd[0].is_empty() {
            return Err(SessionError::Invalid(
                "cmd must name a program, e.g. [\"docker\", \"ps\"]".into(),
            ));
        }
        if self.cmd.iter().any(|a| a.contains('\0')) {
            return Err(SessionError::Invalid("cmd contains a NUL byte".into()));
        }
        match self.timeout_secs {
            None => Ok(DEFAULT_TIMEOUT),
            Some(s) if (1..=MAX_TIMEOUT_SECS).contains(&s) => Ok(Duration::from_secs(s)),
            Some(_) => Err(SessionError::Invalid(format!(
                "timeout_secs must be between 1 and {MAX_TIMEOUT_SECS}"
            ))),
        }
    }
}

/// Runs `req` in the node and waits for it (or its timeout).
pub(crate) async fn run(
    runtime: &Runtime,
    sid: &str,
    node: &str,
    req: ExecRequest,
) -> Result<ExecResult, SessionError> {
    run_bytes(
        runtime,
        sid,
        node,
        &req,
        req.stdin.as_deref().map(str::as_bytes),
    )
    .await
}

/// Like [`run`], with stdin as bytes (uploads).
pub(crate) async fn run_bytes(
    runtime: &Runtime,
    sid: &str,
    node: &str,
    req: &ExecRequest,
    stdin: Option<&[u8]>,
) -> Result<ExecResult, SessionError> {
    let limit = req.validate()?;
    let mut cmd = runtime.command(sid, node, &req.cmd, &ExecOptions::default())?;
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| SessionError::Internal(format!("start the exec helper: {e}")))?;
    let input = child.stdin.take();
    let out = child.stdout.take().expect("piped");
    let err = child.stderr.take().expect("piped");
    let feed = async {
        if let (Some(mut pipe), Some(data)) = (input, stdin) {
            // A command that does not read its input is not an error.
            let _ = pipe.write_all(data).await;
        }
    };
    let work = async {
        let ((stdout, cut_out), (stderr, cut_err), (), status) =
            tokio::join!(bounded(out), bounded(err), feed, child.wait());
        (stdout, stderr, cut_out || cut_err, status)
    };
    match tokio::time::timeout(limit, work).await {
        Ok((stdout, stderr, truncated, status)) => {
            let status =
                status.map_err(|e| SessionError::Internal(format!("wait for the command: {e}")))?;
            use std::os::unix::process::ExitStatusExt;
            let code = status.code().or_else(|| status.signal().map(|s| 128 + s));
            Ok(ExecResult {
                exit_code: code,
                stdout,
                stderr,
                truncated,
                timed_out: false,
            })
        }
        // Dropping the child kills the helper; the command dies with it.
        Err(_) => Ok(ExecResult {
            exit_code: None,
            stdout: String::new(),
            stderr: format!("timed out after {}s\n", limit.as_secs()),
            truncated: false,
            timed_out: true,
        }),
    }
}

/// Reads a pipe to its end, keeping the first [`MAX_OUTPUT`] bytes.
async fn bounded(mut r: impl AsyncRead + Unpin) -> (String, bool) {
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut cut = false;
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_OUTPUT - kept.len();
                kept.extend_from_slice(&buf[..n.min(room)]);
                cut |= n > room;
            }
        }
    }
    (String::from_utf8_lossy(&kept).into_owned(), cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(cmd: &[&str], timeout: Option<u64>) -> ExecRequest {
        ExecRequest {
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            stdin: None,
            timeout_secs: timeout,
        }
    }

    #[test]
    fn requests_are_checked() {
        assert!(req(&[], None).validate().is_err());
        assert!(req(&[""], None).validate().is_err());
        assert!(req(&["a\0b"], None).validate().is_err());
        assert!(req(&["ls"], Some(0)).validate().is_err());
        assert!(req(&["ls"], Some(MAX_TIMEOUT_SECS + 1)).validate().is_err());
        assert_eq!(
            req(&["ls"], Some(5)).validate().unwrap(),
            Duration::from_secs(5)
        );
    }

    #[tokio::test]
    async fn output_is_cut_at_the_bound() {
        let data = vec![b'x'; MAX_OUTPUT + 10];
        let (s, cut) = bounded(&data[..]).await;
        assert!(cut);
        assert_eq!(s.len(), MAX_OUTPUT);
        let (s, cut) = bounded(&b"hi"[..]).await;
        assert!(!cut);
        assert_eq!(s, "hi");
    }
}
