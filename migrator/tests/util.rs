use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use migrator::bench::{sink_stdio, Sink};
use migrator::engine::{self, EngineKind, LoadedModule};
use migrator::wasi::Preopen;
use migrator::{Image, RunOutcome, Task, TaskOptions};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("migrator-cache")
}

/// Builds the fixtures once per test process (the script is idempotent) and
/// points the module cache at the target directory.
pub fn fixture(name: &str) -> PathBuf {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| {
        let st = std::process::Command::new(root().join("fixtures/wasm/build.sh")).status().expect("run fixtures/wasm/build.sh");
        assert!(st.success(), "fixtures/wasm/build.sh failed");
        std::env::set_var("MIGRATOR_CACHE_DIR", cache_dir());
    });
    let p = root().join("fixtures/build/wasm").join(name);
    assert!(p.exists(), "fixture {} missing", p.display());
    p
}

pub fn expected(name: &str) -> Vec<u8> {
    std::fs::read(root().join("fixtures/wasm/expected").join(name)).expect("expected output file")
}

pub fn load(name: &str, kind: EngineKind) -> LoadedModule {
    let path = fixture(name);
    let eng = engine::new_engine(kind).expect("engine");
    engine::load_module(&path, &eng, kind).expect("load module")
}

pub fn args(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn take(s: &Sink) -> Vec<u8> {
    s.0.lock().unwrap().clone()
}

/// Runs `task` on a thread with a task-sized stack; requests a stop after
/// `delay` (if given). Returns the outcome.
pub fn run_with_stop(task: &mut Task, delay: Option<Duration>) -> RunOutcome {
    let h = task.handle();
    std::thread::scope(|s| {
        let worker = std::thread::Builder::new()
            .stack_size(engine::TASK_THREAD_STACK)
            .spawn_scoped(s, || task.run())
            .unwrap();
        if let Some(d) = delay {
            let t = std::time::Instant::now();
            while t.elapsed() < d && !worker.is_finished() {
                std::thread::sleep(Duration::from_micros(200));
            }
            if !worker.is_finished() {
                h.request_stop();
            }
        }
        worker.join().expect("task thread panicked").expect("task failed")
    })
}

/// Uninterrupted run under `kind`: stdout.
pub fn run_plain(name: &str, a: &[&str], preopens: Vec<Preopen>, kind: EngineKind) -> Vec<u8> {
    run_plain_env(name, a, preopens, vec![], kind)
}

pub fn run_plain_env(name: &str, a: &[&str], preopens: Vec<Preopen>, env: Vec<String>, kind: EngineKind) -> Vec<u8> {
    let lm = load(name, kind);
    let (stdio, out) = sink_stdio();
    let mut t = Task::new(&lm, TaskOptions { name: "plain".into(), args: args(a), preopens, env, ..Default::default() }, stdio).unwrap();
    assert_eq!(run_with_stop(&mut t, None), RunOutcome::Exited(0));
    take(&out)
}

pub struct Chain {
    pub stdout: Vec<u8>,
    pub checkpoints: usize,
    pub engines_used: Vec<EngineKind>,
}

/// Runs a fixture, checkpointing it at `n` random moments (delays up to
/// `max_delay_ms`), each image written out and read back, restored under
/// the other engine every time (Cranelift, Pulley, Cranelift, ...).
pub fn chain(name: &str, a: &[&str], preopens: Vec<Preopen>, n: usize, max_delay_ms: u64, seed: u64) -> Chain {
    chain_env(name, a, preopens, vec![], n, max_delay_ms, seed)
}

pub fn chain_env(name: &str, a: &[&str], preopens: Vec<Preopen>, env: Vec<String>, n: usize, max_delay_ms: u64, seed: u64) -> Chain {
    let lms = [load(name, EngineKind::Cranelift), load(name, EngineKind::Pulley)];
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (stdio, out) = sink_stdio();
    let mut outs = vec![out];
    let mut task = Task::new(&lms[0], TaskOptions { name: name.into(), args: args(a), preopens, env, ..Default::default() }, stdio).unwrap();
    let mut k = 0;
    let mut engines_used = vec![EngineKind::Cranelift];
    let mut checkpoints = 0;
    loop {
        let delay = (checkpoints < n).then(|| Duration::from_micros(500 + next() % (max_delay_ms * 1000)));
        match run_with_stop(&mut task, delay) {
            RunOutcome::Exited(code) => {
                assert_eq!(code, 0, "{name} exited with {code}");
                break;
            }
            RunOutcome::Stopped => {
                checkpoints += 1;
                let img = task.capture().expect("capture");
                let mut bytes = Vec::new();
                img.write_to(&mut bytes).unwrap();
                let back = Image::read_from(&bytes[..]).unwrap();
                assert_eq!(back, img, "image roundtrip");
                drop(task);
                k = 1 - k;
                let (stdio, out) = sink_stdio();
                outs.push(out);
                task = Task::restore(&lms[k], &back, stdio, None).expect("restore");
                engines_used.push(lms[k].kind);
            }
        }
    }
    Chain { stdout: outs.iter().flat_map(take).collect(), checkpoints, engines_used }
}
