use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use migrator::control::{self, Request};

use super::OperationFailed;

/// Move a task (of the local daemon, or a foreground `migrator run`) to another host (`migrator serve` there), safely:
/// the task keeps running here unless the destination confirms it runs there.
#[derive(clap::Parser)]
pub struct MigrateCommand {
    /// The task (its name under the local daemon).
    #[arg(long)]
    pub task: String,
    /// Destination HOST[:PORT] (default port MIGRATION_PORT or 9876), or candidates A,B,C:
    /// the first reachable and compatible one takes the task.
    #[arg(long, env = "ARM_MIGRATION_HOST", value_delimiter = ',')]
    pub to: Vec<String>,
    /// Pre-copy memory while the task runs; stop it only for the last changed pages.
    #[arg(long)]
    pub live: bool,
    /// How code travels: auto (precompiled when tracer check allows), precompiled (or refuse), portable.
    #[arg(long, default_value = "auto", value_parser = ["auto", "precompiled", "portable"])]
    pub code: String,
    /// Upper bound on pre-copy rounds before the final stop-and-copy.
    #[arg(long, default_value_t = 8)]
    pub max_rounds: u32,
    /// Check end to end that the destination restored exactly the state stopped here: both
    /// sides hash memory, globals and stack (adds the hashing to the downtime); a mismatch
    /// aborts and the task resumes here. The report carries both hashes.
    #[arg(long)]
    pub verify: bool,
    /// Network timeout in seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// Print the migration report as JSON.
    #[arg(long)]
    pub json: bool,
}

impl MigrateCommand {
    pub fn execute(self) -> Result<ExitCode> {
        if self.to.is_empty() {
            anyhow::bail!("no destination: give --to HOST[:PORT] or set ARM_MIGRATION_HOST");
        }
        // A task of the daemon, or a foreground `migrator run` on its own socket.
        let sock = super::checkpoint::find_task(&self.task)?;
        let req = Request::Migrate {
            task: self.task.clone(),
            to: self.to.clone(),
            live: self.live,
            code: self.code,
            max_rounds: self.max_rounds,
            timeout_s: self.timeout,
            verify: self.verify,
        };
        let resp = control::request(&sock, &req, Duration::from_secs(3600))?;
        if !resp.ok {
            return Err(OperationFailed(format!("migrating task {}: {}", self.task, resp.error.unwrap_or_default())).into());
        }
        let rep = resp.migration.unwrap_or_default();
        if self.json {
            println!("{}", serde_json::to_string(&rep)?);
        } else {
            let f = |k: &str| rep.get(k).cloned().unwrap_or_default();
            println!(
                "[Migration] Successfully sent state to {} ({}): task {} runs there; downtime {:.1} ms, total {:.1} ms, code {}",
                f("dest").as_str().unwrap_or(""),
                f("dest_host").as_str().unwrap_or(""),
                self.task,
                f("downtime_ms").as_f64().unwrap_or(0.0),
                f("total_ms").as_f64().unwrap_or(0.0),
                f("code").as_str().unwrap_or("")
            );
        }
        Ok(ExitCode::SUCCESS)
    }
}
