//! `tracer --pid PID [--mode path|full] [--json] [-o FILE]`

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use tracer_lib::trace::{self, Options};

use crate as tracer_lib;

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
    #[arg(long, required = true, allow_hyphen_values = true)]
    pub pid: Option<i32>,
    #[arg(long, value_enum, default_value_t = Mode::Path)]
    pub mode: Mode,
    /// Print the feature-set JSON (DESIGN.md) instead of the human summary.
    #[arg(long)]
    pub json: bool,
    /// Write the output to FILE instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Bytes of each thread's stack copied while the process is stopped.
    #[arg(long, default_value_t = crate::attach::DEFAULT_STACK_BYTES, hide = true)]
    pub stack_bytes: usize,
    /// For these features (comma-separated, or `all`), show how each evidence
    /// instruction is reached from a root.
    #[arg(long, value_delimiter = ',', value_name = "FEATURE")]
    pub explain: Vec<String>,
    /// Python-aware roots (CPython targets): auto or off.
    #[arg(long, value_name = "auto|off", default_value = "auto")]
    pub python: String,
}

impl TraceCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let pid = self.pid.context("--pid is required")?;
        let opts = Options {
            mode: match self.mode {
                Mode::Path => trace::Mode::Path,
                Mode::Full => trace::Mode::Full,
            },
            stack_bytes: self.stack_bytes,
            explain: self.explain.clone(),
            python: trace::PythonMode::parse(&self.python)?,
            ..Options::default()
        };
        let fs = trace::trace_pid(pid, &opts)?;
        let mut buf = Vec::new();
        if self.json {
            fs.write_json(&mut buf)?;
        } else {
            trace::write_human(&fs, &mut buf)?;
        }
        super::emit(&buf, self.output.as_deref())?;
        Ok(ExitCode::SUCCESS)
    }
}
