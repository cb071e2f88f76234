use clap::Parser;

/// STUB: migrator is not implemented yet; its issue is open.
#[derive(Parser)]
#[command(name = "migrator", version, about = "migrator (stub: not implemented yet)")]
struct Cli {}

fn main() -> std::process::ExitCode {
    let _ = Cli::parse();
    eprintln!("migrator: not implemented yet");
    std::process::ExitCode::from(2)
}
