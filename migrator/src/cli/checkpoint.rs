use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use migrator::control::{self, Request};

use super::{absolute, OperationFailed};

/// Checkpoint a running task (foreground or daemon) into an image; the task stops unless --leave-running.
#[derive(clap::Parser)]
pub struct CheckpointCommand {
    #[arg(long)]
    pub task: String,
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    #[arg(long)]
    pub leave_running: bool,
    /// Print the daemon's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

impl CheckpointCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let req = Request::Checkpoint { task: self.task.clone(), output: absolute(&self.output), leave_running: self.leave_running };
        let sock = find_task(&self.task)?;
        let resp = control::request(&sock, &req, Duration::from_secs(120))?;
        if self.json {
            println!("{}", serde_json::to_string(&resp)?);
        }
        if !resp.ok {
            return Err(OperationFailed(format!("checkpoint of {} failed: {}", self.task, resp.error.unwrap_or_default())).into());
        }
        if let (false, Some(c)) = (self.json, resp.checkpoint) {
            eprintln!(
                "checkpointed {} to {} ({} bytes, {} of {} pages stored, stop {} us, capture {} us{})",
                self.task,
                c.image,
                c.bytes,
                c.stored_pages,
                c.memory_pages,
                c.stop_us,
                c.capture_us,
                if c.leave_running { ", still running" } else { "" }
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}

/// The socket that controls task `name`: its own (foreground) or the daemon's.
pub fn find_task(name: &str) -> Result<PathBuf> {
    if !control::valid_name(name) {
        anyhow::bail!("bad task name {name:?}");
    }
    let own = control::task_socket(name);
    if control::alive(&own) {
        return Ok(own);
    }
    let d = control::daemon_socket();
    if control::alive(&d) {
        if let Ok(r) = control::request(&d, &Request::Ps, Duration::from_secs(5)) {
            if r.tasks.unwrap_or_default().iter().any(|t| t.name == name) {
                return Ok(d);
            }
        }
    }
    Err(migrator::ControlError::NoSuchTask { name: name.to_string(), socket: own }.into())
}
