//! Migration policies: ours (the workload's features) and CRIU's CPU checks as baselines,
//! and `eval`, which counts the source→destination pairs each policy accepts.
//!
//! CRIU's rules follow criu/arch/x86/cpu.c (`cpu_validate_features`,
//! `x86_ins_capability_mask`, `cpu_validate_ins_features`) and compel/arch/x86/src/lib/cpu.c
//! (`xfeatures_mask`, `xsave_size`, `xsave_size_max`); see docs/tracer-check.md.

use crate::catalog::{Platform, FeatureBits};
use crate::check::{self, Workload};
use crate::features::{self, Feature, XState};
use clap::ValueEnum;
use serde::Serialize;
use std::sync::OnceLock;

/// A rule deciding whether a process may move from `src` to `dst`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Ours: the destination has every faults/silent feature the workload uses (+ XCR0 states).
    Workload,
    /// CRIU's instruction check alone (`--cpu-cap=^fpu`; `--cpu-cap=ins` keeps the default
    /// fpu check too): every source flag in CRIU's instruction mask is on the destination.
    CriuCpu,
    /// CRIU's FPU check alone (`--cpu-cap=^ins`): FPU/XSAVE bits, xfeatures subset, equal
    /// xsave sizes.
    CriuFpu,
    /// CRIU's default when restoring (`fpu,ins`): both of the above.
    CriuDefault,
    /// CRIU `--cpu-cap=cpu`: every capability word equal (strict), on top of the default
    /// fpu and ins checks the flag adds to.
    CriuStrict,
}

impl Policy {
    pub const ALL: [Policy; 5] = [Policy::Workload, Policy::CriuCpu, Policy::CriuFpu, Policy::CriuDefault, Policy::CriuStrict];
    pub fn name(self) -> &'static str {
        match self {
            Policy::Workload => "workload",
            Policy::CriuCpu => "criu-cpu",
            Policy::CriuFpu => "criu-fpu",
            Policy::CriuDefault => "criu-default",
            Policy::CriuStrict => "criu-strict",
        }
    }
}

/// CRIU's `x86_ins_capability_mask` (criu/arch/x86/cpu.c) as canonical names. Bits of the
/// mask that are not CPUID instruction features in our table (the Linux-synthetic
/// REP_GOOD and NOPL words, ERMS, MISALIGNSSE, XGETBV1, TME) are not modelled: treated
/// as equal on both sides, which can only make CRIU accept more pairs.
pub const CRIU_INS_MASK: &[&str] = &[
    // CPUID_1_EDX
    "fpu", "tsc", "cx8", "sep", "cmov", "clflush", "mmx", "fxsr", "sse", "sse2",
    // CPUID_8000_0001_EDX
    "syscall", "mmxext", "rdtscp", "3dnowext", "3dnow",
    // CPUID_1_ECX
    "pni", "pclmulqdq", "monitor", "ssse3", "cx16", "sse4_1", "sse4_2", "movbe", "popcnt", "aes", "xsave",
    "osxsave", "avx", "f16c", "rdrand",
    // CPUID_8000_0001_ECX
    "abm", "sse4a", "3dnowprefetch", "xop", "fma4", "tbm",
    // CPUID_7_0_EBX
    "fsgsbase", "bmi1", "hle", "avx2", "bmi2", "rtm", "mpx", "avx512f", "avx512dq", "rdseed", "adx",
    "clflushopt", "avx512pf", "avx512er", "avx512cd", "sha_ni", "avx512bw", "avx512vl",
    // CPUID_D_1_EAX
    "xsaveopt", "xsavec",
    // CPUID_7_0_ECX
    "avx512vbmi", "avx512_vbmi2", "gfni", "vaes", "vpclmulqdq", "avx512_vnni", "avx512_bitalg",
    "avx512_vpopcntdq", "rdpid",
    // CPUID_8000_0008_EBX
    "clzero",
    // CPUID_7_0_EDX
    "avx512_4vnniw", "avx512_4fmaps",
];

/// FPU bits CRIU's fpu check requires on the destination when the source has them.
pub const CRIU_FPU_BITS: &[&str] = &["fpu", "fxsr", "osxsave", "xsaves"];

fn bits_of(names: &[&str]) -> FeatureBits {
    names.iter().map(|n| features::by_name(n).unwrap_or_else(|| panic!("CRIU mask name {n} not in table"))).collect()
}

fn ins_mask() -> &'static FeatureBits {
    static M: OnceLock<FeatureBits> = OnceLock::new();
    M.get_or_init(|| bits_of(CRIU_INS_MASK))
}

fn missing_in(src: &FeatureBits, dst: &FeatureBits, mask: &FeatureBits) -> Vec<&'static Feature> {
    mask.iter().filter(|f| src.has(f) && !dst.has(f)).collect()
}

/// Whether `policy` lets `w` move from `src` to `dst`, and if not, why (one line).
pub fn decide(policy: Policy, w: &Workload, src: &Platform, dst: &Platform) -> Result<(), String> {
    match policy {
        Policy::Workload => {
            let m = check::missing(w, dst);
            if m.is_empty() {
                Ok(())
            } else {
                Err(format!("missing: {}", m.iter().map(|m| m.feature).collect::<Vec<_>>().join(", ")))
            }
        }
        Policy::CriuCpu => criu_ins(src, dst),
        Policy::CriuFpu => criu_fpu(src, dst),
        Policy::CriuDefault => criu_fpu(src, dst).and_then(|()| criu_ins(src, dst)),
        // `--cpu-cap=cpu` adds CPU_CAP_CPU to the default FPU|INS (criu/config.c
        // parse_cpu_cap ORs onto opts.cpu_cap = CPU_CAP_DEFAULT), and
        // cpu_validate_features runs every check whose bit is set.
        Policy::CriuStrict => criu_fpu(src, dst).and_then(|()| criu_ins(src, dst)).and_then(|()| {
            if src.features == dst.features {
                Ok(())
            } else {
                Err("CPU capabilities do not match run time".into())
            }
        }),
    }
}

pub fn accepts(policy: Policy, w: &Workload, src: &Platform, dst: &Platform) -> bool {
    match policy {
        Policy::Workload => check::compatible(w, dst),
        _ => decide(policy, w, src, dst).is_ok(),
    }
}

/// `cpu_validate_ins_features`: `s & ~d` over the masked capability words must be empty.
fn criu_ins(src: &Platform, dst: &Platform) -> Result<(), String> {
    let m = missing_in(&src.features, &dst.features, ins_mask());
    if m.is_empty() {
        Ok(())
    } else {
        let names: Vec<_> = m.iter().map(|f| f.name).collect();
        Err(format!("CPU instruction capabilities do not match run time ({})", names.join(", ")))
    }
}

/// The `CPU_CAP_FPU` branch of `cpu_validate_features`.
fn criu_fpu(src: &Platform, dst: &Platform) -> Result<(), String> {
    let m = missing_in(&src.features, &dst.features, &bits_of(CRIU_FPU_BITS));
    if !m.is_empty() {
        return Err(format!("FPU feature required by image is not supported on host ({})", m[0].name));
    }
    // compel's xfeatures_mask: CPUID.(0xD,0).EAX limited to user states whose CPUID
    // feature is present; on Linux that is XCR0.
    let extra: Vec<XState> = src.xcr0.iter().copied().filter(|s| !dst.has_xstate(*s)).collect();
    if !extra.is_empty() {
        return Err(format!("CPU xfeatures has unsupported bits ({extra:?})"));
    }
    if src.xsave_size != dst.xsave_size {
        return Err(format!("CPU xsave size mismatch ({}/{})", src.xsave_size, dst.xsave_size));
    }
    if src.xsave_size_max != dst.xsave_size_max {
        return Err(format!("CPU xsave max size mismatch ({}/{})", src.xsave_size_max, dst.xsave_size_max));
    }
    Ok(())
}

/// Pairs one policy accepts, out of the pairs evaluated.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyCount {
    pub policy: Policy,
    pub accepted: usize,
    /// Accepted pairs that ours also accepts.
    pub accepted_and_safe: usize,
    /// Accepted pairs whose destination lacks a required feature or state (would crash
    /// or compute wrong results).
    pub unsafe_pairs: usize,
    /// `accepted_and_safe / ours.accepted`.
    pub recall: f64,
}

/// One workload's evaluation.
#[derive(Debug, Clone, Serialize)]
pub struct EvalRow {
    pub workload: String,
    pub required: Vec<&'static str>,
    /// Sources: platforms that can run the workload.
    pub sources: usize,
    pub destinations: usize,
    /// Ordered source→destination pairs with source ≠ destination.
    pub pairs: usize,
    pub policies: Vec<PolicyCount>,
    /// ours.accepted / criu-cpu.accepted (None when CRIU accepts nothing).
    pub ratio_vs_criu_cpu: Option<f64>,
    /// ours.accepted / criu-default.accepted.
    pub ratio_vs_criu_default: Option<f64>,
    /// ours.accepted / criu-strict.accepted (CRIU `--cpu-cap=cpu`).
    pub ratio_vs_criu_strict: Option<f64>,
    /// Required features on the fewest destinations, rarest first (at most 3, only those
    /// not on every destination): why sources or accepted pairs are few.
    pub rarest: Vec<(&'static str, usize)>,
}

/// Counts, for all ordered pairs (s, d) with s in `sources` able to run `w`, d in
/// `dests`, s ≠ d, the pairs each policy accepts.
pub fn eval(w: &Workload, sources: &[Platform], dests: &[Platform]) -> EvalRow {
    let srcs: Vec<&Platform> = sources.iter().filter(|s| check::compatible(w, s)).collect();
    let ours_ok: Vec<bool> = dests.iter().map(|d| check::compatible(w, d)).collect();
    let mut counts: Vec<PolicyCount> = Policy::ALL
        .iter()
        .map(|&policy| PolicyCount { policy, accepted: 0, accepted_and_safe: 0, unsafe_pairs: 0, recall: 0.0 })
        .collect();
    let mut pairs = 0;
    for s in &srcs {
        for (d, &safe) in dests.iter().zip(&ours_ok) {
            if s.name == d.name {
                continue;
            }
            pairs += 1;
            for c in counts.iter_mut() {
                let ok = if c.policy == Policy::Workload { safe } else { accepts(c.policy, w, s, d) };
                if ok {
                    c.accepted += 1;
                    if safe {
                        c.accepted_and_safe += 1;
                    } else {
                        c.unsafe_pairs += 1;
                    }
                }
            }
        }
    }
    let ours = counts[0].accepted;
    for c in counts.iter_mut() {
        c.recall = if ours == 0 { 0.0 } else { c.accepted_and_safe as f64 / ours as f64 };
    }
    let ratio = |p: Policy| {
        let n = counts.iter().find(|c| c.policy == p).map(|c| c.accepted).unwrap_or(0);
        (n > 0).then(|| ours as f64 / n as f64)
    };
    let mut rarest: Vec<(&'static str, usize)> = w
        .required
        .iter()
        .map(|r| (r.feature.name, dests.iter().filter(|d| d.features.has(r.feature)).count()))
        .filter(|(_, n)| *n < dests.len())
        .collect();
    rarest.sort_by_key(|(name, n)| (*n, *name));
    rarest.truncate(3);
    EvalRow {
        rarest,
        workload: w.name.clone(),
        required: w.required_names(),
        sources: srcs.len(),
        destinations: dests.len(),
        pairs,
        ratio_vs_criu_cpu: ratio(Policy::CriuCpu),
        ratio_vs_criu_default: ratio(Policy::CriuDefault),
        ratio_vs_criu_strict: ratio(Policy::CriuStrict),
        policies: counts,
    }
}

/// Renders eval rows as a text table.
pub fn write_table(rows: &[EvalRow], mut out: impl std::io::Write) -> std::io::Result<()> {
    write!(out, "{:<22} {:>5} {:>7} {:>7}", "workload", "srcs", "pairs", "ours")?;
    for p in &Policy::ALL[1..] {
        write!(out, " {:>20}", format!("{} (recall)", p.name()))?;
    }
    writeln!(out, " {:>9} {:>9} {:>9}", "ours/cpu", "ours/dflt", "ours/strict")?;
    for r in rows {
        write!(out, "{:<22} {:>5} {:>7} {:>7}", truncate(&r.workload, 22), r.sources, r.pairs, r.policies[0].accepted)?;
        for c in &r.policies[1..] {
            let cell = format!("{} ({:.1}%)", c.accepted, 100.0 * c.recall);
            write!(out, " {cell:>20}")?;
        }
        let ours = r.policies[0].accepted;
        let f = |x: Option<f64>| match x {
            Some(v) => format!("{v:.1}x"),
            None if ours > 0 => "inf".into(),
            None => "-".into(),
        };
        writeln!(out, " {:>9} {:>9} {:>9}", f(r.ratio_vs_criu_cpu), f(r.ratio_vs_criu_default), f(r.ratio_vs_criu_strict))?;
    }
    for r in rows.iter().filter(|r| r.sources == 0) {
        let why: Vec<String> = r.rarest.iter().map(|(f, n)| format!("{f} on {n}")).collect();
        writeln!(out, "{}: no source can run it; rarest required features: {}", r.workload, why.join(", "))?;
    }
    let unsafe_: Vec<String> = rows
        .iter()
        .flat_map(|r| r.policies.iter().filter(|c| c.unsafe_pairs > 0).map(move |c| format!("{}: {} {}", r.workload, c.policy.name(), c.unsafe_pairs)))
        .collect();
    if !unsafe_.is_empty() {
        writeln!(out, "unsafe pairs accepted (destination lacks a required feature): {}", unsafe_.join("; "))?;
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn criu_mask_names_are_canonical() {
        assert_eq!(ins_mask().len(), CRIU_INS_MASK.len());
        // CRIU's mask has no FMA bit (X86_FEATURE_FMA is absent from CPUID_1_ECX's list).
        assert!(!ins_mask().has_name("fma"));
    }
}
