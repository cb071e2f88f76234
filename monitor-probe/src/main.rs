use clap::Parser;

/// STUB: monitor-probe is not implemented yet; its issue is open.
#[derive(Parser)]
#[command(name = "monitor-probe", version, about = "monitor-probe (stub: not implemented yet)")]
struct Cli {}

fn main() -> std::process::ExitCode {
    let _ = Cli::parse();
    eprintln!("monitor-probe: not implemented yet");
    std::process::ExitCode::from(2)
}
