//! Moving a running task to another host: the source side
//! ([`migrate_task`]), the destination side ([`serve_connection`]) and the
//! task driver both use ([`spawn`]).
//!
//! Handover (docs/network.md has the full state table):
//! prepare (auth, compatibility, offer, code) → [pre-copy rounds] → stop →
//! state → destination restores (not running) → `Commit` → destination
//! starts → `Started` → source drops its copy. Until `Started` the source
//! holds the task stopped and resumes it on any failure; the destination
//! starts it only after `Commit`. A lost connection after `Commit` is
//! resolved by asking the destination (`Status`), which then either reports
//! the task started or promises never to start it.

use std::collections::HashMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::control::{Response, TaskInfo};
use crate::engine::{self, EngineKind, LoadedModule, TASK_THREAD_STACK};
use crate::image::{Image, PAGE};
use crate::net::frame::{DataWriter, Framed, FrameError, KIND_DATA, KIND_MSG, MAX_FRAME, PRE_AUTH_LIMIT};
use crate::net::protocol::*;
use crate::net::{self, auth};
use crate::runner::{set_state, RunningTask, TaskEnd};
use crate::task::Task;

/// `[Migration] ...` progress lines on stderr (the seed's familiar format).
macro_rules! say {
    ($($a:tt)*) => {{
        let line = format!($($a)*);
        log::info!("{line}");
        eprintln!("[Migration] {line}");
    }};
}

// ---------------------------------------------------------------------------
// Task driver with hooks

/// Work done on the task's own thread while it is stopped.
pub type Job = Box<dyn FnOnce(&mut Task) -> After + Send>;

/// What the task does after a [`Job`].
pub enum After {
    Resume,
    /// Stay stopped and wait for the next job.
    Hold,
    /// The task now runs elsewhere: end this copy.
    Migrated(String),
}

/// How to reach a task's thread, and what it was built from.
pub struct Hooks {
    tx: Mutex<mpsc::Sender<Job>>,
    pub lm: LoadedModule,
    pub handle: crate::TaskHandle,
    pub info: Arc<Mutex<TaskInfo>>,
    /// One migration at a time.
    pub busy: Mutex<bool>,
}

impl Hooks {
    /// Runs `f` on the task's thread at its next stop; returns its result
    /// (None if the task ended first).
    pub fn call<R: Send + 'static>(&self, hold: bool, f: impl FnOnce(&mut Task) -> R + Send + 'static) -> Option<R> {
        let (tx, rx) = mpsc::channel();
        let job: Job = Box::new(move |t| {
            let _ = tx.send(f(t));
            if hold {
                After::Hold
            } else {
                After::Resume
            }
        });
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).send(job).ok()?;
        self.handle.request_stop();
        rx.recv().ok()
    }

    /// Sends a job to a held task (no stop request needed).
    fn send(&self, job: Job) -> bool {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).send(job).is_ok()
    }

    pub fn resume(&self) {
        self.send(Box::new(|_| After::Resume));
    }

    pub fn end_migrated(&self, dest: String) {
        self.send(Box::new(move |_| After::Migrated(dest)));
    }
}

/// Starts `task` on its thread: like [`crate::runner::spawn`] (checkpoint
/// requests are served the same way), plus [`Hooks`] for migration.
pub fn spawn(task: Task, info: TaskInfo, lm: LoadedModule) -> std::io::Result<(RunningTask, Arc<Hooks>)> {
    let handle = task.handle();
    let info = Arc::new(Mutex::new(info));
    let (tx, rx) = mpsc::channel::<Job>();
    let hooks = Arc::new(Hooks { tx: Mutex::new(tx), lm, handle: handle.clone(), info: info.clone(), busy: Mutex::new(false) });
    let info2 = info.clone();
    let join = std::thread::Builder::new()
        .name(format!("task-{}", task.name))
        .stack_size(TASK_THREAD_STACK)
        .spawn(move || crate::runner::drive(task, &info2, |task| run_jobs(task, &info2, &rx)))?;
    Ok((RunningTask { handle, info, join: Some(join) }, hooks))
}

/// Migration jobs queued for a stopped task; a held task waits here for the next one.
/// Returns the task's end when it migrated.
fn run_jobs(task: &mut Task, info: &Mutex<TaskInfo>, rx: &mpsc::Receiver<Job>) -> Option<TaskEnd> {
    let mut next = rx.try_recv().ok();
    while let Some(job) = next.take() {
        match job(task) {
            After::Resume => next = rx.try_recv().ok(),
            After::Hold => {
                set_state(info, |i| i.state = "migrating".into());
                next = rx.recv().ok();
                set_state(info, |i| i.state = "running".into());
            }
            After::Migrated(dest) => {
                set_state(info, |i| {
                    i.state = "migrated".into();
                    i.image = Some(format!("tcp://{dest}"));
                });
                return Some(TaskEnd::Checkpointed(PathBuf::from(format!("tcp://{dest}"))));
            }
        }
    }
    None
}

fn compat_hash(e: &wasmtime::Engine) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    e.precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}

/// The `tracer` binary: `MIGRATOR_TRACER`, else next to this executable, else `tracer` on PATH.
pub fn tracer_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("MIGRATOR_TRACER") {
        return PathBuf::from(p);
    }
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(|d| d.to_path_buf())) {
        let p = dir.join("tracer");
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("tracer")
}

/// `tracer host --json` of this host.
pub fn host_features() -> Result<serde_json::Value, String> {
    let out = std::process::Command::new(tracer_bin())
        .args(["host", "--json"])
        .output()
        .map_err(|e| format!("running {} host: {e}", tracer_bin().display()))?;
    if !out.status.success() {
        return Err(format!("tracer host failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("tracer host output: {e}"))
}

/// Features used by precompiled code: `tracer scan CWASM --json`, cached by the code's hash.
fn scan_code(code: &[u8]) -> Result<PathBuf, String> {
    let dir = crate::instrument::cache_dir().join("scan");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let h = &crate::instrument::module_hash(code)[..32];
    let json = dir.join(format!("{h}.json"));
    if json.exists() {
        return Ok(json);
    }
    let cwasm = dir.join(format!("{h}.cwasm"));
    std::fs::write(&cwasm, code).map_err(|e| format!("{}: {e}", cwasm.display()))?;
    let tmp = dir.join(format!(".{h}.json.tmp{}", std::process::id()));
    let out = std::process::Command::new(tracer_bin())
        .arg("scan")
        .arg(&cwasm)
        .arg("--json")
        .arg("-o")
        .arg(&tmp)
        .output()
        .map_err(|e| format!("running tracer scan: {e}"))?;
    let _ = std::fs::remove_file(&cwasm);
    if !out.status.success() {
        return Err(format!("tracer scan failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    std::fs::rename(&tmp, &json).map_err(|e| e.to_string())?;
    Ok(json)
}

/// `tracer check` of the precompiled code against the destination's features:
/// Ok(None) compatible, Ok(Some(reason)) not, Err(why it could not be decided).
fn check_code(code: &[u8], dest_features: &serde_json::Value) -> Result<Option<String>, String> {
    let workload = scan_code(code)?;
    let dir = tempfile_dir()?;
    let host = dir.join(format!("dest-{}.json", std::process::id()));
    std::fs::write(&host, serde_json::to_vec(dest_features).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let out = std::process::Command::new(tracer_bin())
        .arg("check")
        .arg("--workload")
        .arg(&workload)
        .arg("--dest")
        .arg(&host)
        .arg("--json")
        .output()
        .map_err(|e| format!("running tracer check: {e}"))?;
    let _ = std::fs::remove_file(&host);
    match out.status.code() {
        Some(0) => Ok(None),
        Some(1) => {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let mut names: Vec<String> = Vec::new();
            collect_missing(&v, &mut names);
            names.sort();
            names.dedup();
            Ok(Some(if names.is_empty() {
                "tracer check: not compatible".into()
            } else {
                format!("destination lacks {} used by the precompiled code", names.join(", "))
            }))
        }
        _ => Err(format!("tracer check failed: {}", String::from_utf8_lossy(&out.stderr).trim())),
    }
}

fn collect_missing(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if k == "missing" {
                    if let Some(a) = x.as_array() {
                        out.extend(a.iter().filter_map(|e| e.get("feature").and_then(|f| f.as_str()).map(String::from)));
                    }
                } else {
                    collect_missing(x, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_missing(x, out)),
        _ => {}
    }
}

fn tempfile_dir() -> Result<PathBuf, String> {
    let d = crate::control::runtime_dir().join("tmp");
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    Ok(d)
}

fn fe(e: FrameError) -> String {
    e.to_string()
}

// ---------------------------------------------------------------------------
// Source side

/// How to migrate.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct MigrateOptions {
    pub live: bool,
    /// `auto`, `precompiled` (refuse if impossible) or `portable`.
    pub code: String,
    pub max_rounds: u32,
    /// Connection / I/O timeout in seconds.
    pub timeout_s: u64,
    /// Compare the state hash of both sides before committing.
    pub verify: bool,
}

impl Default for MigrateOptions {
    fn default() -> Self {
        MigrateOptions { live: false, code: "auto".into(), max_rounds: 8, timeout_s: 30, verify: false }
    }
}

/// What a migration did, with times measured on the source.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct MigrationReport {
    pub task: String,
    pub dest: String,
    pub dest_host: String,
    pub dest_engine: String,
    pub code: String,
    pub code_reason: String,
    pub live: bool,
    pub rounds: Vec<RoundReport>,
    /// Why pre-copy ended: converged, max rounds, or dirtying faster than the link.
    pub precopy_end: String,
    /// How changed pages were found (`--live`): kernel write tracking or page comparison.
    #[serde(default)]
    pub dirty_tracking: String,
    pub memory_bytes: u64,
    /// Bytes on the wire (frames), both directions.
    pub bytes_sent: u64,
    /// Stop request to task stopped (µs).
    pub stop_us: u64,
    /// Task stopped on the source to `Started` received from the destination (ms).
    pub downtime_ms: f64,
    /// From the migrate request to `Started` (ms).
    pub total_ms: f64,
    pub prepare_ms: f64,
    pub dest_load_ms: f64,
    pub dest_restore_us: u64,
    pub dest_start_us: u64,
    pub final_pages: u64,
    /// With `--verify`: [`Task::state_hash`] on the source when stopped, and
    /// on the destination when restored (equal, or the migration aborted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest_state_hash: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct RoundReport {
    pub round: u32,
    pub pages: u64,
    /// Task paused while the changed pages were found and copied (µs).
    pub pause_us: u64,
    pub send_ms: f64,
}

/// Failure classes: the task is back running on the source in every case
/// except `InDoubt`.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("refused before the task was stopped: {0}")]
    Refused(String),
    #[error("{0}; the task keeps running on this host")]
    Failed(String),
    #[error("{0}; the task was resumed on this host")]
    Resumed(String),
    #[error("{0}; outcome unknown: the task stays paused here until the destination answers")]
    InDoubt(String),
    #[error("no destination took the task ({0}); the task keeps running on this host")]
    AllFailed(String),
}

struct Conn {
    c: Framed,
}

impl Conn {
    fn connect(dest: &str, key: &[u8], timeout: Duration) -> Result<(Conn, HostInfo), String> {
        let addrs: Vec<_> = dest.to_socket_addrs().map_err(|e| format!("{dest}: {e}"))?.collect();
        let mut last = format!("{dest}: no address");
        for a in addrs {
            match TcpStream::connect_timeout(&a, timeout.min(Duration::from_secs(5))) {
                Ok(s) => {
                    let mut c = Framed::new(s).map_err(|e| e.to_string())?;
                    c.set_timeout(Some(timeout)).map_err(|e| e.to_string())?;
                    let host = handshake(&mut c, key)?;
                    return Ok((Conn { c }, host));
                }
                Err(e) => last = format!("connecting to {a}: {e}"),
            }
        }
        Err(last)
    }
}

fn handshake(c: &mut Framed, key: &[u8]) -> Result<HostInfo, String> {
    let ns = auth::nonce();
    c.send(&Msg::Hello { version: PROTOCOL_VERSION, nonce: hex::encode(ns) }).map_err(fe)?;
    let (nd, proof) = match c.recv::<Msg>().map_err(fe)? {
        Msg::Challenge { nonce, proof } => (hex::decode(nonce).unwrap_or_default(), hex::decode(proof).unwrap_or_default()),
        Msg::Error { message } => return Err(format!("destination: {message}")),
        m => return Err(format!("unexpected {m:?} during authentication")),
    };
    if nd.len() != 32 || !auth::verify(&auth::proof(key, auth::DEST_LABEL, &ns, &nd), &proof) {
        return Err("destination failed authentication (different MIGRATION_TOKEN_FILE key?)".into());
    }
    let mine = auth::proof(key, auth::SOURCE_LABEL, &ns, &nd);
    c.send(&Msg::Auth { proof: hex::encode(mine) }).map_err(fe)?;
    c.limit = MAX_FRAME;
    match c.recv::<Msg>().map_err(fe)? {
        Msg::Welcome { host } => Ok(host),
        Msg::Error { message } => Err(format!("destination: {message}")),
        m => Err(format!("unexpected {m:?} after authentication")),
    }
}

/// Sends `{"type":"abort"}` best effort.
fn abort(c: &mut Framed, reason: &str) {
    let _ = c.send(&Msg::Abort { reason: reason.into() });
}

/// Keeps a held task from staying paused forever: resumes it on drop
/// unless disarmed.
struct ResumeGuard<'a> {
    hooks: &'a Hooks,
    armed: bool,
}
impl Drop for ResumeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.hooks.resume();
        }
    }
}

/// Answers a control socket's `migrate` request (daemon or foreground task)
/// for the task behind `hooks`: it must be running; the report or the error.
pub fn answer_request(hooks: &Arc<Hooks>, dests: &[String], opts: &MigrateOptions) -> Response {
    let (name, state) = {
        let i = hooks.info.lock().unwrap_or_else(|e| e.into_inner());
        (i.name.clone(), i.state.clone())
    };
    if state != "running" {
        return Response::err(format!("task {name} is not running"));
    }
    match migrate_task(hooks, dests, opts) {
        Ok(rep) => Response { ok: true, migration: serde_json::to_value(rep).ok(), ..Default::default() },
        Err(e) => Response::err(e.to_string()),
    }
}

/// Migrates one task to the first destination in `dests` that is reachable
/// and compatible. Blocks until done.
pub fn migrate_task(hooks: &Arc<Hooks>, dests: &[String], opts: &MigrateOptions) -> Result<MigrationReport, MigrateError> {
    {
        let mut b = hooks.busy.lock().unwrap_or_else(|e| e.into_inner());
        if *b {
            return Err(MigrateError::Failed("a migration of this task is already in progress".into()));
        }
        *b = true;
    }
    struct Unbusy<'a>(&'a Hooks);
    impl Drop for Unbusy<'_> {
        fn drop(&mut self) {
            *self.0.busy.lock().unwrap_or_else(|e| e.into_inner()) = false;
        }
    }
    let _u = Unbusy(hooks);
    let key = auth::key_from_env().map_err(MigrateError::Failed)?;
    let mut errors: Vec<(String, MigrateError)> = Vec::new();
    for d in dests {
        let dest = net::resolve_dest(d).map_err(MigrateError::Failed)?;
        match migrate_to(hooks, &dest, &key, opts) {
            Ok(r) => return Ok(r),
            Err(e @ MigrateError::InDoubt(_)) => return Err(e),
            Err(e) => {
                say!("Task not moved to {dest}: {e}");
                errors.push((dest, e));
            }
        }
    }
    Err(match errors.len() {
        0 => MigrateError::Failed("no destination given".into()),
        1 => errors.remove(0).1,
        _ => MigrateError::AllFailed(errors.iter().map(|(d, e)| format!("{d}: {e}")).collect::<Vec<_>>().join("; ")),
    })
}

fn migrate_to(hooks: &Arc<Hooks>, dest: &str, key: &[u8], opts: &MigrateOptions) -> Result<MigrationReport, MigrateError> {
    let t0 = Instant::now();
    let name = hooks.info.lock().unwrap_or_else(|e| e.into_inner()).name.clone();
    let timeout = Duration::from_secs(opts.timeout_s.max(1));
    let fail = MigrateError::Failed;
    say!("Connecting to {dest} to migrate task {name}...");
    let (mut conn, host) = Conn::connect(dest, key, timeout).map_err(fail)?;
    let c = &mut conn.c;
    let mut rep = MigrationReport {
        task: name.clone(),
        dest: dest.to_string(),
        dest_host: host.hostname.clone(),
        dest_engine: host.engine.to_string(),
        live: opts.live,
        ..Default::default()
    };

    // Compatibility, decided while the task runs.
    let wasm = std::fs::read(&hooks.lm.path).map_err(|e| fail(format!("reading module {}: {e}", hooks.lm.path.display())))?;
    if crate::instrument::module_hash(&wasm) != hooks.lm.hash {
        abort(c, "module changed");
        return Err(fail(format!("module {} changed on disk since the task started", hooks.lm.path.display())));
    }
    if host.image_version != crate::image::VERSION {
        let why = format!("destination reads image version {}, this host writes {}", host.image_version, crate::image::VERSION);
        abort(c, &why);
        return Err(MigrateError::Refused(why));
    }
    let (code_mode, code, reason) = decide_code(hooks, &host, &opts.code).map_err(|why| {
        abort(c, &why);
        MigrateError::Refused(why)
    })?;
    rep.code = format!("{code_mode:?}").to_lowercase();
    rep.code_reason = reason.clone();
    say!(
        "Destination {} ({} {}, engine {}) is compatible: sending {} ({reason})",
        host.hostname,
        host.arch,
        dest,
        host.engine,
        if code_mode == CodeMode::Precompiled { "precompiled code" } else { "the portable module" }
    );
    let id = hex::encode(&auth::nonce()[..12]);
    let memory_bytes = hooks.call(false, |t| t.memory_bytes() as u64).ok_or_else(|| fail("task ended".into()))?;
    rep.memory_bytes = memory_bytes;
    c.send(&Msg::Offer {
        id: id.clone(),
        name: name.clone(),
        priority: hooks.info.lock().unwrap_or_else(|e| e.into_inner()).priority,
        module_hash: hooks.lm.hash.clone(),
        module_len: wasm.len() as u64,
        code: code_mode,
        code_len: code.len() as u64,
        live: opts.live,
        memory_bytes,
        verify: opts.verify,
    })
    .map_err(|e| fail(fe(e)))?;
    match c.recv::<Msg>().map_err(|e| fail(fe(e)))? {
        Msg::Accept => {}
        Msg::Refuse { reason } => return Err(MigrateError::Refused(format!("destination refused: {reason}"))),
        m => return Err(fail(format!("unexpected {m:?}"))),
    }
    let _ = net::cut_point(c, "cut_after_offer");
    let send_stream = |c: &mut Framed, stream: u8, bytes: &[u8]| -> Result<(), String> {
        let mut w = DataWriter::new(c, stream);
        w.write_all(bytes).and_then(|_| w.flush()).map_err(|e| e.to_string())
    };
    send_stream(c, STREAM_MODULE, &wasm).map_err(fail)?;
    if code_mode == CodeMode::Precompiled {
        send_stream(c, STREAM_CODE, &code).map_err(fail)?;
    }
    c.send(&Msg::ModuleDone).map_err(|e| fail(fe(e)))?;
    c.set_timeout(Some(timeout.max(Duration::from_secs(120)))).ok();
    match c.recv::<Msg>().map_err(|e| fail(fe(e)))? {
        Msg::Ready { load_ms, code } => {
            rep.dest_load_ms = load_ms;
            rep.code = format!("{code:?}").to_lowercase();
        }
        Msg::Refuse { reason } => return Err(MigrateError::Refused(format!("destination refused: {reason}"))),
        m => return Err(fail(format!("unexpected {m:?}"))),
    }
    c.set_timeout(Some(timeout)).ok();
    rep.prepare_ms = t0.elapsed().as_secs_f64() * 1e3;

    // Pre-copy while the task runs.
    let level = crate::task::zstd_level();
    let shadow = Arc::new(Mutex::new(Shadow {
        copy: if opts.live { prefaulted(memory_bytes as usize + (16 << 20)) } else { Vec::new() },
        ..Default::default()
    }));
    if opts.live {
        let mut prev = u64::MAX;
        let mut bandwidth = 0.0f64; // bytes per ms, measured
        for round in 0..opts.max_rounds.max(1) {
            let sh = shadow.clone();
            let (idx, pause_us) = hooks
                .call(false, move |t| {
                    let t0 = Instant::now();
                    let i = sh.lock().unwrap_or_else(|e| e.into_inner()).changed(t.memory());
                    (i, t0.elapsed().as_micros() as u64)
                })
                .ok_or_else(|| fail("task ended during pre-copy".into()))?;
            let data = gather(&idx, &shadow);
            let ts = Instant::now();
            send_pages(c, &idx, &data, level).map_err(fail)?;
            c.send(&Msg::RoundDone { round, pages: idx.len() as u64 }).map_err(|e| fail(fe(e)))?;
            let send_ms = ts.elapsed().as_secs_f64() * 1e3;
            if send_ms > 0.5 {
                bandwidth = data.len() as f64 / send_ms;
            }
            let _ = net::cut_point(c, "cut_mid_precopy");
            let pages = idx.len() as u64;
            say!("Pre-copy round {round}: {pages} pages ({:.1} MiB) in {send_ms:.1} ms, task paused {pause_us} µs", data.len() as f64 / (1 << 20) as f64);
            rep.rounds.push(RoundReport { round, pages, pause_us, send_ms });
            // Final round when what is left fits in ~2 ms of link time.
            let small = (bandwidth * 2.0 / PAGE as f64).max(16.0) as u64;
            if round > 0 && pages <= small {
                rep.precopy_end = format!("converged ({pages} pages changed)");
                break;
            }
            if round >= 2 && pages * 10 >= prev * 9 {
                rep.precopy_end = format!("not converging ({pages} pages changed, {prev} before): the task dirties memory as fast as the link; stop-and-copy of the rest");
                say!("{}", rep.precopy_end);
                break;
            }
            if round + 1 == opts.max_rounds.max(1) {
                rep.precopy_end = format!("bounded at {} rounds", opts.max_rounds);
            }
            prev = if round == 0 { u64::MAX } else { pages };
        }
    }

    // Stop: from here on the task is held on this host until the outcome is known.
    say!("Checkpointing task {name} for migration...");
    let sh = shadow.clone();
    let (live, verify) = (opts.live, opts.verify);
    let requested = Instant::now();
    let stopped = hooks
        .call(true, move |t| {
            let at = Instant::now();
            let r: Result<(Vec<u32>, Image), String> = if live {
                let i = sh.lock().unwrap_or_else(|e| e.into_inner()).changed(t.memory());
                t.capture_state().map(|img| (i, img)).map_err(|e| e.to_string())
            } else {
                t.capture().map(|img| (Vec::new(), img)).map_err(|e| e.to_string())
            };
            let hash = if verify { t.state_hash().map(Some).map_err(|e| e.to_string()) } else { Ok(None) };
            (at, r.and_then(|x| Ok((x, hash?))))
        })
        .ok_or_else(|| fail("task ended before it could be stopped".into()))?;
    let (stopped_at, captured) = stopped;
    let mut guard = ResumeGuard { hooks, armed: true };
    rep.stop_us = stopped_at.duration_since(requested).as_micros() as u64;
    let resumed = |why: String| MigrateError::Resumed(why);
    let ((idx, image), hash) = match captured {
        Ok(x) => x,
        Err(e) => {
            abort(c, "capture failed");
            return Err(resumed(format!("capture failed: {e}")));
        }
    };
    rep.final_pages = idx.len() as u64;
    if live {
        rep.dirty_tracking = shadow.lock().unwrap_or_else(|e| e.into_inner()).how.clone();
    }
    rep.state_hash = hash;
    if net::fault("corrupt_frame") {
        c.corrupt_next_data_frame();
    }
    let state = (|| -> Result<u64, String> {
        if live {
            send_pages(c, &idx, &gather(&idx, &shadow), level)?;
        }
        if net::fault("cut_transfer") {
            let _ = c.flush();
            let _ = c.stream().shutdown(std::net::Shutdown::Both);
            return Err("fault injection: connection cut mid-transfer".into());
        }
        let mut w = DataWriter::new(c, STREAM_IMAGE);
        image.write_to(&mut w).map_err(|e| e.to_string())?;
        w.flush().map_err(|e| e.to_string())?;
        let n = w.total;
        c.send(&Msg::StateDone { live, image_bytes: n }).map_err(fe)?;
        Ok(n)
    })();
    if let Err(e) = state {
        abort(c, "transfer failed");
        return Err(resumed(format!("sending state to {dest}: {e}")));
    }
    match c.recv::<Msg>() {
        Ok(Msg::Restored { restore_us, state_hash }) => {
            rep.dest_restore_us = restore_us;
            rep.dest_state_hash = state_hash;
            if rep.state_hash.is_some() && rep.dest_state_hash != rep.state_hash {
                abort(c, "state hash mismatch");
                return Err(resumed(format!(
                    "state verification failed: stopped here as {}, restored there as {}",
                    rep.state_hash.as_deref().unwrap_or(""),
                    rep.dest_state_hash.as_deref().unwrap_or("none")
                )));
            }
        }
        Ok(Msg::Refuse { reason }) | Ok(Msg::Abort { reason }) => return Err(resumed(format!("destination could not restore: {reason}"))),
        Ok(Msg::Error { message }) => return Err(resumed(format!("destination: {message}"))),
        Ok(m) => return Err(resumed(format!("unexpected {m:?}"))),
        Err(e) => return Err(resumed(format!("waiting for the destination to restore: {}", fe(e)))),
    }
    // Commit: from now on, resuming here is only allowed once the
    // destination has promised it will not start the task.
    let _ = net::cut_point(c, "cut_before_commit");
    let outcome = c.send(&Msg::Commit).map_err(fe).and_then(|_| {
        // (A reply already queued before the cut would still be read: the cut loses it.)
        if net::cut_point(c, "cut_after_commit") {
            return Err("fault injection: connection cut after commit".to_string());
        }
        c.recv::<Msg>().map_err(fe)
    });
    match outcome {
        Ok(Msg::Started { start_us }) => rep.dest_start_us = start_us,
        Ok(Msg::Abort { reason }) | Ok(Msg::Refuse { reason }) => return Err(resumed(format!("destination aborted at commit: {reason}"))),
        other => {
            let why = match other {
                Ok(m) => format!("unexpected {m:?} after commit"),
                Err(e) => format!("connection lost after commit: {e}"),
            };
            say!("{why}; asking {dest} what became of migration {id}...");
            match resolve(dest, key, &id, timeout) {
                Resolution::Started => {}
                Resolution::NotStarted(how) => return Err(resumed(format!("{why}; destination {how}"))),
                Resolution::Unknown(e) => {
                    guard.armed = false;
                    set_state(&hooks.info, |i| i.state = "in-doubt".into());
                    return Err(MigrateError::InDoubt(format!("{why}; {e}")));
                }
            }
        }
    }
    guard.armed = false;
    rep.downtime_ms = stopped_at.elapsed().as_secs_f64() * 1e3;
    rep.total_ms = t0.elapsed().as_secs_f64() * 1e3;
    rep.bytes_sent = c.sent;
    hooks.end_migrated(dest.to_string());
    say!("Successfully sent state to {dest}");
    say!(
        "Task {name} is running on {} ({}): downtime {:.1} ms, total {:.1} ms, {:.1} MiB sent",
        host.hostname,
        host.engine,
        rep.downtime_ms,
        rep.total_ms,
        rep.bytes_sent as f64 / (1 << 20) as f64
    );
    Ok(rep)
}

enum Resolution {
    Started,
    NotStarted(String),
    Unknown(String),
}

/// After a lost connection past `Commit`: ask the destination. A
/// destination that is down (connection refused) cannot be running the
/// task: its tasks live in its process.
fn resolve(dest: &str, key: &[u8], id: &str, timeout: Duration) -> Resolution {
    let deadline = Instant::now() + timeout;
    let mut last = String::new();
    while Instant::now() < deadline {
        match Conn::connect(dest, key, Duration::from_secs(3)) {
            Ok((mut conn, _)) => {
                let r = conn.c.send(&Msg::Status { id: id.into() }).map_err(fe).and_then(|_| conn.c.recv::<Msg>().map_err(fe));
                match r {
                    Ok(Msg::StatusReply { state, .. }) if state == "started" => return Resolution::Started,
                    Ok(Msg::StatusReply { state, .. }) => return Resolution::NotStarted(format!("reports the migration {state}")),
                    Ok(m) => last = format!("unexpected {m:?}"),
                    Err(e) => last = e,
                }
            }
            Err(e) if e.contains("Connection refused") => return Resolution::NotStarted("is down (connection refused)".into()),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Resolution::Unknown(format!("destination unreachable: {last}"))
}

/// Decides how the code travels: `(mode, code bytes, reason)`, or why the
/// destination cannot take the task at all.
fn decide_code(hooks: &Hooks, host: &HostInfo, want: &str) -> Result<(CodeMode, Vec<u8>, String), String> {
    let kind = hooks.lm.kind;
    let portable = |why: String| -> Result<(CodeMode, Vec<u8>, String), String> {
        if want == "precompiled" {
            Err(format!("precompiled code required but {why}"))
        } else {
            Ok((CodeMode::Portable, Vec::new(), why))
        }
    };
    if want == "portable" {
        return Ok((CodeMode::Portable, Vec::new(), "portable module requested".into()));
    }
    if host.engine != kind {
        return portable(format!("the destination runs {} and this code is {}", host.engine, kind));
    }
    let ours = compat_hash(&hooks.lm.engine);
    if host.compat.get(kind.as_str()) != Some(&ours) {
        return portable("the destination's wasmtime build differs".into());
    }
    let code = hooks.lm.module.serialize().map_err(|e| format!("serializing compiled code: {e}"))?;
    if kind == EngineKind::Pulley {
        return Ok((CodeMode::Precompiled, code, "Pulley bytecode uses no CPU features".into()));
    }
    let Some(feat) = &host.features else {
        return portable(format!("the destination's CPU features are unknown ({})", host.features_error.clone().unwrap_or_default()));
    };
    match check_code(&code, feat) {
        Ok(None) => Ok((CodeMode::Precompiled, code, "tracer check: the destination has every feature the precompiled code uses".into())),
        Ok(Some(missing)) => portable(missing),
        Err(e) => portable(format!("compatibility of the precompiled code could not be checked: {e}")),
    }
}

/// The source's copy of the task's memory as last sent, and how changes to
/// it are found.
#[derive(Default)]
struct Shadow {
    copy: Vec<u8>,
    /// Kernel write tracking of linear memory, when available.
    tracker: Option<crate::sys::WriteTracker>,
    /// How changed pages were found: `userfaultfd` or why not.
    how: String,
}

impl Shadow {
    /// Pages of `mem` that differ from the copy, which is updated to match:
    /// the only work done while the task is paused. With write tracking only
    /// the pages the kernel saw written are compared; otherwise (first round,
    /// memory grown or moved, no kernel support) all of them, after
    /// (re)starting tracking so that later writes are seen.
    fn changed(&mut self, mem: &[u8]) -> Vec<u32> {
        let written = match &mut self.tracker {
            Some(t) if t.covers(mem) => t.written().ok(),
            _ => None,
        };
        let candidates = written.map(|ranges| {
            let mut pages: Vec<u32> = ranges.iter().flat_map(|r| (r.start / PAGE) as u32..r.end.div_ceil(PAGE) as u32).collect();
            pages.dedup();
            pages
        });
        if candidates.is_none() {
            self.tracker = match crate::sys::WriteTracker::new(mem) {
                Ok(t) => {
                    self.how = "userfaultfd write tracking".into();
                    Some(t)
                }
                Err(e) => {
                    self.how = format!("page comparison (no write tracking: {e})");
                    None
                }
            };
        }
        diff_pages(mem, &mut self.copy, candidates.as_deref())
    }
}

/// Pages of `mem` that differ from `shadow` (among `only`, when given),
/// which is updated to match.
fn diff_pages(mem: &[u8], shadow: &mut Vec<u8>, only: Option<&[u32]>) -> Vec<u32> {
    if shadow.len() < mem.len() {
        shadow.resize(mem.len(), 0);
    }
    if let Some(only) = only {
        let mut idx = Vec::new();
        for &i in only {
            let r = i as usize * PAGE..(i as usize + 1) * PAGE;
            if r.end <= mem.len() && mem[r.clone()] != shadow[r.clone()] {
                shadow[r.clone()].copy_from_slice(&mem[r]);
                idx.push(i);
            }
        }
        return idx;
    }
    // Memory bandwidth bound: one slice per core.
    let pages = mem.len() / PAGE;
    let threads = crate::image::workers();
    let per = pages.div_ceil(threads).max(1);
    std::thread::scope(|sc| {
        let hs: Vec<_> = mem[..pages * PAGE]
            .chunks(per * PAGE)
            .zip(shadow[..pages * PAGE].chunks_mut(per * PAGE))
            .enumerate()
            .map(|(k, (m, s))| {
                sc.spawn(move || {
                    let mut idx = Vec::new();
                    for (i, (m, s)) in m.chunks_exact(PAGE).zip(s.chunks_exact_mut(PAGE)).enumerate() {
                        if m != s {
                            s.copy_from_slice(m);
                            idx.push((k * per + i) as u32);
                        }
                    }
                    idx
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    })
}

fn gather(idx: &[u32], shadow: &Mutex<Shadow>) -> Vec<u8> {
    let sh = &shadow.lock().unwrap_or_else(|e| e.into_inner()).copy;
    let mut data = Vec::with_capacity(idx.len() * PAGE);
    for &i in idx {
        data.extend_from_slice(&sh[i as usize * PAGE..(i as usize + 1) * PAGE]);
    }
    data
}

/// A zeroed buffer with its pages already faulted in (so a pause does not pay for them).
fn prefaulted(len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    crate::sys::advise_hugepages(&mut v);
    crate::sys::populate_write(&mut v);
    v
}

/// Pages per data frame: 48 × 64 KiB stays under the 4 MiB frame limit
/// even when the data does not compress.
const PAGES_PER_FRAME: usize = 48;

fn send_pages(c: &mut Framed, idx: &[u32], data: &[u8], level: i32) -> Result<(), String> {
    for (i, d) in idx.chunks(PAGES_PER_FRAME).zip(data.chunks(PAGES_PER_FRAME * PAGE)) {
        let p = encode_pages(i, d, level).map_err(|e| e.to_string())?;
        c.send_data(STREAM_PAGES, &p).map_err(fe)?;
    }
    c.flush().map_err(fe)
}

// ---------------------------------------------------------------------------
// Destination side

/// What the destination needs from its daemon.
pub trait Receiver: Send + Sync {
    /// Engine tasks received here run under.
    fn engine_kind(&self) -> EngineKind;
    fn engine(&self, kind: EngineKind) -> Result<wasmtime::Engine, String>;
    /// Whether a task of this name runs here.
    fn has_task(&self, name: &str) -> bool;
    /// Starts a restored task here (registers it; it runs after this returns).
    fn start(&self, task: Task, lm: LoadedModule) -> Result<(), String>;
    fn host_info(&self) -> HostInfo;
    fn accept_precompiled(&self) -> bool;
}

/// Migration ids this process has seen: `restored`, `started`, `aborted`.
#[derive(Default)]
pub struct Ledger(Mutex<HashMap<String, String>>);

impl Ledger {
    fn set(&self, id: &str, s: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(id.into(), s.into());
    }
    /// Marks `id` started unless it was aborted; true when it may start.
    fn try_start(&self, id: &str) -> bool {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if m.get(id).is_some_and(|s| s == "aborted") {
            return false;
        }
        m.insert(id.into(), "started".into());
        true
    }
    /// `started`, else marks it aborted (it will never start) and says so.
    fn status(&self, id: &str) -> String {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match m.get(id) {
            Some(s) if s == "started" => "started".into(),
            _ => {
                m.insert(id.into(), "aborted".into());
                "aborted".into()
            }
        }
    }
}

/// The host info a destination sends in `Welcome`.
pub fn make_host_info(kind: EngineKind, features: Result<serde_json::Value, String>) -> HostInfo {
    let mut compat = std::collections::BTreeMap::new();
    for k in [EngineKind::Cranelift, EngineKind::Pulley] {
        if let Ok(e) = engine::new_engine(k) {
            compat.insert(k.as_str().to_string(), compat_hash(&e));
        }
    }
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default();
    let (features, features_error) = match features {
        Ok(v) => (Some(v), None),
        Err(e) => (None, Some(e)),
    };
    HostInfo { hostname, arch: std::env::consts::ARCH.into(), engine: kind, compat, image_version: crate::image::VERSION, features, features_error }
}

/// Accepts connections forever, one thread each.
pub fn serve_tcp(listener: TcpListener, recv: Arc<dyn Receiver>, ledger: Arc<Ledger>, key: Arc<Vec<u8>>) {
    for s in listener.incoming() {
        let Ok(s) = s else { continue };
        let (recv, ledger, key) = (recv.clone(), ledger.clone(), key.clone());
        let peer = s.peer_addr().map(|a| a.to_string()).unwrap_or_default();
        let _ = std::thread::Builder::new().name("migration-in".into()).spawn(move || {
            if let Err(e) = serve_connection(s, &*recv, &ledger, &key) {
                say!("Incoming migration from {peer} ended: {e}");
            }
        });
    }
}

/// One incoming connection (destination side).
pub fn serve_connection(s: TcpStream, recv: &dyn Receiver, ledger: &Ledger, key: &[u8]) -> Result<(), String> {
    let mut c = Framed::new(s).map_err(|e| e.to_string())?;
    c.set_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    c.limit = PRE_AUTH_LIMIT;
    // Authenticate before anything large is read.
    let first = match c.recv::<Msg>() {
        Err(FrameError::Closed) => return Ok(()), // a port probe
        r => r.map_err(fe)?,
    };
    let ns = match first {
        Msg::Hello { version, nonce } if version == PROTOCOL_VERSION => hex::decode(nonce).map_err(|e| e.to_string())?,
        Msg::Hello { version, .. } => {
            let _ = c.send(&Msg::Error { message: format!("protocol version {version} not supported (this host speaks {PROTOCOL_VERSION})") });
            return Err("protocol version mismatch".into());
        }
        m => return Err(format!("expected hello, got {m:?}")),
    };
    if ns.len() != 32 {
        return Err("bad nonce".into());
    }
    let nd = auth::nonce();
    c.send(&Msg::Challenge { nonce: hex::encode(nd), proof: hex::encode(auth::proof(key, auth::DEST_LABEL, &ns, &nd)) }).map_err(fe)?;
    let ok = match c.recv::<Msg>().map_err(fe)? {
        Msg::Auth { proof } => auth::verify(&auth::proof(key, auth::SOURCE_LABEL, &ns, &nd), &hex::decode(proof).unwrap_or_default()),
        _ => false,
    };
    if !ok {
        let _ = c.send(&Msg::Error { message: "authentication failed: wrong migration key".into() });
        return Err("peer failed authentication (wrong key); refused".into());
    }
    c.limit = MAX_FRAME;
    c.set_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
    c.send(&Msg::Welcome { host: recv.host_info() }).map_err(fe)?;
    net::crash_point("after_welcome");
    let (id, name, module_hash, module_len, code_mode, code_len, live, memory_bytes, verify) = match c.recv::<Msg>() {
        Ok(Msg::Offer { id, name, module_hash, module_len, code, code_len, live, memory_bytes, verify, .. }) => {
            (id, name, module_hash, module_len, code, code_len, live, memory_bytes, verify)
        }
        Ok(Msg::Status { id }) => {
            let state = ledger.status(&id);
            c.send(&Msg::StatusReply { id, state }).map_err(fe)?;
            return Ok(());
        }
        Ok(Msg::Abort { reason }) => return Err(format!("source gave up: {reason}")),
        Ok(m) => return Err(format!("unexpected {m:?}")),
        Err(FrameError::Closed) => return Ok(()),
        Err(e) => return Err(fe(e)),
    };
    let refuse = |c: &mut Framed, why: String| -> Result<(), String> {
        let _ = c.send(&Msg::Refuse { reason: why.clone() });
        Err(format!("refused task: {why}"))
    };
    const MAX_MODULE: u64 = 512 << 20;
    if !crate::control::valid_name(&name) {
        return refuse(&mut c, format!("bad task name {name:?}"));
    }
    if recv.has_task(&name) {
        return refuse(&mut c, format!("a task named {name} already runs on this host"));
    }
    if module_len > MAX_MODULE || code_len > MAX_MODULE {
        return refuse(&mut c, "module too large".into());
    }
    if code_mode == CodeMode::Precompiled && !recv.accept_precompiled() {
        return refuse(&mut c, "this host does not accept precompiled code (serve --no-precompiled)".into());
    }
    c.send(&Msg::Accept).map_err(fe)?;
    say!("Receiving task {name} ({} MiB of memory{})...", memory_bytes >> 20, if live { ", live" } else { "" });
    let mut wasm = Vec::with_capacity(module_len as usize);
    let mut code = Vec::with_capacity(code_len as usize);
    loop {
        let (kind, p) = c.recv_raw().map_err(fe)?;
        match kind {
            KIND_DATA if p.first() == Some(&STREAM_MODULE) => wasm.extend_from_slice(&p[1..]),
            KIND_DATA if p.first() == Some(&STREAM_CODE) => code.extend_from_slice(&p[1..]),
            KIND_MSG => match serde_json::from_slice::<Msg>(&p).map_err(|e| e.to_string())? {
                Msg::ModuleDone => break,
                Msg::Abort { reason } => return Err(format!("source gave up: {reason}")),
                m => return Err(format!("unexpected {m:?}")),
            },
            _ => return Err("unexpected data frame".into()),
        }
        if wasm.len() as u64 > module_len || code.len() as u64 > code_len {
            return refuse(&mut c, "more module bytes than announced".into());
        }
        net::crash_point("mid_module");
    }
    if crate::instrument::module_hash(&wasm) != module_hash {
        return refuse(&mut c, "module hash mismatch".into());
    }
    let t = Instant::now();
    let kind = recv.engine_kind();
    let lm = match load_received(recv, kind, &wasm, &module_hash, if code_mode == CodeMode::Precompiled { Some(&code) } else { None }) {
        Ok(x) => x,
        Err(e) => return refuse(&mut c, e),
    };
    let used = if lm.stats.compile_cache_hit && code_mode == CodeMode::Precompiled { CodeMode::Precompiled } else { CodeMode::Portable };
    c.send(&Msg::Ready { load_ms: t.elapsed().as_secs_f64() * 1e3, code: used }).map_err(fe)?;
    drop(code);

    // State: pre-copy rounds, then the final pages and the image.
    let mut pages = PageStore::default();
    if live {
        if let Err(e) = pages.reserve(memory_bytes.min(4 << 30) as usize) {
            return refuse(&mut c, e);
        }
    }
    let mut image = Vec::new();
    let max_pages = (MAX_FRAME / PAGE) + 1;
    let mut frames = 0u64;
    loop {
        let (kind, p) = match c.recv_raw() {
            Ok(x) => x,
            Err(e @ FrameError::Checksum { .. }) => return refuse(&mut c, e.to_string()),
            Err(e) => return Err(format!("{} (task discarded; the source keeps it)", fe(e))),
        };
        frames += 1;
        if frames == 2 {
            net::crash_point("mid_state");
        }
        match kind {
            KIND_DATA if p.first() == Some(&STREAM_PAGES) => {
                let (idx, data) = decode_pages(&p[1..], PAGE, max_pages)?;
                pages.put(&idx, &data, (4u64 << 30) / PAGE as u64)?;
            }
            KIND_DATA if p.first() == Some(&STREAM_IMAGE) => {
                if image.len() as u64 + p.len() as u64 > (5u64 << 30) {
                    return refuse(&mut c, "image too large".into());
                }
                image.extend_from_slice(&p[1..]);
            }
            KIND_MSG => match serde_json::from_slice::<Msg>(&p).map_err(|e| e.to_string())? {
                Msg::RoundDone { .. } => {}
                Msg::StateDone { .. } => break,
                Msg::Abort { reason } => return Err(format!("source gave up: {reason} (task discarded)")),
                m => return Err(format!("unexpected {m:?}")),
            },
            _ => return Err("unexpected data frame".into()),
        }
    }
    let t = Instant::now();
    let img = match Image::from_vec(image) {
        Ok(i) => i,
        Err(e) => return refuse(&mut c, format!("image: {e}")),
    };
    let stdio = match recv_stdio(&name) {
        Ok(s) => s,
        Err(e) => return refuse(&mut c, e),
    };
    let mut task = match Task::restore_onto(&lm, &img, stdio, None, pages.buf.take()) {
        Ok(t) => t,
        Err(e) => return refuse(&mut c, format!("restore: {e}")),
    };
    if net::fault("corrupt_restored") {
        if let Some(b) = task.memory_mut().get_mut(1024) {
            *b ^= 1;
        }
    }
    let state_hash = if verify {
        match task.state_hash() {
            Ok(h) => Some(h),
            Err(e) => return refuse(&mut c, format!("hashing the restored state: {e}")),
        }
    } else {
        None
    };
    let restore_us = t.elapsed().as_micros() as u64;
    ledger.set(&id, "restored");
    net::crash_point("before_restored");
    c.send(&Msg::Restored { restore_us, state_hash }).map_err(fe)?;
    net::crash_point("after_restored");
    // Wait for the source's commit; anything else discards the task.
    c.set_timeout(Some(Duration::from_secs(30))).ok();
    match c.recv::<Msg>() {
        Ok(Msg::Commit) => {}
        other => {
            ledger.set(&id, "aborted");
            return Err(format!("no commit ({other:?}): task discarded, the source keeps it"));
        }
    }
    net::crash_point("after_commit");
    if !ledger.try_start(&id) {
        let _ = c.send(&Msg::Abort { reason: "migration was declared aborted".into() });
        return Err("commit arrived after the migration was declared aborted".into());
    }
    let t = Instant::now();
    if let Err(e) = recv.start(task, lm) {
        ledger.set(&id, "aborted");
        let _ = c.send(&Msg::Abort { reason: e.clone() });
        return Err(format!("start: {e}"));
    }
    let start_us = t.elapsed().as_micros() as u64;
    net::crash_point("after_start");
    say!("Task {name} restored and running on this host (restore {:.1} ms)", restore_us as f64 / 1e3);
    let _ = c.send(&Msg::Started { start_us });
    Ok(())
}

fn recv_stdio(name: &str) -> Result<crate::wasi::Stdio, String> {
    let logs = crate::control::runtime_dir().join("logs");
    let out = crate::daemon::open_log(&logs.join(format!("{name}.stdout")))?;
    let err = crate::daemon::open_log(&logs.join(format!("{name}.stderr")))?;
    Ok(crate::wasi::Stdio { stdin: Box::new(std::io::empty()), stdout: Box::new(out), stderr: Box::new(err) })
}

/// Loads a received module: from the shipped code when given (and loadable), else compiled here.
fn load_received(recv: &dyn Receiver, kind: EngineKind, wasm: &[u8], hash: &str, code: Option<&[u8]>) -> Result<LoadedModule, String> {
    let eng = recv.engine(kind)?;
    let dir = crate::control::runtime_dir().join("modules");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("{}.wasm", &hash[..32]));
    if !path.exists() {
        crate::instrument::write_atomic(&path, wasm).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(code) = code {
        let cw = dir.join(format!("{}-{}.cwasm", &hash[..32], kind.as_str()));
        std::fs::write(&cw, code).map_err(|e| format!("{}: {e}", cw.display()))?;
        let module = net::sys::deserialize_from_peer(&eng, &cw);
        let _ = std::fs::remove_file(&cw);
        match module {
            Ok(module) => {
                let t = Instant::now();
                let (instr, hit) = crate::instrument::instrumented(wasm).map_err(|e| e.to_string())?;
                let frame_bounds = Arc::new(crate::instrument::frame_bounds(&instr).map_err(|e| e.to_string())?);
                return Ok(LoadedModule {
                    module,
                    engine: eng,
                    kind,
                    hash: hash.to_string(),
                    path,
                    stats: engine::LoadStats {
                        instrument_cache_hit: hit,
                        instrument_ms: t.elapsed().as_secs_f64() * 1e3,
                        compile_cache_hit: true,
                        compile_ms: 0.0,
                    },
                    frame_bounds,
                });
            }
            Err(e) => say!("Shipped code not loadable here ({e:#}); compiling the module instead"),
        }
    }
    let mut lm = engine::load_module_bytes(wasm, &path, &eng, kind).map_err(|e| e.to_string())?;
    lm.stats.compile_cache_hit = false;
    Ok(lm)
}

/// Pre-copied pages on the destination until the task is rebuilt; then its
/// buffer becomes the task's memory ([`Task::restore_onto`]).
#[derive(Default)]
struct PageStore {
    buf: Option<crate::sys::PageBuf>,
}

impl PageStore {
    /// Room for `bytes` of pages, faulted in now rather than while the task is stopped.
    fn reserve(&mut self, bytes: usize) -> Result<(), String> {
        self.buf = Some(crate::sys::PageBuf::new(bytes).map_err(|e| format!("pre-copy buffer of {bytes} bytes: {e}"))?);
        Ok(())
    }

    fn put(&mut self, idx: &[u32], data: &[u8], max_pages: u64) -> Result<(), String> {
        for (k, &i) in idx.iter().enumerate() {
            if i as u64 >= max_pages {
                return Err(format!("page {i} beyond 4 GiB"));
            }
            let end = (i as usize + 1) * PAGE;
            let buf = match &mut self.buf {
                Some(b) => b,
                None => self.buf.insert(crate::sys::PageBuf::new(end).map_err(|e| format!("pre-copy buffer: {e}"))?),
            };
            if buf.len() < end {
                buf.grow(end).map_err(|e| format!("pre-copy buffer: {e}"))?;
            }
            buf.as_mut_slice()[end - PAGE..end].copy_from_slice(&data[k * PAGE..(k + 1) * PAGE]);
        }
        Ok(())
    }
}
