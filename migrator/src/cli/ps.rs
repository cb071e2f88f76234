use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use migrator::control::{self, Request, TaskInfo};

/// List tasks: the daemon's and every foreground task of this user.
#[derive(clap::Parser)]
pub struct PsCommand {
    #[arg(long)]
    pub json: bool,
}

impl PsCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let mut tasks: Vec<TaskInfo> = Vec::new();
        let d = control::daemon_socket();
        if control::alive(&d) {
            if let Ok(r) = control::request(&d, &Request::Ps, Duration::from_secs(5)) {
                tasks.extend(r.tasks.unwrap_or_default());
            }
        }
        if let Ok(dir) = std::fs::read_dir(control::runtime_dir().join("tasks")) {
            for e in dir.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "sock") {
                    if let Ok(r) = control::request(&p, &Request::Ps, Duration::from_secs(2)) {
                        tasks.extend(r.tasks.unwrap_or_default());
                    }
                }
            }
        }
        tasks.sort_by(|a, b| a.name.cmp(&b.name));
        if self.json {
            println!("{}", serde_json::to_string(&tasks)?);
        } else {
            println!("{:<20} {:<13} {:<9} {:>4} {:<10} {:>7}  MODULE", "NAME", "STATE", "ENGINE", "PRIO", "WHERE", "PID");
            for t in &tasks {
                println!(
                    "{:<20} {:<13} {:<9} {:>4} {:<10} {:>7}  {}",
                    t.name, t.state, t.engine, t.priority, t.host, t.pid, t.module
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
