use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use migrator::bench;
use migrator::engine::EngineKind;

/// Measure instrumentation overhead, checkpoint/restore time and image size, time to stop.
#[derive(clap::Parser)]
pub struct BenchCommand {
    /// Directory with the built fixtures (fixtures/build/wasm).
    #[arg(long, default_value = "fixtures/build/wasm")]
    pub fixtures: PathBuf,
    /// Where images are written during the benchmark.
    #[arg(long, default_value = "/tmp")]
    pub dir: PathBuf,
    /// Runs per overhead measurement (best is kept).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Touched memory sizes (MiB) for checkpoint/restore.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    pub sizes: Vec<u64>,
    /// Engines to restore under in the checkpoint/restore benchmark.
    #[arg(long, value_delimiter = ',', default_value = "cranelift")]
    pub restore_engines: Vec<EngineKind>,
    /// Only these parts: overhead, checkpoint, stop (default: all).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
}

impl BenchCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let want = |p: &str| self.only.is_empty() || self.only.iter().any(|o| o == p);
        let f = |n: &str| self.fixtures.join(n);
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        if want("overhead") {
            let cases = [
                ("matmul.wasm", s(&["matmul", "300", "4"])),
                ("hashchain.wasm", s(&["hashchain", "40000"])),
                ("recursion.wasm", s(&["recursion", "20000", "2000"])),
            ];
            let mut logsum = 0.0;
            for (file, args) in &cases {
                let o = bench::overhead(&f(file), args, self.reps).with_context(|| format!("overhead of {file}"))?;
                println!("{}", serde_json::to_string(&serde_json::json!({"bench": "overhead", "result": o}))?);
                logsum += o.ratio.ln();
            }
            let gm = (logsum / cases.len() as f64).exp();
            println!("{}", serde_json::json!({"bench": "overhead_geomean", "ratio": gm}));
        }
        if want("checkpoint") {
            for mode in ["pattern", "random"] {
                for &mib in &self.sizes {
                    for &kind in &self.restore_engines {
                        let r = bench::checkpoint_restore(&f("alloc_fill.wasm"), mib, mode, &self.dir, kind)
                            .with_context(|| format!("checkpoint/restore at {mib} MiB"))?;
                        println!("{}", serde_json::to_string(&serde_json::json!({"bench": "checkpoint_restore", "restore_engine": kind, "result": r}))?);
                    }
                }
            }
            let c = bench::compile_times(&f("alloc_fill.wasm"))?;
            println!("{}", serde_json::to_string(&serde_json::json!({"bench": "compile", "result": c}))?);
        }
        if want("stop") {
            let cases = [
                ("matmul.wasm", s(&["matmul", "300", "1000"])),
                ("hashchain.wasm", s(&["hashchain", "10000000"])),
                ("recursion.wasm", s(&["recursion", "20000", "1000000"])),
            ];
            for (file, args) in &cases {
                let r = bench::stop_latency(&f(file), args, 40)?;
                println!("{}", serde_json::to_string(&serde_json::json!({"bench": "time_to_stop", "result": r}))?);
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
