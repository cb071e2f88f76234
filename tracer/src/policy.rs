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
    /// Per-source binding ([`eval_per_source`]): which sources a bound trace stood for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_source: Option<Cover>,
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
        per_source: None,
    }
}

/// Features glibc 2.36's x86-64 CPU dispatch reads (IFUNC selectors of libc and libm,
/// ld.so's lazy-binding trampolines). `avx_vnni` is never used, but on Intel its absence
/// sets the Prefer_No_AVX512 preference (sysdeps/x86/cpu-features.c), which picks the EVEX
/// string functions over the AVX-512 (ZMM) ones.
pub const DISPATCH_GLIBC: &[&str] = &[
    "pni", "ssse3", "sse4_1", "sse4_2", "popcnt", "avx", "avx2", "fma", "fma4", "bmi1", "bmi2", "abm", "movbe", "rtm",
    "avx512f", "avx512vl", "avx512bw", "avx512dq", "avx512cd", "xsave", "xsavec", "avx_vnni",
];

/// Bits of OpenSSL 3.0's capability vector (`OPENSSL_ia32cap_P`) its x86-64 code tests,
/// and libgcrypt 1.10's hardware features.
pub const DISPATCH_CRYPTO: &[&str] = &[
    "ssse3", "sse4_1", "movbe", "aes", "pclmulqdq", "avx", "xop", "rdrand", "bmi1", "avx2", "bmi2", "adx", "sha_ni",
    "avx512f", "avx512dq", "avx512ifma", "avx512bw", "avx512vl", "avx512cd", "avx512vbmi", "rdseed", "vaes",
    "vpclmulqdq", "gfni", "fma",
];

/// A trace taken with some of the tracing host's features hidden from the process's CPU
/// dispatch (glibc tunables, `OPENSSL_ia32cap`, libgcrypt's hwf.deny).
pub struct Bound {
    pub workload: Workload,
    pub hidden: Vec<&'static Feature>,
    /// The vendor the dispatch was made to see (glibc's per-vendor preferences, set with
    /// tunables); `None`: the tracing host's.
    pub vendor: Option<crate::catalog::Vendor>,
}

/// Which sources a per-source evaluation covered.
#[derive(Debug, Clone, Serialize)]
pub struct Cover {
    /// Bound traces given.
    pub traces: usize,
    /// Sources whose dispatch signature one trace has (counted when they can run it).
    pub covered: usize,
    /// Sources no trace stands for: not counted.
    pub uncovered: usize,
    /// The uncovered signatures: vendor and the dispatch features the tracing host has but
    /// they lack, with how many sources have each.
    pub missing: Vec<(String, usize)>,
    /// Traces not used because they use a feature they were bound without: the masking did
    /// not take, or the tracer cannot tell that the dispatch avoids it.
    pub refused: Vec<String>,
}

/// What a process's CPU dispatch can see of a platform: its vendor (glibc's preferences,
/// OpenSSL's Intel bit) and which dispatch features it has.
fn signature(vendor: crate::catalog::Vendor, has: impl Fn(&Feature) -> bool, dispatch: &[&'static Feature]) -> (crate::catalog::Vendor, Vec<&'static str>) {
    (vendor, dispatch.iter().filter(|f| has(f)).map(|f| f.name).collect())
}

/// Per-source binding: a process started on source S binds its libraries to S's CPU. Each
/// bound trace was taken on `traced_on` with `hidden` invisible to the dispatch, so it
/// stands for exactly the sources whose signature (vendor, dispatch features present) is
/// the tracing host's minus `hidden`; each source is evaluated with the trace standing for
/// it, and sources no trace stands for are left out (counted in [`Cover`]). A trace that
/// uses a feature it was bound without is refused: the masking did not take.
pub fn eval_per_source(bound: &[Bound], traced_on: &Platform, dispatch: &[&'static Feature], sources: &[Platform], dests: &[Platform]) -> Result<EvalRow, String> {
    let mut by_sig = Vec::new();
    let mut refused = Vec::new();
    for b in bound {
        let used: Vec<&str> =
            b.workload.required.iter().filter(|r| b.hidden.iter().any(|h| std::ptr::eq(*h, r.feature))).map(|r| r.feature.name).collect();
        if !used.is_empty() {
            let hidden: Vec<&str> = b.hidden.iter().map(|f| f.name).collect();
            let vendor = b.vendor.map(|v| format!(" as {v:?}").to_lowercase()).unwrap_or_default();
            refused.push(format!("trace bound{vendor} without {} refused: it uses {}", hidden.join(","), used.join(",")));
            continue;
        }
        let sig = signature(b.vendor.unwrap_or(traced_on.vendor), |f| traced_on.features.has(f) && !b.hidden.iter().any(|h| std::ptr::eq(*h, f)), dispatch);
        if by_sig.iter().any(|(s, _)| *s == sig) {
            return Err(format!("{}: two traces bound for the same signature", b.workload.name));
        }
        by_sig.push((sig, &b.workload));
    }
    let mut per_trace: Vec<Vec<Platform>> = vec![Vec::new(); by_sig.len()];
    let mut missing: Vec<(String, usize)> = Vec::new();
    let mut uncovered = 0;
    for s in sources {
        let sig = signature(s.vendor, |f| s.features.has(f), dispatch);
        match by_sig.iter().position(|(b, _)| *b == sig) {
            Some(i) => per_trace[i].push(s.clone()),
            None => {
                uncovered += 1;
                let list = |v: Vec<&str>| if v.is_empty() { "-".to_string() } else { v.join(",") };
                let lacks = dispatch.iter().filter(|f| traced_on.features.has(f) && !s.features.has(f)).map(|f| f.name).collect();
                let extra: Vec<&str> = dispatch.iter().filter(|f| !traced_on.features.has(f) && s.features.has(f)).map(|f| f.name).collect();
                let mut key = format!("{:?} without {}", s.vendor, list(lacks)).to_lowercase();
                if !extra.is_empty() {
                    key.push_str(&format!(" with {}", list(extra)));
                }
                match missing.iter_mut().find(|(k, _)| *k == key) {
                    Some(m) => m.1 += 1,
                    None => missing.push((key, 1)),
                }
            }
        }
    }
    missing.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let rows: Vec<EvalRow> = by_sig.iter().zip(&per_trace).map(|((_, w), srcs)| eval(w, srcs, dests)).collect();
    let name = bound.first().map(|b| format!("{} per-source", b.workload.name)).unwrap_or_default();
    let mut row = rows.first().cloned().ok_or_else(|| format!("no usable bound trace ({})", refused.join("; ")))?;
    for r in &rows[1..] {
        row.sources += r.sources;
        row.pairs += r.pairs;
        for (c, o) in row.policies.iter_mut().zip(&r.policies) {
            c.accepted += o.accepted;
            c.accepted_and_safe += o.accepted_and_safe;
            c.unsafe_pairs += o.unsafe_pairs;
        }
        for f in &r.required {
            if !row.required.contains(f) {
                row.required.push(f);
            }
        }
    }
    let ours = row.policies[0].accepted;
    for c in row.policies.iter_mut() {
        c.recall = if ours == 0 { 0.0 } else { c.accepted_and_safe as f64 / ours as f64 };
    }
    let ratio = |p: Policy| {
        let n = row.policies.iter().find(|c| c.policy == p).map(|c| c.accepted).unwrap_or(0);
        (n > 0).then(|| ours as f64 / n as f64)
    };
    row.ratio_vs_criu_cpu = ratio(Policy::CriuCpu);
    row.ratio_vs_criu_default = ratio(Policy::CriuDefault);
    row.ratio_vs_criu_strict = ratio(Policy::CriuStrict);
    row.workload = name;
    row.rarest.clear();
    row.per_source = Some(Cover { traces: bound.len() - refused.len(), covered: sources.len() - uncovered, uncovered, missing, refused });
    Ok(row)
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
    for r in rows {
        if let Some(c) = &r.per_source {
            let m: Vec<String> = c.missing.iter().map(|(k, n)| format!("{n} {k}")).collect();
            writeln!(
                out,
                "{}: {} bound traces stand for {} sources; {} sources have no trace bound for them, not counted{}{}",
                r.workload,
                c.traces,
                c.covered,
                c.uncovered,
                if m.is_empty() { "" } else { ": " },
                m.join("; ")
            )?;
            for x in &c.refused {
                writeln!(out, "{}: {x}", r.workload)?;
            }
        }
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
