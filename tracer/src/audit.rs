//! `tracer audit`: the soundness report. Records what a process executes (the oracle),
//! then runs path and full mode on it, and checks `record ⊆ path ⊆ full` per feature.
//! A feature executed but not found by path mode is a *miss*: a migration that path
//! mode would allow could crash with SIGILL.

use crate::record::{self, RecordError, RecordOptions};
use crate::report::FeatureSet;
use crate::trace::{self, Mode, Options, TraceError};
use serde::Serialize;
use std::io::{self, Write};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Trace(#[from] TraceError),
}

/// One feature's row: in which of the three sets it is.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub class: String,
    pub record: bool,
    pub path: bool,
    pub full: bool,
    /// `ok`, `miss` (recorded, not in path: unsound), `path-not-full` (analysis bug),
    /// `record-not-full`.
    pub status: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Audit {
    pub pid: i32,
    pub exe: Option<String>,
    pub rows: Vec<Row>,
    pub misses: Vec<String>,
    pub counts: Counts,
    /// Roots path mode took from the Python interpreter state, if any.
    pub python: serde_json::Value,
    pub record_stats: serde_json::Value,
    pub path_stats: serde_json::Value,
    pub full_stats: serde_json::Value,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    pub record: usize,
    pub path: usize,
    pub full: usize,
    /// Required (faults/silent) features in each set.
    pub record_required: usize,
    pub path_required: usize,
    pub full_required: usize,
}

/// Record for the given options, then path (with `path` options) and full mode.
pub fn audit_pid(pid: i32, rec: &RecordOptions, path: &Options) -> Result<Audit, AuditError> {
    let r = record::record_pid(pid, rec)?;
    let p = trace::trace_pid(pid, &Options { mode: Mode::Path, ..path.clone() })?;
    let f = trace::trace_pid(pid, &Options { mode: Mode::Full, ..path.clone() })?;
    Ok(compare(pid, &r, &p, &f))
}

/// The per-feature comparison of three feature sets of one process.
pub fn compare(pid: i32, r: &FeatureSet, p: &FeatureSet, f: &FeatureSet) -> Audit {
    let has = |fs: &FeatureSet, n: &str| fs.features.iter().any(|e| e.name == n);
    let mut names: Vec<(String, String)> = Vec::new();
    for fs in [f, p, r] {
        for e in &fs.features {
            if !names.iter().any(|(n, _)| n == &e.name) {
                names.push((e.name.clone(), e.class.as_str().to_string()));
            }
        }
    }
    names.sort_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)));
    let rows: Vec<Row> = names
        .into_iter()
        .map(|(name, class)| {
            let (ir, ip, iff) = (has(r, &name), has(p, &name), has(f, &name));
            let status = if ir && !ip {
                "miss"
            } else if ip && !iff {
                "path-not-full"
            } else if ir && !iff {
                "record-not-full"
            } else {
                "ok"
            };
            Row { name, class, record: ir, path: ip, full: iff, status }
        })
        .collect();
    let req = |fs: &FeatureSet| fs.features.iter().filter(|e| e.class.is_required()).count();
    Audit {
        pid,
        exe: p.subject["exe"].as_str().map(String::from),
        misses: rows.iter().filter(|r| r.status == "miss").map(|r| r.name.clone()).collect(),
        counts: Counts {
            record: r.features.len(),
            path: p.features.len(),
            full: f.features.len(),
            record_required: req(r),
            path_required: req(p),
            full_required: req(f),
        },
        rows,
        python: p.stats.get("python").cloned().unwrap_or_default(),
        record_stats: r.stats.clone(),
        path_stats: p.stats.clone(),
        full_stats: f.stats.clone(),
    }
}

impl Audit {
    pub fn write_human(&self, mut w: impl Write) -> io::Result<()> {
        writeln!(w, "audit of pid {} ({}): record ⊆ path ⊆ full", self.pid, self.exe.as_deref().unwrap_or("?"))?;
        writeln!(w, "  {:<20} {:<7} {:^6} {:^6} {:^6}  status", "feature", "class", "record", "path", "full")?;
        let mark = |b: bool| if b { "x" } else { "." };
        for r in &self.rows {
            writeln!(w, "  {:<20} {:<7} {:^6} {:^6} {:^6}  {}", r.name, r.class, mark(r.record), mark(r.path), mark(r.full), r.status)?;
        }
        let c = &self.counts;
        writeln!(
            w,
            "features: record {} ⊆ path {} ⊆ full {} (required: {} / {} / {})",
            c.record, c.path, c.full, c.record_required, c.path_required, c.full_required
        )?;
        if self.misses.is_empty() {
            writeln!(w, "no misses: every recorded feature is found by path mode")?;
        } else {
            writeln!(w, "MISSES (executed, not found by path mode): {}", self.misses.join(" "))?;
        }
        Ok(())
    }
}
