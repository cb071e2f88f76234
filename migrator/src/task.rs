//! A running task: one wasmtime store running one instrumented module, that
//! can be stopped at the next poll, captured into an [`Image`], resumed, or
//! rebuilt from an image under any engine.
//!
//! Stopping: [`TaskHandle::request_stop`] (any thread) sets a flag and bumps
//! the engine epoch; the store's epoch callback, run at the next loop header
//! or function entry, sets the module's `mig:stop` global; the next poll
//! (`mig.poll`) starts an asyncify unwind into a buffer at the end of linear
//! memory; `_start` returns and [`Task::run`] reports [`RunOutcome::Stopped`].
//! Resuming calls `asyncify_start_rewind` and `_start` again: the stack is
//! rebuilt and the poll that stopped it returns normally.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use wasmtime::{Caller, Global, Linker, Memory, Store, TypedFunc, UpdateDeadline, Val};

use crate::engine::{EngineKind, LoadedModule};
use crate::error::{ImageError, TaskError};
use crate::image::{GlobalValue, Image, ImageMeta, PAGE};
use crate::instrument::{GLOBAL_PREFIX, MEMORY_EXPORT, POLL_MODULE, POLL_NAME, STOP_EXPORT};
use crate::wasi::{self, ExitStatus, HasWasi, Preopen, Stdio, WasiCtx, WasiState};

/// Pages added at the end of linear memory, at the first checkpoint, for the
/// asyncify stack buffer (16 MiB of address space; only what the unwound
/// stack uses is ever touched). `MIGRATOR_ASYNCIFY_PAGES` overrides it.
pub const DEFAULT_REGION_PAGES: u64 = 256;

/// How a task was started.
#[derive(Debug, Clone, Default)]
pub struct TaskOptions {
    pub name: String,
    pub priority: i32,
    /// argv, argv[0] included.
    pub args: Vec<String>,
    /// `KEY=VALUE` strings.
    pub env: Vec<String>,
    pub preopens: Vec<Preopen>,
}

/// What a checkpoint request asks of the task's runner (used by the control
/// layer; library users can call [`Task::capture`] themselves).
pub struct PendingCheckpoint {
    pub output: std::path::PathBuf,
    pub leave_running: bool,
    pub reply: std::sync::mpsc::Sender<Result<CheckpointInfo, String>>,
}

/// What a checkpoint produced.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct CheckpointInfo {
    pub image: String,
    pub bytes: u64,
    pub memory_pages: u32,
    pub stored_pages: usize,
    /// Request to stopped (µs).
    pub stop_us: u64,
    /// Stopped to image on disk (µs).
    pub capture_us: u64,
    pub leave_running: bool,
}

/// Shared between a task and whoever controls it.
pub struct Control {
    engine: wasmtime::Engine,
    stop: AtomicBool,
    kill: AtomicBool,
    requested_at: Mutex<Option<Instant>>,
    pub pending: Mutex<Option<PendingCheckpoint>>,
}

/// A cloneable, thread-safe handle to ask a task to stop or die.
#[derive(Clone)]
pub struct TaskHandle(Arc<Control>);

impl TaskHandle {
    /// Asks the task to stop at its next poll; [`Task::run`] then returns
    /// [`RunOutcome::Stopped`].
    pub fn request_stop(&self) {
        *self.0.requested_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        self.0.stop.store(true, Ordering::SeqCst);
        self.0.engine.increment_epoch();
    }

    /// Cancels a stop request that was not acted on yet.
    pub fn cancel_stop(&self) {
        self.0.stop.store(false, Ordering::SeqCst);
    }

    /// Kills the task at its next poll; [`Task::run`] returns `Err(Killed)`.
    pub fn kill(&self) {
        self.0.kill.store(true, Ordering::SeqCst);
        self.0.engine.increment_epoch();
    }

    pub fn control(&self) -> &Control {
        &self.0
    }
}

#[derive(Debug)]
struct Killed;
impl std::fmt::Display for Killed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("killed")
    }
}
impl std::error::Error for Killed {}

#[derive(Clone)]
struct Asyncify {
    start_unwind: TypedFunc<i32, ()>,
    stop_unwind: TypedFunc<(), ()>,
    start_rewind: TypedFunc<i32, ()>,
    stop_rewind: TypedFunc<(), ()>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Normal,
    Unwinding,
    Rewinding,
}

/// Store data of a task.
pub struct TaskState {
    wasi: WasiCtx,
    memory: Option<Memory>,
    stop_global: Option<Global>,
    asy: Option<Asyncify>,
    mode: Mode,
    region: Option<(u32, u32)>,
    ctl: Arc<Control>,
    unwind_started: Option<Instant>,
    frame_bounds: Arc<Vec<u32>>,
}

impl HasWasi for TaskState {
    fn wasi(&mut self) -> &mut WasiCtx {
        &mut self.wasi
    }
    fn memory(&self) -> Option<Memory> {
        self.memory
    }
}

/// How [`Task::run`] came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// The task finished with this exit code.
    Exited(i32),
    /// The task stopped on request; capture it, resume it or drop it.
    Stopped,
}

pub struct Task {
    store: Store<TaskState>,
    start: TypedFunc<(), ()>,
    globals: Vec<(String, Global)>,
    pub name: String,
    pub priority: i32,
    pub module_hash: String,
    pub module_path: String,
    pub kind: EngineKind,
    generation: u32,
    /// Stack data to rewind from: set when stopped or restored.
    rewind_pending: Option<Vec<u8>>,
    last_stop: Option<Duration>,
}

fn rt(e: wasmtime::Error) -> TaskError {
    TaskError::from_wasmtime(e)
}

fn region_pages() -> u64 {
    std::env::var("MIGRATOR_ASYNCIFY_PAGES").ok().and_then(|v| v.parse().ok()).filter(|&p| p > 0).unwrap_or(DEFAULT_REGION_PAGES)
}

/// The poll import: starts or finishes an unwind/rewind.
fn poll(mut c: Caller<'_, TaskState>) -> wasmtime::Result<()> {
    let asy = c.data().asy.clone().ok_or_else(|| wasmtime::Error::msg("module is not instrumented"))?;
    match c.data().mode {
        Mode::Rewinding => {
            asy.stop_rewind.call(&mut c, ())?;
            c.data_mut().mode = Mode::Normal;
            // A request that arrived during the rewind must not be lost: the
            // epoch callback already fired for it and will not fire again.
            let pending = c.data().ctl.stop.load(Ordering::SeqCst);
            if let Some(g) = c.data().stop_global {
                g.set(&mut c, Val::I32(pending as i32))?;
            }
            return Ok(());
        }
        Mode::Unwinding => return Ok(()),
        Mode::Normal => {}
    }
    let ctl = c.data().ctl.clone();
    if let Some(g) = c.data().stop_global {
        g.set(&mut c, Val::I32(0))?;
    }
    if !ctl.stop.swap(false, Ordering::SeqCst) {
        return Ok(());
    }
    let mem = c.data().memory.ok_or_else(|| wasmtime::Error::msg("no memory"))?;
    // Asyncify does not bounds-check its buffer: size it from the frames
    // actually on the stack before unwinding, so an overflow cannot happen.
    let need: u64 = {
        let bt = wasmtime::WasmBacktrace::force_capture(&c);
        let fb = &c.data().frame_bounds;
        let frames = bt.frames();
        let need = if frames.is_empty() || frames.len() >= crate::engine::MAX_WASM_FRAMES {
            // No usable trace: assume the deepest possible stack of the largest frame.
            crate::engine::MAX_WASM_FRAMES as u64 * fb.iter().copied().max().unwrap_or(0) as u64
        } else {
            frames.iter().map(|f| fb.get(f.func_index() as usize).copied().unwrap_or(u32::MAX) as u64).sum::<u64>()
        } + 64;
        log::debug!("unwind: {} wasm frames, buffer bound {need} bytes", bt.frames().len());
        need
    };
    let (start, len) = match c.data().region {
        Some(r) if r.1 as u64 >= need => r,
        _ => {
            let pages = region_pages().max((need + need / 4).div_ceil(PAGE as u64) + 1);
            match mem.grow(&mut c, pages) {
                Ok(old) if (old + pages) * PAGE as u64 <= u32::MAX as u64 + 1 => {
                    let r = ((old * PAGE as u64) as u32, (pages * PAGE as u64 - 8) as u32);
                    c.data_mut().region = Some(r);
                    r
                }
                _ => {
                    // Cannot make room for the stack: refuse this checkpoint, keep running.
                    log::warn!("checkpoint refused: linear memory cannot grow by {pages} pages for the stack buffer");
                    if let Some(p) = ctl.pending.lock().unwrap_or_else(|e| e.into_inner()).take() {
                        let _ = p.reply.send(Err(format!(
                            "linear memory cannot grow by {pages} pages for the unwind buffer (memory maximum reached); the task keeps running"
                        )));
                    }
                    return Ok(());
                }
            }
        }
    };
    let data = mem.data_mut(&mut c);
    let s = start as usize;
    data[s..s + 4].copy_from_slice(&(start + 8).to_le_bytes());
    data[s + 4..s + 8].copy_from_slice(&(start + 8 + len - 8).to_le_bytes());
    asy.start_unwind.call(&mut c, start as i32)?;
    let d = c.data_mut();
    d.mode = Mode::Unwinding;
    d.unwind_started = Some(Instant::now());
    Ok(())
}

impl Task {
    /// Starts a fresh task (not running yet: call [`Task::run`]).
    pub fn new(lm: &LoadedModule, opts: TaskOptions, stdio: Stdio) -> Result<Task, TaskError> {
        for p in &opts.preopens {
            if !p.host.is_dir() {
                return Err(TaskError::Preopen {
                    host: p.host.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
                });
            }
        }
        let state = WasiState::new(opts.args.clone(), opts.env.clone(), opts.preopens.clone());
        let wasi = WasiCtx::new(state, stdio).map_err(TaskError::WasiRestore)?;
        Self::instantiate(lm, wasi, &opts.name, opts.priority, 0)
    }

    /// Rebuilds a task from an image (not running yet: call [`Task::run`],
    /// which rewinds the stack and continues). `preopens`, when given,
    /// replaces the image's host directories (same guest names, new hosts).
    pub fn restore(lm: &LoadedModule, image: &Image, stdio: Stdio, preopens: Option<Vec<Preopen>>) -> Result<Task, TaskError> {
        Self::restore_onto(lm, image, stdio, preopens, None)
    }

    /// [`Task::restore`] onto pre-copied memory: `base` (pages received while
    /// the task still ran elsewhere; absent pages zero) becomes the start of
    /// linear memory by moving its pages, not copying them, and the image's
    /// own pages are applied on top.
    pub fn restore_onto(
        lm: &LoadedModule,
        image: &Image,
        stdio: Stdio,
        preopens: Option<Vec<Preopen>>,
        base: Option<crate::sys::PageBuf>,
    ) -> Result<Task, TaskError> {
        if image.module_hash_hex() != lm.hash {
            return Err(ImageError::ModuleMismatch {
                image: image.module_hash_hex(),
                module: lm.hash.clone(),
                given: lm.path.clone(),
            }
            .into());
        }
        let mut wstate = image.meta.wasi.clone();
        if let Some(p) = preopens {
            for o in p {
                if let Some(e) = wstate.preopens.iter_mut().find(|e| e.guest == o.guest) {
                    e.host = o.host;
                }
            }
        }
        let wasi = WasiCtx::new(wstate, stdio).map_err(TaskError::WasiRestore)?;
        let mut task = Self::instantiate(lm, wasi, &image.meta.name, image.meta.priority, image.meta.generation)?;
        let mem = task.store.data().memory.ok_or_else(|| TaskError::Runtime("no memory".into()))?;
        let cur = mem.size(&task.store);
        let want = image.pages_total as u64;
        if want < cur {
            return Err(ImageError::Corrupt(format!("image memory ({want} pages) is smaller than the module's minimum ({cur})")).into());
        }
        if base.as_ref().is_some_and(|b| b.len() as u64 > want * PAGE as u64) {
            return Err(ImageError::Corrupt(format!("pre-copied pages beyond the image's memory ({want} pages)")).into());
        }
        if want > cur {
            mem.grow(&mut task.store, want - cur).map_err(rt)?;
        }
        // Data segments were applied at instantiation (only the first `cur`
        // pages can hold them): start from zeros, or from the pre-copied pages.
        let moved = match base {
            Some(b) => b.move_onto(mem.data_mut(&mut task.store)).map_err(|e| TaskError::Runtime(format!("adopting pre-copied memory: {e}")))?,
            None => 0,
        };
        let init = (cur as usize * PAGE).max(moved);
        mem.data_mut(&mut task.store)[moved..init].fill(0);
        crate::sys::advise_hugepages(mem.data_mut(&mut task.store));
        image.decompress_into(mem.data_mut(&mut task.store))?;
        for g in &image.meta.globals {
            let global = task
                .globals
                .iter()
                .find(|(n, _)| *n == g.name)
                .map(|(_, gl)| *gl)
                .ok_or_else(|| ImageError::Corrupt(format!("global {} not in module", g.name)))?;
            let v = match g.ty.as_str() {
                "i32" => Val::I32(g.bits as u32 as i32),
                "i64" => Val::I64(g.bits as i64),
                "f32" => Val::F32(g.bits as u32),
                "f64" => Val::F64(g.bits),
                t => return Err(ImageError::Corrupt(format!("global type {t}")).into()),
            };
            global.set(&mut task.store, v).map_err(rt)?;
        }
        let (start, len) = image.meta.asyncify_region;
        if (start as u64 + len as u64 + 8) > want * PAGE as u64 || (image.stack.len() as u64) > len as u64 {
            return Err(ImageError::Corrupt("asyncify region outside memory".into()).into());
        }
        task.store.data_mut().region = Some((start, len));
        task.rewind_pending = Some(image.stack.clone());
        Ok(task)
    }

    fn instantiate(lm: &LoadedModule, wasi: WasiCtx, name: &str, priority: i32, generation: u32) -> Result<Task, TaskError> {
        let ctl = Arc::new(Control {
            engine: lm.engine.clone(),
            stop: AtomicBool::new(false),
            kill: AtomicBool::new(false),
            requested_at: Mutex::new(None),
            pending: Mutex::new(None),
        });
        let state = TaskState {
            wasi,
            memory: None,
            stop_global: None,
            asy: None,
            mode: Mode::Normal,
            region: None,
            ctl,
            unwind_started: None,
            frame_bounds: lm.frame_bounds.clone(),
        };
        let mut store = Store::new(&lm.engine, state);
        store.epoch_deadline_callback(|mut ctx| {
            let ctl = ctx.data().ctl.clone();
            if ctl.kill.load(Ordering::SeqCst) {
                return Err(wasmtime::Error::new(Killed));
            }
            if ctl.stop.load(Ordering::SeqCst) {
                if let Some(g) = ctx.data().stop_global {
                    g.set(&mut ctx, Val::I32(1))?;
                }
            }
            Ok(UpdateDeadline::Continue(1))
        });
        store.set_epoch_deadline(1);
        let mut linker: Linker<TaskState> = Linker::new(&lm.engine);
        wasi::add_to_linker(&mut linker).map_err(rt)?;
        linker.func_wrap(POLL_MODULE, POLL_NAME, poll).map_err(rt)?;
        wasi::add_enosys_stubs(&mut linker, &lm.module).map_err(rt)?;
        for imp in lm.module.imports() {
            if imp.module() != "wasi_snapshot_preview1" && imp.module() != POLL_MODULE {
                return Err(TaskError::Runtime(format!(
                    "unsupported import {}.{} (only wasi_snapshot_preview1 is provided)",
                    imp.module(),
                    imp.name()
                )));
            }
        }
        let instance = linker.instantiate(&mut store, &lm.module).map_err(rt)?;
        let memory = instance.get_memory(&mut store, MEMORY_EXPORT);
        let stop_global = instance.get_global(&mut store, STOP_EXPORT);
        let f = |store: &mut Store<TaskState>, n: &str| instance.get_func(&mut *store, n).ok_or_else(|| TaskError::Runtime(format!("instrumented module lacks {n}")));
        let asy = Asyncify {
            start_unwind: f(&mut store, "asyncify_start_unwind")?.typed(&store).map_err(rt)?,
            stop_unwind: f(&mut store, "asyncify_stop_unwind")?.typed(&store).map_err(rt)?,
            start_rewind: f(&mut store, "asyncify_start_rewind")?.typed(&store).map_err(rt)?,
            stop_rewind: f(&mut store, "asyncify_stop_rewind")?.typed(&store).map_err(rt)?,
        };
        let start = f(&mut store, "_start")?.typed::<(), ()>(&store).map_err(rt)?;
        let mut globals = Vec::new();
        let names: Vec<String> = lm.module.exports().map(|e| e.name().to_string()).filter(|n| n.starts_with(GLOBAL_PREFIX)).collect();
        for n in names {
            if let Some(g) = instance.get_global(&mut store, &n) {
                globals.push((n, g));
            }
        }
        let d = store.data_mut();
        d.memory = memory;
        d.stop_global = stop_global;
        d.asy = Some(asy);
        if memory.is_none() || stop_global.is_none() {
            return Err(TaskError::Runtime("instrumented module lacks its memory or stop flag export".into()));
        }
        Ok(Task {
            store,
            start,
            globals,
            name: name.to_string(),
            priority,
            module_hash: lm.hash.clone(),
            module_path: lm.path.display().to_string(),
            kind: lm.kind,
            generation,
            rewind_pending: None,
            last_stop: None,
        })
    }

    pub fn handle(&self) -> TaskHandle {
        TaskHandle(self.store.data().ctl.clone())
    }

    /// Request-to-stopped latency of the last stop.
    pub fn last_stop_latency(&self) -> Option<Duration> {
        self.last_stop
    }

    /// True when the task is stopped (or restored) and not yet resumed.
    pub fn is_stopped(&self) -> bool {
        self.rewind_pending.is_some()
    }

    /// Runs (or resumes) the task until it exits or stops on request.
    pub fn run(&mut self) -> Result<RunOutcome, TaskError> {
        if let Some(stack) = self.rewind_pending.take() {
            self.prepare_rewind(&stack)?;
        }
        let ctl = self.store.data().ctl.clone();
        if ctl.stop.load(Ordering::SeqCst) {
            // A request that came before the epoch deadline was armed.
            if let Some(g) = self.store.data().stop_global {
                g.set(&mut self.store, Val::I32(1)).map_err(rt)?;
            }
        }
        let r = self.start.call(&mut self.store, ());
        self.store.data_mut().wasi.flush();
        match r {
            Ok(()) if self.store.data().mode == Mode::Unwinding => {
                let asy = self.store.data().asy.clone().ok_or_else(|| TaskError::Runtime("no asyncify".into()))?;
                asy.stop_unwind.call(&mut self.store, ()).map_err(rt)?;
                self.store.data_mut().mode = Mode::Normal;
                let (start, _) = self.store.data().region.ok_or_else(|| TaskError::Runtime("no region".into()))?;
                let mem = self.store.data().memory.ok_or_else(|| TaskError::Runtime("no memory".into()))?;
                let data = mem.data(&self.store);
                let s = start as usize;
                let cur = u32::from_le_bytes([data[s], data[s + 1], data[s + 2], data[s + 3]]) as usize;
                if cur < s + 8 || cur > data.len() {
                    return Err(TaskError::Checkpoint("asyncify buffer pointer out of range".into()));
                }
                self.rewind_pending = Some(data[s + 8..cur].to_vec());
                let req = ctl.requested_at.lock().unwrap_or_else(|e| e.into_inner()).take();
                self.last_stop = req.map(|t| t.elapsed());
                Ok(RunOutcome::Stopped)
            }
            Ok(()) => Ok(RunOutcome::Exited(0)),
            Err(e) => {
                if let Some(ExitStatus(code)) = e.downcast_ref::<ExitStatus>() {
                    return Ok(RunOutcome::Exited(*code));
                }
                if e.downcast_ref::<Killed>().is_some() {
                    return Err(TaskError::Killed);
                }
                Err(rt(e))
            }
        }
    }

    fn prepare_rewind(&mut self, stack: &[u8]) -> Result<(), TaskError> {
        let (start, len) = self.store.data().region.ok_or_else(|| TaskError::Runtime("no asyncify region".into()))?;
        let mem = self.store.data().memory.ok_or_else(|| TaskError::Runtime("no memory".into()))?;
        let data = mem.data_mut(&mut self.store);
        let s = start as usize;
        data[s + 8..s + 8 + stack.len()].copy_from_slice(stack);
        data[s..s + 4].copy_from_slice(&(start + 8 + stack.len() as u32).to_le_bytes());
        data[s + 4..s + 8].copy_from_slice(&(start + len).to_le_bytes());
        let asy = self.store.data().asy.clone().ok_or_else(|| TaskError::Runtime("no asyncify".into()))?;
        asy.start_rewind.call(&mut self.store, start as i32).map_err(rt)?;
        self.store.data_mut().mode = Mode::Rewinding;
        Ok(())
    }

    /// Captures a stopped task into an image. The task stays stopped: run
    /// it again to continue, or drop it.
    pub fn capture(&mut self) -> Result<Image, TaskError> {
        self.capture_image(true)
    }

    /// Like [`Task::capture`], but memory is not stored (every chunk empty,
    /// `pages_total` still the real size): the caller sends pages itself.
    pub fn capture_state(&mut self) -> Result<Image, TaskError> {
        self.capture_image(false)
    }

    /// The module's globals as an image stores them.
    fn global_values(&mut self) -> Result<Vec<GlobalValue>, TaskError> {
        let mut globals = Vec::new();
        for (name, g) in &self.globals {
            let (ty, bits) = match g.get(&mut self.store) {
                Val::I32(v) => ("i32", v as u32 as u64),
                Val::I64(v) => ("i64", v as u64),
                Val::F32(v) => ("f32", v as u64),
                Val::F64(v) => ("f64", v),
                other => return Err(TaskError::Checkpoint(format!("global {name} has unsupported type {:?}", other.ty(&self.store)))),
            };
            globals.push(GlobalValue { name: name.clone(), ty: ty.into(), bits });
        }
        Ok(globals)
    }

    /// CRC-32 (hex) of the state a checkpoint carries: linear memory outside
    /// the asyncify region, the globals and the unwound stack. The same on the
    /// source once stopped and on the destination once restored, whatever the
    /// engine (`migrate --verify`).
    pub fn state_hash(&mut self) -> Result<String, TaskError> {
        let globals = self.global_values()?;
        let skip = self.region_pages();
        let mut h = crc32fast::Hasher::new();
        let mem = self.memory();
        h.update(&(mem.len() as u64).to_le_bytes());
        for (i, p) in mem.chunks(PAGE).enumerate() {
            if !skip.contains(&i) {
                h.update(p);
            }
        }
        for g in &globals {
            h.update(g.name.as_bytes());
            h.update(g.ty.as_bytes());
            h.update(&g.bits.to_le_bytes());
        }
        h.update(self.rewind_pending.as_deref().unwrap_or_default());
        Ok(format!("{:08x}", h.finalize()))
    }

    /// Pages of linear memory holding the asyncify region (its contents
    /// travel as the image's stack, not as memory).
    fn region_pages(&self) -> std::ops::Range<usize> {
        self.store.data().region.map_or(0..0, |(s, l)| s as usize / PAGE..(s as usize + l as usize + 8).div_ceil(PAGE))
    }

    /// Captures the stopped task straight into an image file at `path`:
    /// memory is compressed while the file is written (the same file as
    /// [`Task::capture`] then [`write_image_file`], sooner).
    /// Returns the file's size and the image's memory size and stored pages.
    pub fn capture_to_file(&mut self, path: &std::path::Path) -> Result<ImageFileInfo, TaskError> {
        let state = self.capture_state()?;
        let skip = self.region_pages();
        let mem = self.memory();
        let mut stored_pages = 0;
        let bytes = write_file_with(path, |w| {
            let (n, stored) = state.write_with_memory(mem, skip, zstd_level(), w)?;
            stored_pages = stored;
            Ok(n)
        })?;
        Ok(ImageFileInfo { bytes, pages_total: state.pages_total, stored_pages })
    }

    fn capture_image(&mut self, with_memory: bool) -> Result<Image, TaskError> {
        let stack = self.rewind_pending.clone().ok_or_else(|| TaskError::Checkpoint("task is not stopped".into()))?;
        let globals = self.global_values()?;
        let region = self.store.data().region.ok_or_else(|| TaskError::Checkpoint("no region".into()))?;
        let wasi_state = self.store.data_mut().wasi.snapshot();
        let (pages_total, chunks) = if with_memory {
            let mem = self.store.data().memory.ok_or_else(|| TaskError::Runtime("no memory".into()))?;
            Image::compress_memory(mem.data(&self.store), self.region_pages(), zstd_level())?
        } else {
            let pages_total = (self.memory().len() / PAGE) as u32;
            let n_chunks = (pages_total as usize).div_ceil(crate::image::CHUNK_PAGES);
            let chunks = (0..n_chunks)
                .map(|_| crate::image::Chunk { present: Vec::new(), data: crate::image::Bytes::new(Vec::new()) })
                .collect();
            (pages_total, chunks)
        };
        let mut module_hash = [0u8; 32];
        hex::decode_to_slice(&self.module_hash, &mut module_hash).map_err(|e| TaskError::Checkpoint(e.to_string()))?;
        Ok(Image {
            module_hash,
            meta: ImageMeta {
                name: self.name.clone(),
                priority: self.priority,
                module_path: self.module_path.clone(),
                taken_under: self.kind.as_str().into(),
                created_unix_ms: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
                generation: self.generation + 1,
                globals,
                asyncify_region: region,
                wasi: wasi_state,
            },
            pages_total,
            chunks,
            stack,
        })
    }

    /// Linear memory size in bytes.
    pub fn memory_bytes(&self) -> usize {
        self.store.data().memory.map(|m| m.data_size(&self.store)).unwrap_or(0)
    }
}

/// zstd level for memory chunks: `MIGRATOR_ZSTD_LEVEL`, default 1.
pub fn zstd_level() -> i32 {
    std::env::var("MIGRATOR_ZSTD_LEVEL").ok().and_then(|v| v.parse().ok()).unwrap_or(1)
}

/// What [`Task::capture_to_file`] wrote.
#[derive(Debug, Clone, Copy)]
pub struct ImageFileInfo {
    pub bytes: u64,
    pub pages_total: u32,
    pub stored_pages: usize,
}

/// Writes an image to `path` atomically (temporary file, fsync if
/// `MIGRATOR_FSYNC=1`, rename), so a crash never leaves a half image under
/// the final name.
pub fn write_image_file(path: &std::path::Path, image: &Image) -> Result<u64, ImageError> {
    write_file_with(path, |w| image.write_to(w))
}

/// Writes an image file through `write` (given a buffered writer): into a
/// temporary file next to `path`, renamed over it only once complete.
fn write_file_with(
    path: &std::path::Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> Result<u64, ImageError>,
) -> Result<u64, ImageError> {
    use std::io::Write;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "image".into()),
        std::process::id()
    ));
    let f = std::fs::File::create(&tmp)?;
    let r = (|| {
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        let n = write(&mut w)?;
        w.flush()?;
        let f = w.into_inner().map_err(|e| ImageError::Io(e.into_error()))?;
        // fsync is opt-in: a stopped task's image in the page cache survives any
        // process crash; only a power loss before writeback could lose it.
        if std::env::var_os("MIGRATOR_FSYNC").is_some_and(|v| v == "1") {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        Ok(n)
    })();
    if r.is_err() {
        // Nothing half-written is left behind, whichever step failed.
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Reads an image file.
pub fn read_image_file(path: &std::path::Path) -> Result<Image, ImageError> {
    use std::os::unix::fs::FileExt;
    const SMALL: usize = 8 << 20;
    let f = std::fs::File::open(path)?;
    let len = f.metadata()?.len() as usize;
    if len < SMALL {
        // One read into a buffer of the right size; chunks then share it.
        use std::io::Read;
        let mut buf = crate::sys::huge_with_capacity(len + 1);
        crate::sys::populate_spare(&mut buf);
        (&f).read_to_end(&mut buf)?;
        return Image::from_vec(buf);
    }
    // Large images: fresh pages (not zeroed by us) filled by one positioned
    // read per core, so faulting them in and copying run in parallel.
    let mut buf = crate::sys::PageBuf::unpopulated(len)?;
    let threads = crate::image::workers();
    let per = len.div_ceil(threads).next_multiple_of(4096);
    std::thread::scope(|s| -> std::io::Result<()> {
        let hs: Vec<_> = buf.as_mut_slice()[..len]
            .chunks_mut(per)
            .enumerate()
            .map(|(i, part)| {
                let f = &f;
                s.spawn(move || {
                    crate::sys::populate_write(part);
                    f.read_exact_at(part, (i * per) as u64)
                })
            })
            .collect();
        hs.into_iter().try_for_each(|h| h.join().unwrap_or_else(|_| Err(std::io::Error::other("reader thread panicked"))))
    })?;
    Image::from_shared(std::sync::Arc::new(FileBytes { buf, len }))
}

/// The first `len` bytes of a [`crate::sys::PageBuf`] an image file was read into.
struct FileBytes {
    buf: crate::sys::PageBuf,
    len: usize,
}

impl AsRef<[u8]> for FileBytes {
    fn as_ref(&self) -> &[u8] {
        &self.buf.as_slice()[..self.len]
    }
}

// Network migration (crate::migrate): live pre-copy reads linear memory
// between rounds, and the final round captures everything but memory (the
// pages already travelled). Only callable with the task not running.
impl Task {
    /// Linear memory of the task (stopped, restored, or not started).
    pub fn memory(&self) -> &[u8] {
        self.store.data().memory.map(|m| m.data(&self.store)).unwrap_or(&[])
    }

    /// Linear memory, writable (e.g. to apply pre-copied pages after [`Task::restore`]).
    pub fn memory_mut(&mut self) -> &mut [u8] {
        match self.store.data().memory {
            Some(m) => m.data_mut(&mut self.store),
            None => &mut [],
        }
    }

}
