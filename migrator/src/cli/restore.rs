use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use migrator::control::{Request, TaskInfo};
use migrator::engine::{self, EngineKind};
use migrator::task::read_image_file;
use migrator::wasi::{Preopen, Stdio};
use migrator::Task;

use super::{absolute, parse_dir};

/// Continue a task from a checkpoint image (in the foreground, or under the daemon with --detach).
#[derive(clap::Parser)]
pub struct RestoreCommand {
    pub image: PathBuf,
    /// The module (default: the path recorded in the image); its hash must match the image.
    #[arg(long)]
    pub module: Option<PathBuf>,
    #[arg(long, default_value = "cranelift")]
    pub engine: EngineKind,
    /// Map a guest directory of the image to another host directory: HOST::GUEST.
    #[arg(long = "dir", value_parser = parse_dir)]
    pub dirs: Vec<Preopen>,
    #[command(flatten)]
    pub detach: super::DetachArgs,
}

impl RestoreCommand {
    pub fn execute(self) -> Result<ExitCode> {
        if self.detach.detach {
            let (stdout, stderr) = self.detach.outputs();
            let req = Request::Restore {
                image: absolute(&self.image),
                module: self.module.map(|m| absolute(&m)),
                engine: self.engine,
                stdout,
                stderr,
            };
            return self.detach.hand_to_daemon(&req);
        }
        let image = read_image_file(&self.image).with_context(|| format!("reading image {}", self.image.display()))?;
        let module = absolute(&self.module.clone().unwrap_or_else(|| PathBuf::from(&image.meta.module_path)));
        let eng = engine::new_engine(self.engine)?;
        let lm = engine::load_module(&module, &eng, self.engine).with_context(|| format!("loading {}", module.display()))?;
        let preopens = if self.dirs.is_empty() { None } else { Some(self.dirs) };
        let task = Task::restore(&lm, &image, Stdio::inherit(), preopens)
            .with_context(|| format!("restoring {}", self.image.display()))?;
        let info = TaskInfo {
            name: image.meta.name.clone(),
            state: "running".into(),
            module: absolute(&module).display().to_string(),
            engine: self.engine,
            priority: image.meta.priority,
            host: "foreground".into(),
            pid: std::process::id(),
            exit_code: None,
            image: None,
            error: None,
        };
        super::foreground::run(task, info, lm)
    }
}
