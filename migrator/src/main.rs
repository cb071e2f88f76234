//! `migrator`: run WASI tasks with portable checkpoint and restore.
//! Thin binary: parses arguments, calls the library, maps outcomes to exit
//! codes (0 ok / task's own exit code, 1 operation failed, 2 bad input).

use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn"))
        .format_target(false)
        .init();
    let cli = cli::Cli::parse();
    match cli.command.execute() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("migrator: {err:#}");
            ExitCode::from(cli::exit_code_for(&err))
        }
    }
}
