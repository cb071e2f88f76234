//! `tracer eval --workload W.json [--workload W2.json ...] [--catalog aws|FILE] [--source S.json ...] [--json]`
//! `tracer eval --bound W.json --bound W-avx2.json@avx512f,avx512vl,rtm --bound W-zen3.json@rtm,avx512f@amd --traced-on host.json`
//! (per-source binding: one extra row per executable)

use crate::catalog::Catalog;
use crate::check::{self, Workload};
use crate::policy;
use crate::catalog::Platform;
use crate::features::{self, Feature};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct EvalCommand {
    /// Workload feature sets; one table row each.
    #[arg(long, value_name = "W.json", required_unless_present = "bound", num_args = 1..)]
    pub workload: Vec<PathBuf>,
    /// Per-source binding: a trace of the workload taken on the `--traced-on` host with the
    /// listed features hidden from its CPU dispatch (glibc tunables, OPENSSL_ia32cap); it
    /// stands for the sources whose dispatch features are the host's minus those. A final
    /// `@amd` or `@intel`: the trace was bound with that vendor's glibc preferences (see
    /// docs/tracer-check.md), so it stands for that vendor's sources. One extra row per
    /// executable; sources no trace stands for are not counted.
    #[arg(long, value_name = "W.json[@FEATURE,...][@amd|@intel]", num_args = 1.., requires = "traced_on")]
    pub bound: Vec<String>,
    /// The host the `--bound` traces were taken on (`tracer host --json`).
    #[arg(long, value_name = "HOST.json")]
    pub traced_on: Option<PathBuf>,
    /// Libraries whose CPU dispatch the `--bound` signatures cover: `glibc` (glibc 2.36)
    /// and `crypto` (OpenSSL 3.0, libgcrypt 1.10).
    #[arg(long, value_delimiter = ',', default_values = ["glibc", "crypto"])]
    pub dispatch: Vec<String>,
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
        if let Some(host) = &self.traced_on {
            rows.extend(self.per_source_rows(&check::load_host(host)?, &sources, &catalog.instances)?);
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

    fn per_source_rows(&self, host: &Platform, sources: &[Platform], dests: &[Platform]) -> Result<Vec<policy::EvalRow>> {
        let mut dispatch: Vec<&'static Feature> = Vec::new();
        for lib in &self.dispatch {
            let names = match lib.as_str() {
                "glibc" => policy::DISPATCH_GLIBC,
                "crypto" => policy::DISPATCH_CRYPTO,
                other => bail!("--dispatch {other}: expected glibc or crypto"),
            };
            for n in names {
                let f = features::by_name(n).with_context(|| format!("dispatch feature {n}"))?;
                if !dispatch.iter().any(|d| std::ptr::eq(*d, f)) {
                    dispatch.push(f);
                }
            }
        }
        let mut groups: Vec<Vec<policy::Bound>> = Vec::new();
        for arg in &self.bound {
            let (rest, vendor) = match arg.rsplit_once('@') {
                Some((p, "intel")) => (p, Some(crate::catalog::Vendor::Intel)),
                Some((p, "amd")) => (p, Some(crate::catalog::Vendor::Amd)),
                _ => (arg.as_str(), None),
            };
            let (path, hidden) = match rest.rsplit_once('@') {
                Some((p, h)) => (p, h.split(',').filter(|h| !h.is_empty()).collect::<Vec<_>>()),
                None => (rest, Vec::new()),
            };
            let workload = Workload::load(Path::new(path))?;
            let hidden = hidden
                .iter()
                .map(|h| features::by_name(h).with_context(|| format!("--bound {arg}: unknown feature {h}")))
                .collect::<Result<Vec<_>>>()?;
            match groups.iter_mut().find(|g| g[0].workload.name == workload.name) {
                Some(g) => g.push(policy::Bound { workload, hidden, vendor }),
                None => groups.push(vec![policy::Bound { workload, hidden, vendor }]),
            }
        }
        groups.iter().map(|g| policy::eval_per_source(g, host, &dispatch, sources, dests).map_err(anyhow::Error::msg)).collect()
    }
}
