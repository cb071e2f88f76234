use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use migrator::control::{self, Request, TaskInfo};
use migrator::engine::{self, EngineKind};
use migrator::wasi::{Preopen, Stdio};
use migrator::{Task, TaskOptions};

use super::{absolute, parse_dir};

/// Run a WASI (preview 1) module: in the foreground, or under the daemon with --detach.
#[derive(clap::Parser)]
pub struct RunCommand {
    /// The module (.wasm).
    pub module: PathBuf,
    /// Task name (default: the module's file stem); `checkpoint --task` finds it by this name.
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long, default_value_t = 0, allow_hyphen_values = true)]
    pub priority: i32,
    /// Code generator: cranelift (native) or pulley (interpreter).
    #[arg(long, default_value = "cranelift")]
    pub engine: EngineKind,
    /// Preopened directory HOST::GUEST (repeatable).
    #[arg(long = "dir", value_parser = parse_dir)]
    pub dirs: Vec<Preopen>,
    /// Environment variable KEY=VALUE for the task (repeatable).
    #[arg(long = "env")]
    pub env: Vec<String>,
    #[command(flatten)]
    pub detach: super::DetachArgs,
    /// Arguments for the task (after `--`).
    #[arg(last = true)]
    pub args: Vec<String>,
}

impl RunCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let name = match &self.name {
            Some(n) => n.clone(),
            None => self.module.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "task".into()),
        };
        if !control::valid_name(&name) {
            anyhow::bail!("bad task name {name:?}: use letters, digits, '-', '_' and '.'");
        }
        let argv0 = self.module.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let mut args = vec![argv0];
        args.extend(self.args.iter().cloned());
        if self.detach.detach {
            let (stdout, stderr) = self.detach.outputs();
            let req = Request::Run {
                module: absolute(&self.module),
                args,
                name: Some(name),
                priority: self.priority,
                engine: self.engine,
                env: self.env,
                dirs: self.dirs,
                stdout,
                stderr,
            };
            return self.detach.hand_to_daemon(&req);
        }
        let eng = engine::new_engine(self.engine)?;
        // Absolute, so the path recorded in images works from any directory.
        let module = absolute(&self.module);
        let lm = engine::load_module(&module, &eng, self.engine).with_context(|| format!("loading {}", self.module.display()))?;
        let info = TaskInfo {
            name: name.clone(),
            state: "running".into(),
            module: absolute(&self.module).display().to_string(),
            engine: self.engine,
            priority: self.priority,
            host: "foreground".into(),
            pid: std::process::id(),
            exit_code: None,
            image: None,
            error: None,
        };
        let opts = TaskOptions { name, priority: self.priority, args, env: self.env, preopens: self.dirs };
        let task = Task::new(&lm, opts, Stdio::inherit())?;
        super::foreground::run(task, info, lm)
    }
}
