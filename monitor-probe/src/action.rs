//! What happens on a trigger besides the output line: `--exec SCRIPT` and `--notify SOCKET`.
use crate::event::Event;
use serde::Serialize;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The line sent to the migrator's control socket: `{"cmd":"trigger","event":{...}}\n`.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct NotifyMessage {
    pub cmd: String,
    pub event: Event,
}

/// Run `script` with the event in `MONITOR_*` variables and as one JSON line on stdin.
/// The script's stdout goes to our stderr so `--json` output stays clean.
pub async fn exec(script: &Path, ev: &Event) -> Result<(), String> {
    let json = serde_json::to_string(ev).map_err(|e| e.to_string())?;
    let stderr = std::io::stderr().as_fd().try_clone_to_owned().map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new(script)
        .env("MONITOR_EVENT", serde_json::to_value(ev.event).unwrap().as_str().unwrap_or_default())
        .env("MONITOR_METRIC", ev.metric.name())
        .env("MONITOR_VALUE", ev.value.to_string())
        .env("MONITOR_THRESHOLD", ev.threshold.map(|t| t.to_string()).unwrap_or_default())
        .env("MONITOR_UNIT", &ev.unit)
        .env("MONITOR_HOST", &ev.host)
        .env("MONITOR_TS", &ev.ts)
        .env("MONITOR_EVENT_JSON", &json)
        .stdin(Stdio::piped())
        .stdout(Stdio::from(stderr))
        .spawn()
        .map_err(|e| format!("--exec {}: {e}", script.display()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A script that does not read stdin closes it: not an error.
        let _ = stdin.write_all(format!("{json}\n").as_bytes()).await;
    }
    let status = child.wait().await.map_err(|e| format!("--exec {}: {e}", script.display()))?;
    if !status.success() {
        return Err(format!("--exec {}: {status}", script.display()));
    }
    Ok(())
}

/// Send one `{"cmd":"trigger","event":...}` line to a Unix stream socket and close.
pub async fn notify(socket: &Path, ev: &Event) -> Result<(), String> {
    let msg = NotifyMessage { cmd: "trigger".into(), event: ev.clone() };
    let line = format!("{}\n", serde_json::to_string(&msg).map_err(|e| e.to_string())?);
    let send = async {
        let mut s = tokio::net::UnixStream::connect(socket).await?;
        s.write_all(line.as_bytes()).await?;
        s.shutdown().await
    };
    match tokio::time::timeout(Duration::from_secs(2), send).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("--notify {}: {e}", socket.display())),
        Err(_) => Err(format!("--notify {}: timed out after 2 s", socket.display())),
    }
}
