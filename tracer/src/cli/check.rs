//! `tracer check --workload W.json (--dest HOST.json | --catalog aws|FILE) [--source S.json] [--policy P] [--json]`

use super::{EXIT_INCOMPATIBLE, EXIT_OK};
use crate::catalog::{group_platforms, Catalog, Platform};
use crate::check::{self, Workload};
use crate::policy::{self, Policy};
use anyhow::{bail, Result};
use clap::Args;
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct CheckCommand {
    /// Workload feature set (`tracer --pid N --json`).
    #[arg(long, value_name = "W.json")]
    pub workload: PathBuf,
    /// Destination host feature set (`tracer host --json` on that host).
    #[arg(long, value_name = "HOST.json", required_unless_present = "catalog", conflicts_with = "catalog")]
    pub dest: Option<PathBuf>,
    /// Check every instance type of a catalog: `aws` or a catalog file.
    #[arg(long, value_name = "NAME|FILE")]
    pub catalog: Option<String>,
    /// Source host feature set; needed by the criu-* policies.
    #[arg(long, value_name = "S.json")]
    pub source: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = Policy::Workload)]
    pub policy: Policy,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Outcome {
    workload: String,
    policy: Policy,
    required: Vec<&'static str>,
    hints: Vec<&'static str>,
    compatible: bool,
    destinations: Vec<DestOutcome>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    compatible_groups: Vec<crate::catalog::Group>,
}

#[derive(Serialize)]
struct DestOutcome {
    destination: String,
    compatible: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    missing: Vec<check::Missing>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
}

impl CheckCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let w = Workload::load(&self.workload)?;
        let source = self.source.as_deref().map(check::load_host).transpose()?;
        if self.policy != Policy::Workload && source.is_none() {
            bail!("--policy {} compares a source with the destination: give --source S.json (`tracer host --json` on the source)", self.policy.name());
        }
        if let Some(s) = &source {
            let m = check::missing(&w, s);
            if !m.is_empty() {
                let names: Vec<_> = m.iter().map(|m| m.feature).collect();
                eprintln!("tracer: warning: the source {} lacks {} that the workload uses: was it traced elsewhere?", s.name, names.join(", "));
            }
        }
        let dests: Vec<Platform> = match (&self.dest, &self.catalog) {
            (Some(d), _) => vec![check::load_host(d)?],
            (None, Some(c)) => Catalog::load(c)?.instances,
            (None, None) => bail!("give --dest HOST.json or --catalog aws|FILE"),
        };
        let mut results = Vec::new();
        for d in &dests {
            let r = match (self.policy, &source) {
                (Policy::Workload, _) => {
                    let v = check::verdict(&w, d);
                    DestOutcome { destination: d.name.clone(), compatible: v.compatible, missing: v.missing, reason: None }
                }
                (p, Some(s)) => {
                    let dec = policy::decide(p, &w, s, d);
                    DestOutcome { destination: d.name.clone(), compatible: dec.is_ok(), missing: vec![], reason: dec.err() }
                }
                (_, None) => unreachable!("checked above"),
            };
            results.push(r);
        }
        let compatible = results.iter().any(|r| r.compatible);
        let groups = if self.catalog.is_some() {
            group_platforms(dests.iter().zip(&results).filter(|(_, r)| r.compatible).map(|(d, _)| d))
        } else {
            Vec::new()
        };
        let out_struct = Outcome {
            workload: w.name.clone(),
            policy: self.policy,
            required: w.required_names(),
            hints: w.hints.iter().map(|f| f.name).collect(),
            compatible,
            destinations: results,
            compatible_groups: groups,
        };
        let mut out = std::io::stdout().lock();
        if self.json {
            serde_json::to_writer_pretty(&mut out, &out_struct)?;
            writeln!(out)?;
        } else {
            self.write_human(&out_struct, &mut out)?;
        }
        Ok(ExitCode::from(if compatible { EXIT_OK } else { EXIT_INCOMPATIBLE }))
    }

    fn write_human(&self, o: &Outcome, out: &mut impl Write) -> Result<()> {
        let req = if o.required.is_empty() { "nothing beyond the x86-64 baseline".to_string() } else { o.required.join(" ") };
        writeln!(out, "workload {} requires: {req}", o.workload)?;
        if !o.hints.is_empty() {
            writeln!(out, "hints (never required): {}", o.hints.join(" "))?;
        }
        if self.catalog.is_none() {
            let d = &o.destinations[0];
            if d.compatible {
                writeln!(out, "compatible: {} can run {} (policy {})", d.destination, o.workload, o.policy.name())?;
            } else {
                writeln!(out, "NOT compatible: {} (policy {})", d.destination, o.policy.name())?;
                for m in &d.missing {
                    writeln!(out, "  missing {m}")?;
                }
                if let Some(r) = &d.reason {
                    writeln!(out, "  {r}")?;
                }
            }
            return Ok(());
        }
        let n = o.destinations.iter().filter(|d| d.compatible).count();
        writeln!(out, "{n} of {} instance types compatible (policy {}), {} groups:", o.destinations.len(), o.policy.name(), o.compatible_groups.len())?;
        for g in &o.compatible_groups {
            writeln!(out, "  {} {} [{}]: {}", g.id, g.cpu_models.join(" / "), g.microarchitecture, g.instance_types.join(" "))?;
        }
        // Why the others fail, once per distinct reason.
        let mut reasons: Vec<(String, usize)> = Vec::new();
        for d in o.destinations.iter().filter(|d| !d.compatible) {
            let r = d.reason.clone().unwrap_or_else(|| {
                format!("missing {}", d.missing.iter().map(|m| m.to_string()).collect::<Vec<_>>().join("; "))
            });
            match reasons.iter_mut().find(|(x, _)| *x == r) {
                Some((_, c)) => *c += 1,
                None => reasons.push((r, 1)),
            }
        }
        for (r, c) in reasons {
            writeln!(out, "  refused ({c} types): {r}")?;
        }
        Ok(())
    }
}
