use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use migrator::engine::EngineKind;

/// Run the daemon: tasks started with `run --detach` / `restore --detach`, driven over
/// `<runtime dir>/daemon.sock` (JSON lines, see docs/migrator.md); with a migration key
/// (`MIGRATION_TOKEN_FILE`) it also receives tasks from other hosts over TCP (docs/network.md).
#[derive(clap::Parser)]
pub struct ServeCommand {
    /// TCP address to receive tasks on (default 127.0.0.1:$MIGRATION_PORT, port 9876).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Do not receive tasks over the network.
    #[arg(long, conflicts_with = "listen")]
    pub no_listen: bool,
    /// Engine for tasks received from other hosts.
    #[arg(long, default_value = "cranelift")]
    pub engine: EngineKind,
    /// Use this `tracer host --json` file as this host's CPU features (default: run `tracer host`).
    #[arg(long, value_name = "FILE")]
    pub host_features: Option<PathBuf>,
    /// Refuse precompiled code from peers (always compile the module here).
    #[arg(long)]
    pub no_precompiled: bool,
    /// Where triggers from monitor-probe (`--notify <runtime dir>/daemon.sock`) move tasks:
    /// candidates HOST[:PORT],... (default ARM_MIGRATION_HOST).
    #[arg(long, value_delimiter = ',', value_name = "HOSTS")]
    pub migrate_to: Vec<String>,
    /// Triggered migrations pre-copy memory (live).
    #[arg(long)]
    pub live: bool,
    /// Tasks moved per trigger (priority first, then largest memory).
    #[arg(long, default_value_t = 1)]
    pub move_count: usize,
}

impl ServeCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let default = format!("127.0.0.1:{}", migrator::net::port());
        let has_key = migrator::net::auth::token_file().is_some();
        let listen = match (&self.listen, self.no_listen) {
            (_, true) => None,
            (Some(a), _) => Some(migrator::net::resolve_dest(a).map_err(anyhow::Error::msg)?),
            (None, _) if has_key => Some(default),
            (None, _) => None,
        };
        let opts = migrator::daemon::ServeOptions {
            listen,
            listen_required: self.listen.is_some(),
            engine: self.engine,
            host_features: self.host_features,
            no_precompiled: self.no_precompiled,
            trigger_to: self.migrate_to,
            trigger_migrate: migrator::migrate::MigrateOptions { live: self.live, ..Default::default() },
            trigger_count: self.move_count,
        };
        migrator::daemon::serve_with(opts)?;
        Ok(ExitCode::SUCCESS)
    }
}
