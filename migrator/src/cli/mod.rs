//! One subcommand, one file.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use migrator::wasi::Preopen;

mod bench;
mod checkpoint;
mod foreground;
mod kill;
mod migrate;
mod ps;
mod restore;
mod run;
mod serve;

#[derive(Parser)]
#[command(name = "migrator", version, about = "Run WebAssembly (WASI) tasks with portable checkpoint and restore")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    Run(run::RunCommand),
    Serve(serve::ServeCommand),
    Ps(ps::PsCommand),
    Checkpoint(checkpoint::CheckpointCommand),
    Restore(restore::RestoreCommand),
    Kill(kill::KillCommand),
    Bench(bench::BenchCommand),
    Migrate(migrate::MigrateCommand),
}

impl Command {
    pub fn execute(self) -> Result<ExitCode> {
        match self {
            Command::Run(c) => c.execute(),
            Command::Serve(c) => c.execute(),
            Command::Ps(c) => c.execute(),
            Command::Checkpoint(c) => c.execute(),
            Command::Restore(c) => c.execute(),
            Command::Kill(c) => c.execute(),
            Command::Bench(c) => c.execute(),
            Command::Migrate(c) => c.execute(),
        }
    }
}

/// An operation that was tried and failed (as opposed to bad input).
#[derive(Debug)]
pub struct OperationFailed(pub String);
impl std::fmt::Display for OperationFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for OperationFailed {}

/// 1 for a failed operation (trap, refused checkpoint), 2 for everything
/// else (missing file, not wasm, corrupt image, wrong module, no such task).
pub fn exit_code_for(err: &anyhow::Error) -> u8 {
    for cause in err.chain() {
        if cause.downcast_ref::<OperationFailed>().is_some() {
            return 1;
        }
        if let Some(migrator::TaskError::Trap(_)) = cause.downcast_ref::<migrator::TaskError>() {
            return 1;
        }
    }
    2
}

/// `HOST::GUEST` (or just `DIR`, mapped to itself).
pub fn parse_dir(s: &str) -> Result<Preopen, String> {
    let (host, guest) = match s.split_once("::") {
        Some((h, g)) => (h, g),
        None => (s, s),
    };
    if host.is_empty() || guest.is_empty() {
        return Err(format!("bad --dir {s:?}: expected HOST::GUEST"));
    }
    let host = absolute(Path::new(host));
    Ok(Preopen { guest: guest.to_string(), host })
}

/// `--detach` and where a detached task's output goes (run and restore).
#[derive(clap::Args)]
pub struct DetachArgs {
    /// Hand the task to the local daemon (`migrator serve`) instead of running it here.
    #[arg(long)]
    pub detach: bool,
    /// With --detach: where the task's stdout/stderr go (default: files in the runtime dir).
    #[arg(long, requires = "detach")]
    pub stdout: Option<PathBuf>,
    #[arg(long, requires = "detach")]
    pub stderr: Option<PathBuf>,
}

impl DetachArgs {
    /// The output paths, absolute (the daemon has another working directory).
    pub fn outputs(&self) -> (Option<PathBuf>, Option<PathBuf>) {
        (self.stdout.as_deref().map(absolute), self.stderr.as_deref().map(absolute))
    }

    /// Sends `req` (which starts a task) to the local daemon and prints the task it reports.
    pub fn hand_to_daemon(&self, req: &migrator::control::Request) -> Result<ExitCode> {
        use migrator::control;
        let sock = control::daemon_socket();
        if !control::alive(&sock) {
            return Err(migrator::ControlError::NoDaemon(sock).into());
        }
        let resp = control::request(&sock, req, std::time::Duration::from_secs(600))?;
        if !resp.ok {
            return Err(OperationFailed(resp.error.unwrap_or_default()).into());
        }
        println!("{}", serde_json::to_string(&resp.task)?);
        Ok(ExitCode::SUCCESS)
    }
}

pub fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf())
    }
}
