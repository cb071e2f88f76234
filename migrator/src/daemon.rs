//! The daemon (`migrator serve`): runs several tasks, driven over
//! `<runtime dir>/daemon.sock` with the JSON-lines protocol of [`control`].
//! Task output goes to files (`<runtime dir>/logs/<name>.stdout|stderr`
//! unless the request names others), opened in append mode so a restored
//! task continues where it stopped.

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::control::{self, Request, Response, TaskInfo};
use crate::engine::{self, EngineKind};
use crate::error::ControlError;
use crate::runner::{self, RunningTask};
use crate::task::{read_image_file, Task, TaskOptions};
use crate::wasi::Stdio;

#[derive(Default)]
struct Daemon {
    tasks: Mutex<BTreeMap<String, RunningTask>>,
    engines: Mutex<HashMap<EngineKind, wasmtime::Engine>>,
}

/// Binds the daemon socket and serves until the process is killed.
pub fn serve_forever() -> Result<(), ControlError> {
    let sock = control::daemon_socket();
    let listener = control::bind(&sock)?;
    log::info!("migrator daemon listening on {}", sock.display());
    eprintln!("migrator: daemon listening on {}", sock.display());
    let d = Arc::new(Daemon::default());
    control::serve(listener, Arc::new(AtomicUsize::new(0)), move |line| d.handle(line));
    Ok(())
}

fn open_log(path: &Path) -> Result<std::fs::File, String> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    OpenOptions::new().create(true).append(true).open(path).map_err(|e| format!("{}: {e}", path.display()))
}

impl Daemon {
    fn handle(&self, line: &str) -> Response {
        match control::parse_request(line) {
            Err(resp) => resp,
            Ok(Request::Ps) => {
                let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
                let mut r = Response::ok();
                r.tasks = Some(tasks.values().map(|t| t.info.lock().unwrap_or_else(|e| e.into_inner()).clone()).collect());
                r
            }
            Ok(Request::Checkpoint { task, output, leave_running }) => {
                let handle = {
                    let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
                    match tasks.get(&task) {
                        Some(t) if t.info.lock().unwrap_or_else(|e| e.into_inner()).state == "running" => t.handle.clone(),
                        Some(_) => return Response::err(format!("task {task} is not running")),
                        None => return Response::err(format!("no task named {task}")),
                    }
                };
                match runner::checkpoint(&handle, output, leave_running, Duration::from_secs(60)) {
                    Ok(ci) => Response { ok: true, checkpoint: Some(ci), ..Default::default() },
                    Err(e) => Response::err(e),
                }
            }
            Ok(Request::Kill { task }) => {
                let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
                match tasks.get(&task) {
                    Some(t) => {
                        t.handle.kill();
                        Response::ok()
                    }
                    None => Response::err(format!("no task named {task}")),
                }
            }
            Ok(Request::Run { module, args, name, priority, engine, env, dirs, stdout, stderr }) => {
                let name = name.unwrap_or_else(|| module.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "task".into()));
                let result = self.start(&name, engine, &module, stdout, stderr, |lm, stdio| {
                    Task::new(lm, TaskOptions { name: name.clone(), priority, args, env, preopens: dirs }, stdio).map_err(|e| e.to_string())
                }, priority);
                result.unwrap_or_else(Response::err)
            }
            Ok(Request::Restore { image, module, engine, stdout, stderr }) => {
                let img = match read_image_file(&image) {
                    Ok(i) => i,
                    Err(e) => return Response::err(format!("{}: {e}", image.display())),
                };
                let module = module.unwrap_or_else(|| PathBuf::from(&img.meta.module_path));
                let name = img.meta.name.clone();
                let prio = img.meta.priority;
                self.start(&name, engine, &module, stdout, stderr, |lm, stdio| Task::restore(lm, &img, stdio, None).map_err(|e| e.to_string()), prio)
                    .unwrap_or_else(Response::err)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn start(
        &self,
        name: &str,
        kind: EngineKind,
        module: &Path,
        stdout: Option<PathBuf>,
        stderr: Option<PathBuf>,
        build: impl FnOnce(&engine::LoadedModule, Stdio) -> Result<Task, String>,
        priority: i32,
    ) -> Result<Response, String> {
        if !control::valid_name(name) {
            return Err(format!("bad task name {name:?}"));
        }
        if control::alive(&control::task_socket(name)) {
            return Err(format!("a foreground task named {name} is running"));
        }
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = tasks.get(name) {
            let st = t.info.lock().unwrap_or_else(|e| e.into_inner()).state.clone();
            if st == "running" {
                return Err(format!("task {name} is already running"));
            }
        }
        let eng = {
            let mut engines = self.engines.lock().unwrap_or_else(|e| e.into_inner());
            match engines.get(&kind) {
                Some(e) => e.clone(),
                None => {
                    let e = engine::new_engine(kind).map_err(|e| e.to_string())?;
                    engines.insert(kind, e.clone());
                    e
                }
            }
        };
        let lm = engine::load_module(module, &eng, kind).map_err(|e| e.to_string())?;
        let logs = control::runtime_dir().join("logs");
        let out = stdout.unwrap_or_else(|| logs.join(format!("{name}.stdout")));
        let err = stderr.unwrap_or_else(|| logs.join(format!("{name}.stderr")));
        let stdio = Stdio { stdin: Box::new(std::io::empty()), stdout: Box::new(open_log(&out)?), stderr: Box::new(open_log(&err)?) };
        let task = build(&lm, stdio)?;
        let info = TaskInfo {
            name: name.to_string(),
            state: "running".into(),
            module: module.display().to_string(),
            engine: kind,
            priority,
            host: "daemon".into(),
            pid: std::process::id(),
            exit_code: None,
            image: None,
            error: None,
        };
        let rt = runner::spawn(task, info.clone()).map_err(|e| e.to_string())?;
        tasks.insert(name.to_string(), rt);
        Ok(Response { ok: true, task: Some(info), ..Default::default() })
    }
}
