//! Compatibility of a workload's feature set with a destination.
//!
//! A destination is compatible when it has every `faults`/`silent` feature the workload
//! uses and the XCR0 states those features need; `hint` features never count.

use crate::catalog::{self, FeatureBits, Platform};
use crate::features::{self, Class, Feature, XState};
use crate::report::{Evidence, FeatureSet, SCHEMA};
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Problems with a feature-set input (all exit 2).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("{path} is not a feature-set JSON (schema {SCHEMA:?}, from `tracer --json` or `tracer host --json`): {error}")]
    Json { path: PathBuf, error: serde_json::Error },
    #[error("{path}: schema {found:?} is not {SCHEMA:?}")]
    Schema { path: PathBuf, found: String },
    #[error("{path}: kind {found:?} where {want:?} was expected (workloads come from `tracer --pid N --json`, hosts from `tracer host --json`)")]
    Kind { path: PathBuf, found: String, want: &'static str },
    #[error("{path}: arch {found:?}: only x86_64 feature sets can be checked")]
    Arch { path: PathBuf, found: String },
    #[error("{path}: unknown feature {name:?} (not in tracer's feature table)")]
    UnknownFeature { path: PathBuf, name: String },
    #[error("{path}: the workload lists no features (an empty set would run anywhere; was the trace complete?)")]
    Empty { path: PathBuf },
}

/// One feature the workload needs on the destination.
#[derive(Debug, Clone)]
pub struct Requirement {
    pub feature: &'static Feature,
    pub class: Class,
    /// XCR0 states the feature needs enabled (from the JSON, else the table).
    pub xcr0: Vec<XState>,
    pub evidence: Option<Evidence>,
}

/// A validated workload feature set.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Short name for tables: the subject's exe, else the file name.
    pub name: String,
    pub required: Vec<Requirement>,
    /// Hint-class features: reported, never required.
    pub hints: Vec<&'static Feature>,
}

impl Workload {
    pub fn load(path: &Path) -> Result<Workload, CheckError> {
        let set = read_set(path)?;
        Workload::from_set(set, path)
    }

    pub fn from_set(set: FeatureSet, path: &Path) -> Result<Workload, CheckError> {
        validate(&set, path, "workload")?;
        if set.features.is_empty() {
            return Err(CheckError::Empty { path: path.into() });
        }
        let mut required: Vec<Requirement> = Vec::new();
        let mut hints: Vec<&'static Feature> = Vec::new();
        for e in set.features {
            let f = features::by_name(&e.name)
                .ok_or_else(|| CheckError::UnknownFeature { path: path.into(), name: e.name.clone() })?;
            if !e.class.is_required() {
                if !hints.iter().any(|h| std::ptr::eq(*h, f)) {
                    hints.push(f);
                }
                continue;
            }
            let xcr0 = if e.xcr0.is_empty() { f.xcr0.to_vec() } else { e.xcr0 };
            match required.iter_mut().find(|r| std::ptr::eq(r.feature, f)) {
                Some(r) => {
                    for s in xcr0 {
                        if !r.xcr0.contains(&s) {
                            r.xcr0.push(s);
                        }
                    }
                    r.evidence = r.evidence.take().or_else(|| e.evidence.into_iter().next());
                }
                None => required.push(Requirement { feature: f, class: e.class, xcr0, evidence: e.evidence.into_iter().next() }),
            }
        }
        let name = set
            .subject
            .get("exe")
            .and_then(|v| v.as_str())
            .map(|s| s.rsplit('/').next().unwrap_or(s).to_string())
            .unwrap_or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
        Ok(Workload { name, required, hints })
    }

    /// The workload with these features no longer required (what-if analysis for code the
    /// tracer could not prove is guarded by a CPUID check). Unknown names are an error.
    pub fn ignoring(mut self, names: &[String]) -> Result<Workload, CheckError> {
        for n in names {
            let f = features::by_name(n)
                .ok_or_else(|| CheckError::UnknownFeature { path: PathBuf::from("--ignore-feature"), name: n.clone() })?;
            self.required.retain(|r| !std::ptr::eq(r.feature, f));
        }
        Ok(self)
    }

    /// Required features that are not part of the x86-64 baseline.
    pub fn required_names(&self) -> Vec<&'static str> {
        self.required.iter().filter(|r| !r.feature.baseline).map(|r| r.feature.name).collect()
    }

    /// Union of the XCR0 states the required features need.
    pub fn xcr0(&self) -> Vec<XState> {
        let mut v: Vec<XState> = self.required.iter().flat_map(|r| r.xcr0.iter().copied()).collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Reads and parses a feature-set file.
pub fn read_set(path: &Path) -> Result<FeatureSet, CheckError> {
    let text = std::fs::read_to_string(path).map_err(|error| CheckError::Read { path: path.into(), error })?;
    serde_json::from_str(&text).map_err(|error| CheckError::Json { path: path.into(), error })
}

fn validate(set: &FeatureSet, path: &Path, want: &'static str) -> Result<(), CheckError> {
    if set.schema != SCHEMA {
        return Err(CheckError::Schema { path: path.into(), found: set.schema.clone() });
    }
    if set.kind != want {
        return Err(CheckError::Kind { path: path.into(), found: set.kind.clone(), want });
    }
    if set.arch != "x86_64" {
        return Err(CheckError::Arch { path: path.into(), found: set.arch.clone() });
    }
    Ok(())
}

/// Loads a `tracer host --json` file as a platform.
pub fn load_host(path: &Path) -> Result<Platform, CheckError> {
    let set = read_set(path)?;
    host_platform(&set, path)
}

/// A host feature set as a platform. Uses `subject.{vendor,cpu_model,xcr0,xsave_size,
/// xsave_size_max}` when present, else derives them from the features.
pub fn host_platform(set: &FeatureSet, path: &Path) -> Result<Platform, CheckError> {
    validate(set, path, "host")?;
    let mut bits = FeatureBits::default();
    for e in &set.features {
        let f = features::by_name(&e.name)
            .ok_or_else(|| CheckError::UnknownFeature { path: path.into(), name: e.name.clone() })?;
        bits.insert(f.id());
    }
    for f in features::TABLE.iter().filter(|f| f.baseline) {
        bits.insert(f.id());
    }
    let s = &set.subject;
    let str_of = |k: &str| s.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let cpu_model = str_of("cpu_model");
    let vendor = match str_of("vendor") {
        v if !v.is_empty() => catalog::vendor_of(&v),
        _ => catalog::vendor_of(&cpu_model),
    };
    let xcr0: Vec<XState> = match s.get("xcr0").and_then(|v| v.as_str()).and_then(parse_hex) {
        Some(x) => XState::from_xcr0(x),
        None => catalog::xcr0_from_features(&bits),
    };
    let size = catalog::xsave_size(vendor, &xcr0);
    let num = |k: &str| s.get(k).and_then(|v| v.as_u64()).map(|n| n as u32);
    let name = match str_of("hostname") {
        h if !h.is_empty() => h,
        _ => path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "host".into()),
    };
    Ok(Platform {
        name,
        cpu_model,
        microarchitecture: str_of("microarchitecture"),
        vendor,
        features: bits,
        xsave_size: num("xsave_size").unwrap_or(size),
        xsave_size_max: num("xsave_size_max").or(num("xsave_size")).unwrap_or(size),
        xcr0,
    })
}

fn parse_hex(s: &str) -> Option<u64> {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()
}

/// Why a destination cannot run the workload.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Missing {
    pub feature: &'static str,
    pub class: Class,
    /// Set when the CPU has the feature but the OS has not enabled this XCR0 state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xstate: Option<XState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
}

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.xstate {
            None => write!(f, "{} ({})", self.feature, self.class)?,
            Some(s) => write!(f, "{} ({}): XCR0 state {} not enabled by the OS", self.feature, self.class, s.as_str())?,
        }
        if let Some(e) = &self.evidence {
            write!(f, "  e.g. {} at {}", e.insn, e.addr)?;
            if !e.symbol.is_empty() {
                write!(f, " {}", e.symbol)?;
            }
            if !e.object.is_empty() {
                write!(f, " in {}", e.object)?;
            }
        }
        Ok(())
    }
}

/// What is missing on `dest` for `w`; empty means compatible.
pub fn missing(w: &Workload, dest: &Platform) -> Vec<Missing> {
    let mut out = Vec::new();
    for r in &w.required {
        let base = Missing { feature: r.feature.name, class: r.class, xstate: None, evidence: r.evidence.clone() };
        if !dest.features.has(r.feature) {
            out.push(base);
        } else if let Some(&s) = r.xcr0.iter().find(|s| !dest.has_xstate(**s)) {
            out.push(Missing { xstate: Some(s), ..base });
        }
    }
    out
}

pub fn compatible(w: &Workload, dest: &Platform) -> bool {
    w.required.iter().all(|r| dest.features.has(r.feature) && r.xcr0.iter().all(|s| dest.has_xstate(*s)))
}

/// The verdict for one destination.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub destination: String,
    pub compatible: bool,
    pub missing: Vec<Missing>,
}

pub fn verdict(w: &Workload, dest: &Platform) -> Verdict {
    let missing = missing(w, dest);
    Verdict { destination: dest.name.clone(), compatible: missing.is_empty(), missing }
}
