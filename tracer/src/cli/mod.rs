//! Command-line interface: `tracer --pid PID` (the default command) next to subcommands.
//! One subcommand, one file; each `XCommand::execute` returns the exit code.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

pub mod scan;
pub mod trace;
pub mod catalog;
pub mod check;
pub mod eval;
pub mod host;
pub mod k8s;
pub mod record;
pub mod audit;

/// Writes a command's output to FILE, or to stdout; a closed pipe (`tracer … | head`)
/// is not an error worth a message.
pub fn emit(buf: &[u8], output: Option<&std::path::Path>) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::io::Write;
    match output {
        Some(p) => std::fs::write(p, buf).with_context(|| format!("writing {}", p.display()))?,
        None => {
            let mut out = std::io::stdout().lock();
            if let Err(e) = out.write_all(buf).and_then(|_| out.flush()) {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Err(e.into());
                }
            }
        }
    }
    Ok(())
}

/// Exit codes shared by every subcommand (DESIGN.md).
pub const EXIT_OK: u8 = 0;
pub const EXIT_INCOMPATIBLE: u8 = 1;
pub const EXIT_ERROR: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "tracer",
    version,
    about = "Finds the CPU features a running process's reachable code uses (ptrace, no GDB)",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub trace: trace::TraceCommand,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Trace a process (same as the default `tracer --pid PID`).
    Trace(trace::TraceCommand),
    /// This host's CPU features (CPUID + XCR0), as text, feature-set JSON or NFD labels.
    Host(host::HostCommand),
    /// List a catalog's instance types and their distinct CPU feature groups.
    Catalog(catalog::CatalogCommand),
    /// Can this workload run on that host / which instance types? Exit 0 yes, 1 no, 2 error.
    Check(check::CheckCommand),
    /// Count source→destination pairs each policy (ours, CRIU's) accepts on a catalog.
    Eval(eval::EvalCommand),
    /// Full scan of ELF files on disk (executables, libraries, wasmtime .cwasm).
    Scan(scan::ScanCommand),
    /// Kubernetes nodeAffinity (NFD cpuid labels) for a workload.
    K8s(k8s::K8sCommand),
    /// Ground truth: single-step (or sample) a process and report the features it executes.
    Record(record::RecordCommand),
    /// Soundness report: record, path and full mode on one process; record ⊆ path ⊆ full.
    Audit(audit::AuditCommand),
}

impl Cli {
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        match self.command {
            None => self.trace.execute(),
            Some(Command::Trace(t)) => t.execute(),
            Some(Command::Host(c)) => c.execute(),
            Some(Command::Catalog(c)) => c.execute(),
            Some(Command::Check(c)) => c.execute(),
            Some(Command::Eval(c)) => c.execute(),
            Some(Command::K8s(c)) => c.execute(),
            Some(Command::Scan(c)) => c.execute(),
            Some(Command::Record(c)) => c.execute(),
            Some(Command::Audit(c)) => c.execute(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }
}
