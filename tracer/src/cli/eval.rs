//! `tracer eval --workload W.json [--workload W2.json ...] [--catalog aws|FILE] [--source S.json ...] [--json]`

use crate::catalog::Catalog;
use crate::check::{self, Workload};
use crate::policy;
use anyhow::Result;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct EvalCommand {
    /// Workload feature sets; one table row each.
    #[arg(long, value_name = "W.json", required = true, num_args = 1..)]
    pub workload: Vec<PathBuf>,
    /// Destinations (and, without --source, sources): `aws` or a catalog file.
    #[arg(long, default_value = "aws", value_name = "NAME|FILE")]
    pub catalog: String,
    /// Source hosts (`tracer host --json`) instead of the catalog's instance types.
    #[arg(long, value_name = "S.json")]
    pub source: Vec<PathBuf>,
    /// Treat FEATURE as not required (what-if: code the tracer reports but that only runs
    /// behind a CPUID check it could not prove). Marked in the workload name.
    #[arg(long = "ignore-feature", value_name = "FEATURE", value_delimiter = ',')]
    pub ignore: Vec<String>,
    /// Count pairs of distinct CPU groups (one instance type per group) instead of
    /// instance types, so large families of identical CPUs do not dominate.
    #[arg(long)]
    pub groups: bool,
    #[arg(long)]
    pub json: bool,
}

impl EvalCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let mut catalog = Catalog::load(&self.catalog)?;
        if self.groups {
            catalog.instances = crate::catalog::representatives(&catalog.instances);
        }
        let sources = if self.source.is_empty() {
            catalog.instances.clone()
        } else {
            self.source.iter().map(|p| check::load_host(p)).collect::<Result<Vec<_>, _>>()?
        };
        let mut loaded = Vec::new();
        for path in &self.workload {
            let w = Workload::load(path)?;
            loaded.push((path, w));
        }
        // Two sets of one executable (e.g. with and without LD_BIND_NOW): name rows by file.
        let names: Vec<String> = loaded.iter().map(|(_, w)| w.name.clone()).collect();
        let mut rows = Vec::new();
        for (path, mut w) in loaded {
            if names.iter().filter(|n| **n == w.name).count() > 1 {
                if let Some(stem) = path.file_stem() {
                    w.name = stem.to_string_lossy().into_owned();
                }
            }
            if !self.ignore.is_empty() {
                let before = w.required.len();
                w = w.ignoring(&self.ignore)?;
                if w.required.len() < before {
                    w.name.push('*');
                }
            }
            rows.push(policy::eval(&w, &sources, &catalog.instances));
        }
        let mut out = std::io::stdout().lock();
        if self.json {
            serde_json::to_writer_pretty(&mut out, &rows)?;
            writeln!(out)?;
        } else {
            policy::write_table(&rows, &mut out)?;
        }
        Ok(ExitCode::SUCCESS)
    }
}
