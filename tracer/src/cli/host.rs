//! `tracer host [--json | --nfd]`

use crate::host::{self, NFD_PREFIX};
use crate::sys::cpuid::NativeCpu;
use anyhow::{Context, Result};
use clap::Args;
use std::io::Write;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct HostCommand {
    /// Print the feature-set JSON (`kind: "host"`).
    #[arg(long, conflicts_with = "nfd")]
    pub json: bool,
    /// Print this host's node-feature-discovery cpuid labels (NFD's default config).
    #[arg(long)]
    pub nfd: bool,
}

impl HostCommand {
    pub fn execute(self) -> Result<ExitCode> {
        let mut h = host::detect(&NativeCpu);
        match std::fs::read_to_string("/proc/cpuinfo") {
            Ok(text) => h.warnings.extend(host::cross_check(&h, &text)),
            Err(e) => h.warnings.push(format!("cannot read /proc/cpuinfo for the cross-check: {e}")),
        }
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
        let mut out = std::io::stdout().lock();
        if self.nfd {
            let p = h.platform(&hostname);
            let mut hidden = Vec::new();
            for (flag, blacklisted) in host::nfd_flags(&p) {
                if blacklisted {
                    hidden.push(flag);
                } else {
                    writeln!(out, "{NFD_PREFIX}{flag}=true")?;
                }
            }
            if !hidden.is_empty() {
                eprintln!("tracer: also present, hidden by NFD's default attributeBlacklist: {}", hidden.join(" "));
            }
            return Ok(ExitCode::SUCCESS);
        }
        if self.json {
            h.feature_set(&hostname).write_json(&mut out).context("writing JSON")?;
            return Ok(ExitCode::SUCCESS);
        }
        writeln!(out, "{} ({}, family {} model {} stepping {})", h.brand, h.vendor_id, h.family, h.model, h.stepping)?;
        match h.xcr0 {
            Some(x) => {
                let states: Vec<_> = crate::features::XState::from_xcr0(x).iter().map(|s| s.as_str()).collect();
                writeln!(out, "XCR0 {x:#x} ({}), XSAVE size {} (max {})", states.join(" "), h.xsave_size, h.xsave_size_max)?
            }
            None => writeln!(out, "XSAVE not enabled by the OS")?,
        }
        let names: Vec<_> = h.features.iter().filter(|f| !f.baseline).map(|f| f.name).collect();
        writeln!(out, "features ({}): {}", names.len(), names.join(" "))?;
        for w in &h.warnings {
            writeln!(out, "warning: {w}")?;
        }
        Ok(ExitCode::SUCCESS)
    }
}
