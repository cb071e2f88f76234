use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use migrator::control::{self, Request};

use super::OperationFailed;

/// Kill a running task (it is gone; no image is written).
#[derive(clap::Parser)]
pub struct KillCommand {
    #[arg(long)]
    pub task: String,
}

impl KillCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let sock = super::checkpoint::find_task(&self.task)?;
        let resp = control::request(&sock, &Request::Kill { task: self.task.clone() }, Duration::from_secs(10))?;
        if !resp.ok {
            return Err(OperationFailed(resp.error.unwrap_or_default()).into());
        }
        Ok(ExitCode::SUCCESS)
    }
}
