use clap::Parser;
use std::process::ExitCode;
use tracer::cli::{Cli, EXIT_ERROR};

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    match cli.execute() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tracer: {}", tracer::error::user_message(&err));
            ExitCode::from(EXIT_ERROR)
        }
    }
}
