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
use crate::migrate::{self, Hooks, MigrateOptions};
use crate::runner::{self, RunningTask};
use crate::task::{read_image_file, Task, TaskOptions};
use crate::wasi::Stdio;

#[derive(Default)]
struct Daemon {
    tasks: Mutex<BTreeMap<String, RunningTask>>,
    engines: Mutex<HashMap<EngineKind, wasmtime::Engine>>,
    /// Migration hooks of the tasks started here (see [`migrate::spawn`]).
    hooks: Mutex<HashMap<String, Arc<Hooks>>>,
    net: ServeOptions,
    host_info: Mutex<Option<crate::net::protocol::HostInfo>>,
}

/// Network side of `migrator serve`.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// TCP address to receive tasks on (None: do not listen).
    pub listen: Option<String>,
    /// Failing to listen is fatal (the address was given explicitly).
    pub listen_required: bool,
    /// Engine received tasks run under.
    pub engine: EngineKind,
    /// A `tracer host --json` file standing in for this host's features.
    pub host_features: Option<PathBuf>,
    pub no_precompiled: bool,
    /// Where triggers (`{"cmd":"trigger"}` from monitor-probe) send tasks: candidates in order.
    pub trigger_to: Vec<String>,
    /// How triggered migrations run.
    pub trigger_migrate: MigrateOptions,
    /// Tasks moved per trigger.
    pub trigger_count: usize,
}

/// Binds the daemon socket and serves until the process is killed.
pub fn serve_forever() -> Result<(), ControlError> {
    serve_with(ServeOptions::default())
}

/// [`serve_forever`] with the network side configured.
pub fn serve_with(opts: ServeOptions) -> Result<(), ControlError> {
    let sock = control::daemon_socket();
    let listener = control::bind(&sock)?;
    log::info!("migrator daemon listening on {}", sock.display());
    eprintln!("migrator: daemon listening on {}", sock.display());
    let d = Arc::new(Daemon { net: opts.clone(), ..Default::default() });
    if let Some(addr) = &opts.listen {
        let tcp = crate::net::auth::key_from_env().map_err(|e| ControlError::Protocol(e)).and_then(|key| {
            let l = std::net::TcpListener::bind(addr).map_err(|e| ControlError::Protocol(format!("cannot listen on {addr}: {e}")))?;
            Ok((l, key))
        });
        match tcp {
            Ok((l, key)) => {
                let features = match &opts.host_features {
                    Some(p) => std::fs::read(p).map_err(|e| format!("{}: {e}", p.display())).and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string())),
                    None => migrate::host_features(),
                };
                *d.host_info.lock().unwrap_or_else(|e| e.into_inner()) = Some(migrate::make_host_info(opts.engine, features));
                let local = l.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| addr.clone());
                eprintln!("migrator: receiving tasks on {local} (engine {})", opts.engine);
                let recv: Arc<dyn migrate::Receiver> = d.clone();
                std::thread::spawn(move || migrate::serve_tcp(l, recv, Arc::new(migrate::Ledger::default()), Arc::new(key)));
            }
            Err(e) if opts.listen_required => return Err(e),
            Err(e) => eprintln!("migrator: not receiving tasks over the network: {e}"),
        }
    }
    control::serve(listener, Arc::new(AtomicUsize::new(0)), move |line| d.handle(line));
    Ok(())
}

impl migrate::Receiver for Daemon {
    fn engine_kind(&self) -> EngineKind {
        self.net.engine
    }
    fn engine(&self, kind: EngineKind) -> Result<wasmtime::Engine, String> {
        self.engine_for(kind)
    }
    fn has_task(&self, name: &str) -> bool {
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let running = tasks.get(name).is_some_and(|t| {
            let st = t.info.lock().unwrap_or_else(|e| e.into_inner()).state.clone();
            st == "running" || st == "migrating" || st == "in-doubt"
        });
        running || control::alive(&control::task_socket(name))
    }
    fn start(&self, task: Task, lm: engine::LoadedModule) -> Result<(), String> {
        let name = task.name.clone();
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let info = TaskInfo {
            name: name.clone(),
            state: "running".into(),
            module: lm.path.display().to_string(),
            engine: lm.kind,
            priority: task.priority,
            host: "daemon".into(),
            pid: std::process::id(),
            exit_code: None,
            image: None,
            error: None,
        };
        let (rt, hooks) = migrate::spawn(task, info, lm).map_err(|e| e.to_string())?;
        tasks.insert(name.clone(), rt);
        self.hooks.lock().unwrap_or_else(|e| e.into_inner()).insert(name, hooks);
        Ok(())
    }
    fn host_info(&self) -> crate::net::protocol::HostInfo {
        self.host_info.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_else(|| migrate::make_host_info(self.net.engine, Err("not configured".into())))
    }
    fn accept_precompiled(&self) -> bool {
        !self.net.no_precompiled
    }
}

pub(crate) fn open_log(path: &Path) -> Result<std::fs::File, String> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    OpenOptions::new().create(true).append(true).open(path).map_err(|e| format!("{}: {e}", path.display()))
}

impl Daemon {
    fn engine_for(&self, kind: EngineKind) -> Result<wasmtime::Engine, String> {
        let mut engines = self.engines.lock().unwrap_or_else(|e| e.into_inner());
        match engines.get(&kind) {
            Some(e) => Ok(e.clone()),
            None => {
                let e = engine::new_engine(kind).map_err(|e| e.to_string())?;
                engines.insert(kind, e.clone());
                Ok(e)
            }
        }
    }

    fn hooks_of(&self, name: &str) -> Option<Arc<Hooks>> {
        self.hooks.lock().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// Running tasks in the order triggers move them: priority (highest
    /// first), then memory (largest first), then name.
    fn migration_order(&self) -> Vec<(String, Arc<Hooks>)> {
        let all: Vec<(String, Arc<Hooks>)> = self.hooks.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(n, h)| (n.clone(), h.clone())).collect();
        let mut v: Vec<(i32, u64, String, Arc<Hooks>)> = all
            .into_iter()
            .filter(|(_, h)| h.info.lock().unwrap_or_else(|e| e.into_inner()).state == "running")
            .filter_map(|(n, h)| {
                let prio = h.info.lock().unwrap_or_else(|e| e.into_inner()).priority;
                let mem = h.call(false, |t| t.memory_bytes() as u64)?;
                Some((prio, mem, n, h))
            })
            .collect();
        v.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        v.into_iter().map(|(_, _, n, h)| (n, h)).collect()
    }

    fn trigger(&self, v: &serde_json::Value) -> Response {
        let ev = v.get("event").cloned().unwrap_or_default();
        let metric = ev.get("metric").and_then(|m| m.as_str()).unwrap_or("?").to_string();
        eprintln!(
            "[Migration Trigger] {} {}{} over threshold {}",
            metric,
            ev.get("value").map(|x| x.to_string()).unwrap_or_default(),
            ev.get("unit").and_then(|u| u.as_str()).unwrap_or(""),
            ev.get("threshold").map(|x| x.to_string()).unwrap_or_default()
        );
        let to = if self.net.trigger_to.is_empty() {
            std::env::var("ARM_MIGRATION_HOST").map(|h| vec![h]).unwrap_or_default()
        } else {
            self.net.trigger_to.clone()
        };
        let mut r = Response::ok();
        if to.is_empty() {
            r.message = Some("trigger logged; no destination configured (serve --migrate-to or ARM_MIGRATION_HOST)".into());
            return r;
        }
        let picked: Vec<(String, Arc<Hooks>)> = self.migration_order().into_iter().take(self.net.trigger_count.max(1)).collect();
        if picked.is_empty() {
            r.message = Some("trigger logged; no running task to move".into());
            return r;
        }
        let names: Vec<String> = picked.iter().map(|(n, _)| n.clone()).collect();
        r.message = Some(format!("moving {} to the first of {}", names.join(", "), to.join(",")));
        let opts = self.net.trigger_migrate.clone();
        // Trigger-to-running is measured from the kernel's crossing (eBPF
        // `kernel_ns`) or the monitor's line (`mono_ns`), same clock as ours.
        let since = ev.get("kernel_ns").or(ev.get("mono_ns")).and_then(|x| x.as_u64());
        let received = crate::net::sys::mono_ns();
        std::thread::spawn(move || {
            for (name, h) in picked {
                eprintln!("[Migration] Trigger ({metric}): moving task {name}");
                match migrate::migrate_task(&h, &to, &opts) {
                    Ok(rep) => {
                        let now = crate::net::sys::mono_ns();
                        let ms = |t: u64| now.saturating_sub(t) as f64 / 1e6;
                        eprintln!(
                            "[Migration] Trigger to running on {}: {:.1} ms from the monitor's event{} ({:.1} ms from the trigger reaching the migrator)",
                            rep.dest,
                            since.map(ms).unwrap_or(f64::NAN),
                            if ev.get("kernel_ns").is_some() { " (kernel crossing)" } else { "" },
                            ms(received)
                        );
                        eprintln!("[Migration] report {}", serde_json::to_string(&rep).unwrap_or_default());
                    }
                    Err(e) => eprintln!("[Migration] Task {name} stays here: {e}"),
                }
            }
        });
        r
    }

    fn handle(&self, line: &str) -> Response {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            if v.get("cmd").and_then(|c| c.as_str()) == Some("trigger") {
                log::info!("trigger received: {line}");
                return self.trigger(&v);
            }
        }
        match control::parse_request(line) {
            Ok(Request::Migrate { task, to, live, code, max_rounds, timeout_s, verify }) => {
                let Some(h) = self.hooks_of(&task) else { return Response::err(format!("no task named {task} under this daemon")) };
                migrate::answer_request(&h, &to, &MigrateOptions { live, code, max_rounds, timeout_s, verify })
            }
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
        let eng = self.engine_for(kind)?;
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
        let (rt, hooks) = migrate::spawn(task, info.clone(), lm).map_err(|e| e.to_string())?;
        tasks.insert(name.to_string(), rt);
        self.hooks.lock().unwrap_or_else(|e| e.into_inner()).insert(name.to_string(), hooks);
        Ok(Response { ok: true, task: Some(info), ..Default::default() })
    }
}
