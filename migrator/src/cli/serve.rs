use std::process::ExitCode;

use anyhow::Result;

/// Run the daemon: tasks started with `run --detach` / `restore --detach`, driven over
/// `<runtime dir>/daemon.sock` (JSON lines, see docs/migrator.md).
#[derive(clap::Parser)]
pub struct ServeCommand {}

impl ServeCommand {
    pub fn execute(self) -> Result<ExitCode> {
        migrator::daemon::serve_forever()?;
        Ok(ExitCode::SUCCESS)
    }
}
