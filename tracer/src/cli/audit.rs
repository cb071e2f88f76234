//! `tracer audit --pid PID [--duration SECS] [--sample HZ] [--json]`

use anyhow::Result;
use clap::Args;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use crate::audit;
use crate::record::{Method, RecordOptions};
use crate::trace::Options;

#[derive(Args, Debug)]
pub struct AuditCommand {
    /// Process to audit.
    #[arg(long, allow_hyphen_values = true)]
    pub pid: i32,
    /// How long to record, in seconds.
    #[arg(long, default_value_t = 2.0)]
    pub duration: f64,
    /// Record by sampling at HZ instead of single-stepping.
    #[arg(long, value_name = "HZ", conflicts_with = "block")]
    pub sample: Option<u32>,
    /// Record by branch-stepping (PTRACE_SINGLEBLOCK).
    #[arg(long)]
    pub block: bool,
    /// Python-aware roots in path mode: auto (when the target is CPython) or off.
    #[arg(long, value_name = "auto|off", default_value = "auto")]
    pub python: String,
    /// Print the audit as JSON.
    #[arg(long)]
    pub json: bool,
}

impl AuditCommand {
    /// Exit 0 when record ⊆ path, 1 when path mode missed an executed feature.
    pub fn execute(self) -> Result<ExitCode> {
        anyhow::ensure!(self.duration.is_finite() && self.duration > 0.0, "--duration must be a positive number of seconds");
        let method = match (self.sample, self.block) {
            (Some(0), _) => anyhow::bail!("--sample needs a rate above 0 Hz"),
            (Some(hz), _) => Method::Sample { hz },
            (None, true) => Method::Block,
            (None, false) => Method::Step,
        };
        let rec = RecordOptions { duration: Duration::from_secs_f64(self.duration), method };
        let opts = Options { python: crate::trace::PythonMode::parse(&self.python)?, ..Options::default() };
        let a = audit::audit_pid(self.pid, &rec, &opts)?;
        let mut out = std::io::stdout().lock();
        if self.json {
            serde_json::to_writer_pretty(&mut out, &a)?;
            writeln!(out)?;
        } else {
            a.write_human(&mut out)?;
        }
        Ok(ExitCode::from(if a.misses.is_empty() { super::EXIT_OK } else { super::EXIT_INCOMPATIBLE }))
    }
}
