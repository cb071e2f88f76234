//! The feature-set document (`schema: "featureset/1"`, DESIGN.md) and its human rendering.

use crate::features::{self, Class, CpuidBit, XState};
use serde::{Deserialize, Serialize};
use std::io::{self, Write};

pub const SCHEMA: &str = "featureset/1";

/// A feature set: what a workload uses, or what a host offers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FeatureSet {
    pub schema: String,
    /// `workload` or `host`.
    pub kind: String,
    pub arch: String,
    #[serde(default)]
    pub subject: serde_json::Value,
    pub features: Vec<FeatureEntry>,
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub stats: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FeatureEntry {
    pub name: String,
    pub class: Class,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpuid: Option<CpuidJson>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xcr0: Vec<XState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Evidence>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct CpuidJson {
    pub leaf: u32,
    pub subleaf: u32,
    pub reg: features::Reg,
    pub bit: u8,
}

impl From<CpuidBit> for CpuidJson {
    fn from(b: CpuidBit) -> Self {
        CpuidJson { leaf: b.leaf, subleaf: b.subleaf, reg: b.reg, bit: b.bit }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Evidence {
    pub addr: String,
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub symbol: String,
    #[serde(default)]
    pub insn: String,
    /// With `--explain`: how the instruction is reached, innermost block first, ending at a root.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<String>,
}

impl FeatureEntry {
    /// An entry for a canonical feature, with its CPUID bit and XCR0 states filled in.
    pub fn canonical(f: &features::Feature, class: Class) -> FeatureEntry {
        FeatureEntry {
            name: f.name.to_string(),
            class,
            cpuid: f.cpuid.map(Into::into),
            xcr0: f.xcr0.to_vec(),
            count: None,
            evidence: Vec::new(),
        }
    }
}

impl FeatureSet {
    pub fn write_json(&self, mut w: impl Write) -> io::Result<()> {
        serde_json::to_writer_pretty(&mut w, self)?;
        writeln!(w)
    }
}
