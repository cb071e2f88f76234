//! `tracer catalog [--catalog aws|FILE] [--json]`

use crate::catalog::Catalog;
use anyhow::Result;
use clap::Args;
use serde::Serialize;
use std::io::Write;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct CatalogCommand {
    /// `aws` (shipped) or a catalog JSON file (format: docs/tracer-check.md).
    #[arg(long, default_value = "aws", value_name = "NAME|FILE")]
    pub catalog: String,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Listing<'a> {
    name: &'a str,
    source: &'a str,
    rules: &'a [String],
    instance_types: usize,
    groups: Vec<crate::catalog::Group>,
}

impl CatalogCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let c = Catalog::load(&self.catalog)?;
        let groups = c.groups();
        let mut out = std::io::stdout().lock();
        if self.json {
            let l = Listing { name: &c.name, source: &c.source, rules: &c.rules, instance_types: c.instances.len(), groups };
            serde_json::to_writer_pretty(&mut out, &l)?;
            writeln!(out)?;
            return Ok(ExitCode::SUCCESS);
        }
        writeln!(out, "catalog {}: {} instance types, {} distinct CPU feature groups", c.name, c.instances.len(), groups.len())?;
        for g in &groups {
            writeln!(
                out,
                "{} {} [{}] xsave {} B, {} features, {} types: {}",
                g.id,
                g.cpu_models.join(" / "),
                g.microarchitecture,
                g.xsave_size,
                g.features.len(),
                g.instance_types.len(),
                g.instance_types.join(" ")
            )?;
            writeln!(out, "    {}", g.features.join(" "))?;
        }
        Ok(ExitCode::SUCCESS)
    }
}
