use clap::Parser as _;
use std::process::ExitCode;
use tracer::cli::{Cli, EXIT_ERROR};

fn main() -> ExitCode {
    // goblin logs its own warnings about malformed ELF input; our one-line error says what matters.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,goblin=error")).init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // One line, not clap's multi-line usage block.
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ");
            eprintln!("tracer: {first} (see tracer --help)");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    match cli.execute() {
        Ok(code) => code,
        Err(err) => {
            eprintln!("tracer: {}", tracer::error::user_message(&err));
            ExitCode::from(EXIT_ERROR)
        }
    }
}
