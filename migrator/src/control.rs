//! The control protocol: JSON lines over Unix sockets.
//!
//! Every foreground task listens on `<runtime dir>/tasks/<name>.sock`; the
//! daemon (`migrator serve`) on `<runtime dir>/daemon.sock`. A client sends
//! one JSON object on one line and reads one JSON object line back:
//! `{"ok": true, ...}` or `{"ok": false, "error": "..."}`. Commands:
//! `ps`, `checkpoint`, `kill`, `run`, `restore` (daemon only), `trigger`
//! (logged, acknowledged); unknown commands are logged and answered with an
//! error, never a dropped connection. See docs/migrator.md.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::EngineKind;
use crate::error::ControlError;
use crate::task::CheckpointInfo;
use crate::wasi::Preopen;

/// `$MIGRATOR_RUNTIME_DIR`, else `$XDG_RUNTIME_DIR/migrator`, else
/// `/tmp/migrator-<uid>`.
pub fn runtime_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("MIGRATOR_RUNTIME_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        return PathBuf::from(d).join("migrator");
    }
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(0);
    PathBuf::from(format!("/tmp/migrator-{uid}"))
}

pub fn daemon_socket() -> PathBuf {
    runtime_dir().join("daemon.sock")
}

pub fn task_socket(name: &str) -> PathBuf {
    runtime_dir().join("tasks").join(format!("{name}.sock"))
}

/// A task name must be usable as a file name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.starts_with('.')
}

/// Where a task is and what it does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TaskInfo {
    pub name: String,
    /// running, checkpointing, checkpointed, exited, failed, killed
    pub state: String,
    pub module: String,
    pub engine: EngineKind,
    pub priority: i32,
    /// "foreground" (its own process) or "daemon".
    pub host: String,
    pub pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Requests, tagged by `cmd`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Ps,
    Checkpoint {
        task: String,
        output: PathBuf,
        #[serde(default)]
        leave_running: bool,
    },
    Kill {
        task: String,
    },
    Run {
        module: PathBuf,
        #[serde(default)]
        args: Vec<String>,
        name: Option<String>,
        #[serde(default)]
        priority: i32,
        #[serde(default)]
        engine: EngineKind,
        #[serde(default)]
        env: Vec<String>,
        #[serde(default)]
        dirs: Vec<Preopen>,
        stdout: Option<PathBuf>,
        stderr: Option<PathBuf>,
    },
    /// Move a daemon task to another host (see docs/network.md).
    Migrate {
        task: String,
        /// Candidate destinations `HOST[:PORT]`, tried in order.
        to: Vec<String>,
        #[serde(default)]
        live: bool,
        /// `auto`, `precompiled` or `portable`.
        #[serde(default = "default_code")]
        code: String,
        #[serde(default = "default_rounds")]
        max_rounds: u32,
        #[serde(default = "default_timeout")]
        timeout_s: u64,
        /// Both sides hash the task's state (memory, globals, stack); a mismatch aborts.
        #[serde(default)]
        verify: bool,
    },
    Restore {
        image: PathBuf,
        module: Option<PathBuf>,
        #[serde(default)]
        engine: EngineKind,
        stdout: Option<PathBuf>,
        stderr: Option<PathBuf>,
    },
}

fn default_code() -> String {
    "auto".into()
}
fn default_rounds() -> u32 {
    8
}
fn default_timeout() -> u64 {
    30
}

/// Responses: `ok` plus whatever the command returns.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tasks: Option<Vec<TaskInfo>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<CheckpointInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `migrate`: the migration report (times measured on both sides).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<serde_json::Value>,
}

impl Response {
    pub fn ok() -> Self {
        Response { ok: true, ..Default::default() }
    }
    pub fn err(msg: impl Into<String>) -> Self {
        Response { ok: false, error: Some(msg.into()), ..Default::default() }
    }
}

/// Parses one request line. Unknown commands and `trigger` come back as
/// `Err(Response)`, the answer to send (after logging).
#[allow(clippy::result_large_err)] // one per request line; boxing buys nothing
pub fn parse_request(line: &str) -> Result<Request, Response> {
    let v: serde_json::Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => return Err(Response::err(format!("bad JSON: {e}"))),
    };
    let cmd = v.get("cmd").and_then(|c| c.as_str()).unwrap_or("").to_string();
    match cmd.as_str() {
        "ps" | "checkpoint" | "kill" | "run" | "restore" | "migrate" => {
            serde_json::from_value(v).map_err(|e| Response::err(format!("bad {cmd} request: {e}")))
        }
        "trigger" => {
            log::info!("trigger received: {line}");
            let mut r = Response::ok();
            r.message = Some("trigger logged; no automatic action configured".into());
            Err(r)
        }
        "" => Err(Response::err("missing \"cmd\"")),
        other => {
            log::warn!("unknown control command {other:?}: {line}");
            Err(Response::err(format!("unknown command {other:?}")))
        }
    }
}

/// Sends one request to `socket`, waits for the answer.
pub fn request(socket: &Path, req: &Request, timeout: Duration) -> Result<Response, ControlError> {
    let sock_err = |source| ControlError::Socket { path: socket.to_path_buf(), source };
    let mut s = UnixStream::connect(socket).map_err(sock_err)?;
    s.set_read_timeout(Some(timeout)).map_err(sock_err)?;
    let mut line = serde_json::to_string(req).map_err(|e| ControlError::Protocol(e.to_string()))?;
    line.push('\n');
    s.write_all(line.as_bytes()).map_err(sock_err)?;
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).map_err(sock_err)?;
    if answer.trim().is_empty() {
        return Err(ControlError::Protocol(format!("no answer from {}", socket.display())));
    }
    serde_json::from_str(answer.trim()).map_err(|e| ControlError::Protocol(format!("{e}: {answer}")))
}

/// Whether something answers on `socket`.
pub fn alive(socket: &Path) -> bool {
    UnixStream::connect(socket).is_ok()
}

/// Serves a Unix socket: each connection on its own thread, each line
/// answered by `handle`. Returns when the listener fails.
/// `in_flight` counts requests read but not yet answered, so a process
/// can wait for its last answer before exiting.
pub fn serve<F>(listener: std::os::unix::net::UnixListener, in_flight: std::sync::Arc<std::sync::atomic::AtomicUsize>, handle: F)
where
    F: Fn(&str) -> Response + Send + Sync + 'static,
{
    use std::sync::atomic::Ordering;
    let handle = std::sync::Arc::new(handle);
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let handle = handle.clone();
        let in_flight = in_flight.clone();
        std::thread::spawn(move || {
            let mut w = match conn.try_clone() {
                Ok(w) => w,
                Err(_) => return,
            };
            for line in BufReader::new(conn).lines() {
                let Ok(line) = line else { break };
                if line.trim().is_empty() {
                    continue;
                }
                in_flight.fetch_add(1, Ordering::SeqCst);
                let resp = handle(line.trim());
                let mut out = serde_json::to_string(&resp).unwrap_or_else(|_| "{\"ok\":false}".into());
                out.push('\n');
                let written = w.write_all(out.as_bytes()).and_then(|_| w.flush());
                in_flight.fetch_sub(1, Ordering::SeqCst);
                if written.is_err() {
                    break;
                }
            }
        });
    }
}

/// Binds a socket path, replacing a stale socket (one nobody answers on).
/// Fails if a live process already listens there.
pub fn bind(path: &Path) -> Result<std::os::unix::net::UnixListener, ControlError> {
    let sock_err = |source| ControlError::Socket { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(sock_err)?;
    }
    if path.exists() {
        if alive(path) {
            return Err(sock_err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "already in use by a running task or daemon")));
        }
        let _ = std::fs::remove_file(path);
    }
    std::os::unix::net::UnixListener::bind(path).map_err(sock_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_and_unknown() {
        assert!(matches!(parse_request(r#"{"cmd":"ps"}"#), Ok(Request::Ps)));
        let r = parse_request(r#"{"cmd":"checkpoint","task":"a","output":"/tmp/x"}"#).unwrap();
        assert!(matches!(r, Request::Checkpoint { leave_running: false, .. }));
        let t = parse_request(r#"{"cmd":"trigger","metric":"page_cache","value":9000}"#).unwrap_err();
        assert!(t.ok);
        let u = parse_request(r#"{"cmd":"dance"}"#).unwrap_err();
        assert!(!u.ok && u.error.unwrap().contains("dance"));
        assert!(!parse_request("not json").unwrap_err().ok);
    }
}
