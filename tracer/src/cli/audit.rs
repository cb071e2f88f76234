//! `tracer audit --pid PID [--duration SECS] [--sample HZ] [--json]`

use anyhow::Result;
use clap::Args;
use std::io::Write;
use std::process::ExitCode;

use crate::audit;
use crate::trace::Options;

#[derive(Args, Debug)]
pub struct AuditCommand {
    /// Process to audit.
    #[arg(long, allow_hyphen_values = true)]
    pub pid: i32,
    #[command(flatten)]
    pub record: super::record::RecordArgs,
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
        let rec = self.record.options()?;
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
