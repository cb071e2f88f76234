//! `tracer scan FILE... [--json] [-o FILE]`: full scan of ELF files on disk (no process):
//! every executable section decoded. Used for precompiled code (wasmtime `.cwasm`) and
//! for the throughput benchmark.

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use crate::image::Image;
use crate::report::{FeatureSet, SCHEMA};

#[derive(Args, Debug)]
pub struct ScanCommand {
    /// ELF files (executables, shared libraries, .cwasm).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    #[arg(long)]
    pub json: bool,
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Decoding threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

impl ScanCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let t0 = Instant::now();
        let image = Image::from_files(&self.files).map_err(anyhow::Error::msg).context("reading ELF files")?;
        let tally = crate::analysis::full_scan(&image, self.threads);
        let fs = FeatureSet {
            schema: SCHEMA.into(),
            kind: "workload".into(),
            arch: "x86_64".into(),
            subject: json!({"files": self.files, "mode": "full"}),
            features: crate::trace::entries(&image, &tally),
            warnings: Vec::new(),
            stats: json!({
                "pause_us": 0,
                "analysis_ms": t0.elapsed().as_millis() as u64,
                "bytes_decoded": tally.bytes_decoded,
                "instructions": tally.instructions,
                "code_bytes_mapped": image.code_bytes(),
            }),
        };
        let mut buf = Vec::new();
        if self.json {
            fs.write_json(&mut buf)?;
        } else {
            writeln!(buf, "{} files, {} KiB of code, {} ms", self.files.len(), image.code_bytes() / 1024, fs.stats["analysis_ms"])?;
            for e in &fs.features {
                let ev = e.evidence.first();
                writeln!(
                    buf,
                    "  {:<18} {:<7} {:>8}  {} {}",
                    e.name,
                    e.class.as_str(),
                    e.count.unwrap_or(0),
                    ev.map(|v| v.insn.as_str()).unwrap_or(""),
                    ev.map(|v| v.symbol.as_str()).unwrap_or("")
                )?;
            }
        }
        super::emit(&buf, self.output.as_deref())?;
        Ok(ExitCode::SUCCESS)
    }
}
