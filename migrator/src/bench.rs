//! Measurements behind `migrator bench` (see docs/migrator.md, "Benchmarks").

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::engine::{self, EngineKind, LoadedModule};
use crate::error::{ModuleError, TaskError};
use crate::task::{read_image_file, write_image_file, RunOutcome, Task, TaskOptions};
use crate::wasi::{self, HasWasi, Stdio, WasiCtx, WasiState};

/// A writer that discards output but remembers how much it saw.
#[derive(Clone, Default)]
pub struct Sink(pub Arc<Mutex<Vec<u8>>>);
impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn sink_stdio() -> (Stdio, Sink) {
    let s = Sink::default();
    (Stdio { stdin: Box::new(std::io::empty()), stdout: Box::new(s.clone()), stderr: Box::new(std::io::sink()) }, s)
}

struct Plain {
    wasi: WasiCtx,
    memory: Option<wasmtime::Memory>,
}
impl HasWasi for Plain {
    fn wasi(&mut self) -> &mut WasiCtx {
        &mut self.wasi
    }
    fn memory(&self) -> Option<wasmtime::Memory> {
        self.memory
    }
}

/// Runs the *original* module (no polls, no asyncify) on a plain engine
/// (no epoch checks): the baseline. Returns the CPU time of `_start` on this
/// thread (robust against other load) and stdout.
pub fn run_plain(engine: &wasmtime::Engine, module: &wasmtime::Module, args: &[String]) -> Result<(Duration, Vec<u8>), TaskError> {
    let rt = TaskError::from_wasmtime;
    let (stdio, out) = sink_stdio();
    let wasi = WasiCtx::new(WasiState::new(args.to_vec(), vec![], vec![]), stdio).map_err(TaskError::WasiRestore)?;
    let mut store = wasmtime::Store::new(engine, Plain { wasi, memory: None });
    store.set_epoch_deadline(1 << 40);
    let mut linker = wasmtime::Linker::new(engine);
    wasi::add_to_linker(&mut linker).map_err(rt)?;
    // Variants measured by hand import the poll without asyncify: a no-op.
    linker.func_wrap("mig", "poll", || {}).map_err(rt)?;
    wasi::add_enosys_stubs(&mut linker, module).map_err(rt)?;
    let inst = linker.instantiate(&mut store, module).map_err(rt)?;
    store.data_mut().memory = inst.get_memory(&mut store, "memory");
    let start = inst.get_typed_func::<(), ()>(&mut store, "_start").map_err(rt)?;
    let t = crate::sys::thread_cpu_time();
    let r = start.call(&mut store, ());
    let el = crate::sys::thread_cpu_time().saturating_sub(t);
    if let Err(e) = r {
        if e.downcast_ref::<wasi::ExitStatus>().is_none_or(|s| s.0 != 0) {
            return Err(rt(e));
        }
    }
    let o = out.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok((el, o))
}

/// Runs the instrumented module as a task to completion; returns its CPU time and stdout.
pub fn run_task(lm: &LoadedModule, args: &[String]) -> Result<(Duration, Vec<u8>), TaskError> {
    let (stdio, out) = sink_stdio();
    let mut task = Task::new(lm, TaskOptions { name: "bench".into(), args: args.to_vec(), ..Default::default() }, stdio)?;
    let t = crate::sys::thread_cpu_time();
    let r = task.run()?;
    let el = crate::sys::thread_cpu_time().saturating_sub(t);
    if r != RunOutcome::Exited(0) {
        return Err(TaskError::Runtime(format!("unexpected outcome {r:?}")));
    }
    let o = out.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok((el, o))
}

#[derive(Debug, Serialize)]
pub struct Overhead {
    pub fixture: String,
    pub args: Vec<String>,
    pub original_ms: f64,
    pub instrumented_ms: f64,
    pub ratio: f64,
}

/// Best-of-`reps` CPU time of the original vs the instrumented module,
/// alternating the two so both see the same host conditions.
pub fn overhead(path: &Path, args: &[String], reps: usize) -> Result<Overhead, TaskError> {
    let bytes = std::fs::read(path).map_err(|source| ModuleError::Read { path: path.into(), source })?;
    // Baseline: the original module under the same engine settings
    // (deterministic NaNs and relaxed SIMD), without epoch checks.
    let plain = engine::engine_with(EngineKind::Cranelift, false)?;
    let orig = engine::compile_uncached(&plain, EngineKind::Cranelift, &bytes)?;
    let eng = engine::new_engine(EngineKind::Cranelift)?;
    let lm = engine::load_module_bytes(&bytes, path, &eng, EngineKind::Cranelift)?;
    let mut best_o = Duration::MAX;
    let mut best_i = Duration::MAX;
    let mut out_o = Vec::new();
    let mut out_i = Vec::new();
    for _ in 0..reps {
        let (d, o) = run_plain(&plain, &orig, args)?;
        best_o = best_o.min(d);
        out_o = o;
        let (d, o) = run_task(&lm, args)?;
        best_i = best_i.min(d);
        out_i = o;
    }
    if out_o != out_i {
        return Err(TaskError::Runtime("instrumented module printed different output".into()));
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(Overhead {
        fixture: path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        args: args.to_vec(),
        original_ms: ms(best_o),
        instrumented_ms: ms(best_i),
        ratio: best_i.as_secs_f64() / best_o.as_secs_f64(),
    })
}

#[derive(Debug, Serialize)]
pub struct CheckpointFigures {
    pub touched_mib: u64,
    pub mode: String,
    pub memory_mib: f64,
    pub stop_us: u64,
    /// Stopped to image in memory.
    pub capture_ms: f64,
    /// Image to file (write + fsync unless MIGRATOR_NO_FSYNC).
    pub write_ms: f64,
    /// capture + write.
    pub stop_to_image_ms: f64,
    pub image_bytes: u64,
    pub image_ratio: f64,
    /// Read file, check, instantiate (compiled code cached), fill memory.
    pub image_to_running_ms: f64,
    /// Resumed run until the next stop confirms it runs (not part of the above).
    pub resumed_ok: bool,
}

/// Stops alloc_fill after it has touched `mib` MiB, captures, writes, restores.
pub fn checkpoint_restore(alloc_fill: &Path, mib: u64, mode: &str, dir: &Path, kind_restore: EngineKind) -> Result<CheckpointFigures, TaskError> {
    let eng = engine::new_engine(EngineKind::Cranelift)?;
    let lm = engine::load_module(alloc_fill, &eng, EngineKind::Cranelift)?;
    let args: Vec<String> = vec!["alloc_fill".into(), mib.to_string(), "1000000".into(), mode.into()];
    let (stdio, _out) = sink_stdio();
    let mut task = Task::new(&lm, TaskOptions { name: format!("fill{mib}"), args: args.clone(), ..Default::default() }, stdio)?;
    let h = task.handle();
    let wait = Duration::from_millis(300 + mib * 8);
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(wait);
        h.request_stop();
    });
    let r = std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(engine::TASK_THREAD_STACK)
            .spawn_scoped(s, || task.run())
            .map_err(|e| TaskError::Runtime(e.to_string()))?
            .join()
            .map_err(|_| TaskError::Runtime("task thread panicked".into()))?
    })?;
    let _ = stopper.join();
    if r != RunOutcome::Stopped {
        return Err(TaskError::Runtime(format!("alloc_fill ended before the checkpoint: {r:?}")));
    }
    let stop_us = task.last_stop_latency().map(|d| d.as_micros() as u64).unwrap_or(0);
    let memory_mib = task.memory_bytes() as f64 / (1 << 20) as f64;
    let path = dir.join(format!("fill{mib}-{mode}.img"));
    // Two steps (capture in memory, then write), for the breakdown...
    let t = Instant::now();
    let image = task.capture()?;
    let capture = t.elapsed();
    let t = Instant::now();
    write_image_file(&path, &image)?;
    let write = t.elapsed();
    drop(image);
    // (Freed before the next write, so neither pays for the other's page cache.)
    let _ = std::fs::remove_file(&path);
    // ...and what `migrator checkpoint` does: compressing while writing.
    let t = Instant::now();
    let image_bytes = task.capture_to_file(&path)?.bytes;
    let stop_to_image = t.elapsed();
    drop(task);
    // Restore: engine and compiled module are warm (cache hit), as on a host
    // that already runs this module.
    let eng2 = engine::new_engine(kind_restore)?;
    let lm2 = engine::load_module(alloc_fill, &eng2, kind_restore)?;
    let t = Instant::now();
    let img = read_image_file(&path)?;
    let (stdio, _o) = sink_stdio();
    let mut restored = Task::restore(&lm2, &img, stdio, None)?;
    let to_running = t.elapsed();
    let h = restored.handle();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        h.request_stop();
    });
    let resumed = std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(engine::TASK_THREAD_STACK)
            .spawn_scoped(s, || restored.run())
            .ok()
            .and_then(|j| j.join().ok())
    });
    let _ = stopper.join();
    if std::env::var_os("BENCH_KEEP").is_none() { let _ = std::fs::remove_file(&path); }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    Ok(CheckpointFigures {
        touched_mib: mib,
        mode: mode.into(),
        memory_mib,
        stop_us,
        capture_ms: ms(capture),
        write_ms: ms(write),
        stop_to_image_ms: ms(stop_to_image),
        image_bytes,
        image_ratio: image_bytes as f64 / (mib << 20) as f64,
        image_to_running_ms: ms(to_running),
        resumed_ok: matches!(resumed, Some(Ok(RunOutcome::Stopped))),
    })
}

#[derive(Debug, Serialize)]
pub struct StopLatency {
    pub fixture: String,
    pub samples: usize,
    pub median_us: u64,
    pub p90_us: u64,
    pub max_us: u64,
}

/// Stops and resumes a compute task `samples` times at random moments.
pub fn stop_latency(path: &Path, args: &[String], samples: usize) -> Result<StopLatency, TaskError> {
    let eng = engine::new_engine(EngineKind::Cranelift)?;
    let lm = engine::load_module(path, &eng, EngineKind::Cranelift)?;
    let (stdio, _o) = sink_stdio();
    let mut task = Task::new(&lm, TaskOptions { name: "lat".into(), args: args.to_vec(), ..Default::default() }, stdio)?;
    let h = task.handle();
    let mut lat = Vec::new();
    let mut seed = 0x9e3779b97f4a7c15u64;
    std::thread::scope(|s| -> Result<(), TaskError> {
        let worker = std::thread::Builder::new()
            .stack_size(engine::TASK_THREAD_STACK)
            .spawn_scoped(s, || -> Result<Vec<Duration>, TaskError> {
                let mut v = Vec::new();
                loop {
                    match task.run() {
                        Ok(RunOutcome::Stopped) => v.push(task.last_stop_latency().unwrap_or_default()),
                        Ok(RunOutcome::Exited(_)) | Err(TaskError::Killed) => return Ok(v),
                        Err(e) => return Err(e),
                    }
                }
            })
            .map_err(|e| TaskError::Runtime(e.to_string()))?;
        for _ in 0..samples {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            std::thread::sleep(Duration::from_micros(2000 + seed % 8000));
            if worker.is_finished() {
                break;
            }
            h.request_stop();
        }
        h.kill();
        lat = worker.join().map_err(|_| TaskError::Runtime("task thread panicked".into()))??;
        Ok(())
    })?;
    summarize(path, lat)
}

fn summarize(path: &Path, mut v: Vec<Duration>) -> Result<StopLatency, TaskError> {
    v.sort();
    let us = |d: Duration| d.as_micros() as u64;
    let pick = |q: f64| v.get(((v.len() as f64 - 1.0) * q).round() as usize).map(|d| us(*d)).unwrap_or(0);
    Ok(StopLatency {
        fixture: path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        samples: v.len(),
        median_us: pick(0.5),
        p90_us: pick(0.9),
        max_us: v.last().map(|d| us(*d)).unwrap_or(0),
    })
}

#[derive(Debug, Serialize)]
pub struct CompileTimes {
    pub engine: EngineKind,
    pub instrument_ms: f64,
    pub first_compile_ms: f64,
    pub cache_hit_ms: f64,
}

/// Instrumentation + compilation on an empty cache, then a cache hit, per engine.
pub fn compile_times(path: &Path) -> Result<Vec<CompileTimes>, TaskError> {
    let bytes = std::fs::read(path).map_err(|source| ModuleError::Read { path: path.into(), source })?;
    let mut out = Vec::new();
    for kind in [EngineKind::Cranelift, EngineKind::Pulley] {
        let eng = engine::new_engine(kind)?;
        let t = Instant::now();
        let instr = crate::instrument::instrument_uncached(&bytes)?;
        let instrument_ms = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        let _m = engine::compile_uncached(&eng, kind, &instr)?;
        let first_compile_ms = t.elapsed().as_secs_f64() * 1e3;
        let _warm = engine::load_module_bytes(&bytes, path, &eng, kind)?;
        let hit = engine::load_module_bytes(&bytes, path, &eng, kind)?;
        out.push(CompileTimes {
            engine: kind,
            instrument_ms,
            first_compile_ms,
            cache_hit_ms: hit.stats.instrument_ms + hit.stats.compile_ms,
        });
    }
    Ok(out)
}
