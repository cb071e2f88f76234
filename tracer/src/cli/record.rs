//! `tracer record --pid PID --duration SECS [--sample HZ] [--block] [--json]`

use anyhow::Result;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::record::{self, Method, RecordOptions};

/// How to record: shared by `tracer record` and `tracer audit`.
#[derive(Args, Debug)]
pub struct RecordArgs {
    /// How long to observe the process, in seconds (fractions allowed).
    #[arg(long, default_value_t = 2.0)]
    pub duration: f64,
    /// Sample instead of stepping: interrupt every thread HZ times a second and decode
    /// the basic block at its PC (a lower bound, for long runs).
    #[arg(long, value_name = "HZ", conflicts_with = "block")]
    pub sample: Option<u32>,
    /// Branch-step (PTRACE_SINGLEBLOCK) instead of single-stepping.
    #[arg(long)]
    pub block: bool,
}

impl RecordArgs {
    /// The recorder's options; bad values are errors.
    pub fn options(&self) -> Result<RecordOptions> {
        anyhow::ensure!(self.duration.is_finite() && self.duration > 0.0, "--duration must be a positive number of seconds");
        let method = match (self.sample, self.block) {
            (Some(0), _) => anyhow::bail!("--sample needs a rate above 0 Hz"),
            (Some(hz), _) => Method::Sample { hz },
            (None, true) => Method::Block,
            (None, false) => Method::Step,
        };
        Ok(RecordOptions { duration: Duration::from_secs_f64(self.duration), method })
    }
}

#[derive(Args, Debug)]
pub struct RecordCommand {
    /// Process to record.
    #[arg(long, allow_hyphen_values = true)]
    pub pid: i32,
    #[command(flatten)]
    pub record: RecordArgs,
    /// Print the feature-set JSON (mode "record") instead of the human summary.
    #[arg(long)]
    pub json: bool,
    /// Write the output to FILE instead of standard output.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

impl RecordCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let opts = self.record.options()?;
        let fs = record::record_pid(self.pid, &opts)?;
        let mut buf = Vec::new();
        if self.json {
            fs.write_json(&mut buf)?;
        } else {
            let r = &fs.stats["record"];
            writeln!(
                buf,
                "recorded pid {} for {} ms ({}): {} stops, {} instructions executed, {} distinct, {} threads",
                self.pid, r["record_ms"], opts.method.as_str(), r["stops"], r["executed"], r["distinct"], r["threads_seen"]
            )?;
            crate::trace::write_human(&fs, &mut buf)?;
        }
        super::emit(&buf, self.output.as_deref())?;
        Ok(ExitCode::SUCCESS)
    }
}
