//! `tracer --pid PID [--mode path|full] [--json] [-o FILE]`

use anyhow::Result;
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Follow code reachable from the process's roots (default).
    Path,
    /// Decode every executable mapping.
    Full,
}

#[derive(Args, Debug)]
pub struct TraceCommand {
    /// Process to trace.
    #[arg(long, required = true)]
    pub pid: Option<i32>,
    #[arg(long, value_enum, default_value_t = Mode::Path)]
    pub mode: Mode,
    /// Print the feature-set JSON (DESIGN.md) instead of the human summary.
    #[arg(long)]
    pub json: bool,
    /// Write the output to FILE instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

impl TraceCommand {
    pub fn execute(self) -> Result<ExitCode> {
        anyhow::bail!("tracing is not implemented yet")
    }
}
