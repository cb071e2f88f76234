//! `tracer k8s --workload W.json [--nfd-whitelisted]`

use crate::check::Workload;
use crate::k8s;
use anyhow::Result;
use clap::Args;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct K8sCommand {
    #[arg(long, value_name = "W.json")]
    pub workload: PathBuf,
    /// Also require labels NFD hides by default (BMI2, LZCNT, ...): only for clusters
    /// whose nfd-worker config removes them from attributeBlacklist.
    #[arg(long)]
    pub nfd_whitelisted: bool,
}

impl K8sCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let w = Workload::load(&self.workload)?;
        let plan = k8s::plan(&w, self.nfd_whitelisted);
        let yaml = plan.to_yaml(&w.name)?;
        std::io::stdout().lock().write_all(yaml.as_bytes())?;
        if !plan.blacklisted.is_empty() && !self.nfd_whitelisted {
            let names: Vec<_> = plan.blacklisted.iter().map(|(f, _)| *f).collect();
            eprintln!("tracer: not required in the affinity (NFD hides their labels by default): {}; see the comments", names.join(", "));
        }
        if !plan.unlabelled.is_empty() {
            eprintln!("tracer: no NFD label exists for: {}", plan.unlabelled.join(", "));
        }
        Ok(ExitCode::SUCCESS)
    }
}
