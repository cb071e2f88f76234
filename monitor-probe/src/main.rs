use anyhow::Context;
use clap::Parser;
use monitor_probe::config::{Mode, Options, ThresholdFlags, Thresholds};
use monitor_probe::monitor;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Event-driven migration triggers: page cache, temperature, memory pressure (eBPF).
///
/// Thresholds: flag, else environment variable, else default.
#[derive(Parser, Debug)]
#[command(name = "monitor-probe", version)]
struct Cli {
    /// Page-cache threshold in MB [env: MIGRATION_CACHE_THRESHOLD_MB, default 8192]
    #[arg(long, value_name = "MB", allow_negative_numbers = true)]
    cache_threshold: Option<f64>,
    /// Temperature threshold in °C [env: MIGRATION_TEMP_THRESHOLD_C, default 80]
    #[arg(long, value_name = "C", allow_negative_numbers = true)]
    temp_threshold: Option<f64>,
    /// Memory-pressure threshold in % (100 - MemAvailable/MemTotal) [env: MIGRATION_MEMORY_THRESHOLD_PCT, default 85]
    #[arg(long, value_name = "PCT", allow_negative_numbers = true)]
    memory_threshold: Option<f64>,
    /// One reclaim stall longer than this is a trigger [env: MIGRATION_STALL_THRESHOLD_MS, default 100]
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    stall_threshold_ms: Option<f64>,
    /// Hysteresis: after a trigger, the value must fall below threshold*(1-PCT/100) to clear
    #[arg(long, value_name = "PCT", default_value_t = 5.0)]
    hysteresis: f64,
    /// At most one trigger per metric per SECS
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_secs)]
    cooldown: Duration,
    /// Sample period (output lines, sysfs and meminfo reads, in-kernel sample rate limit)
    #[arg(long, value_name = "SECS", default_value = "1", value_parser = parse_positive_secs)]
    interval: Duration,
    /// Re-seed the in-kernel page-cache count from /proc/meminfo every SECS and report the drift (0: never)
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_secs)]
    resync: Duration,
    /// Emit a `predict` event when the trend will cross a threshold within SECS
    #[arg(long, value_name = "SECS", value_parser = parse_positive_secs)]
    predict: Option<Duration>,
    /// One JSON event a line instead of human lines
    #[arg(long)]
    json: bool,
    /// Root of the sysfs tree to read temperatures from (a fake tree in tests)
    #[arg(long, value_name = "DIR", default_value = "/sys")]
    sysfs_root: PathBuf,
    /// Run SCRIPT on each trigger: event in MONITOR_* env vars and as a JSON line on stdin
    #[arg(long, value_name = "SCRIPT")]
    exec: Option<PathBuf>,
    /// On each trigger send {"cmd":"trigger","event":{...}} to this Unix stream socket
    #[arg(long, value_name = "SOCKET")]
    notify: Option<PathBuf>,
    /// Exit after SECS
    #[arg(long, value_name = "SECS", value_parser = parse_positive_secs)]
    duration: Option<Duration>,
    /// Exit after N trigger/clear/predict events
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Host name put in events [default: this host's name]
    #[arg(long, value_name = "NAME")]
    host: Option<String>,
    /// How many top page-cache files a page_cache trigger lists
    #[arg(long, value_name = "N", default_value_t = 5)]
    top: usize,
    /// Also list the top page-cache files in every page_cache sample (--json; one map walk per sample)
    #[arg(long)]
    sample_top: bool,
    /// PSI trigger: wake when tasks stalled on memory for MS within a 2 s window
    #[arg(long, value_name = "MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=2000))]
    psi_stall_ms: u64,
    /// Benchmark baseline: no eBPF, poll /proc/meminfo every --interval
    #[arg(long)]
    poll_baseline: bool,
    /// Print the resolved configuration as JSON and exit (no root needed)
    #[arg(long)]
    print_config: bool,
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s.parse().map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !v.is_finite() || !(0.0..=1e9).contains(&v) {
        return Err(format!("'{s}' is not a number of seconds >= 0"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn parse_positive_secs(s: &str) -> Result<Duration, String> {
    let d = parse_secs(s)?;
    if d < Duration::from_millis(1) {
        return Err(format!("'{s}' must be at least 0.001 seconds"));
    }
    Ok(d)
}

fn options(cli: Cli) -> anyhow::Result<(Options, bool)> {
    let flags = ThresholdFlags {
        cache_mb: cli.cache_threshold,
        temp_c: cli.temp_threshold,
        memory_pct: cli.memory_threshold,
        stall_ms: cli.stall_threshold_ms,
    };
    let mut o = Options::new(Thresholds::from_env(flags)?);
    o.hysteresis_pct = cli.hysteresis;
    o.cooldown = cli.cooldown;
    o.interval = cli.interval;
    o.resync = cli.resync;
    o.predict = cli.predict;
    o.json = cli.json;
    o.sysfs_root = cli.sysfs_root;
    o.exec = cli.exec;
    o.notify = cli.notify;
    o.duration = cli.duration;
    o.count = cli.count;
    if let Some(h) = cli.host {
        o.host = h;
    }
    o.top = cli.top;
    o.sample_top = cli.sample_top;
    o.psi_stall = Duration::from_millis(cli.psi_stall_ms);
    o.mode = if cli.poll_baseline { Mode::Poll } else { Mode::Ebpf };
    o.validate()?;
    Ok((o, cli.print_config))
}

fn real_main() -> anyhow::Result<()> {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help / --version
            e.print()?;
            return Ok(());
        }
        Err(e) => {
            // One line: clap's first line ("error: invalid value ..."), without the usage block.
            let msg = e.render().to_string();
            let first = msg.lines().next().unwrap_or("invalid arguments").trim_start_matches("error: ").to_string();
            anyhow::bail!("{first} (see --help)");
        }
    };
    let (opts, print_config) = options(cli)?;
    if print_config {
        println!("{}", serde_json::to_string(&opts)?);
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting tokio runtime")?;
    rt.block_on(monitor::run(opts, std::io::stdout()))?;
    Ok(())
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("monitor-probe: {err:#}");
            ExitCode::from(2)
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
