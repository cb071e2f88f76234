//! This host's CPU features: CPUID bits the CPU reports, limited to the register states
//! the OS enabled in XCR0 (an AVX-512 CPU whose kernel leaves ZMM state off cannot run
//! AVX-512 code), cross-checked against /proc/cpuinfo.

use crate::catalog::{self, FeatureBits, Platform, Vendor};
use crate::features::{CpuidBit, Feature, Nfd, Reg, XState, TABLE};
use crate::report::{FeatureEntry, FeatureSet, SCHEMA};
use crate::sys::cpuid::{CpuidSource, Regs};
use serde_json::json;

/// The host as read from CPUID/XCR0.
#[derive(Debug, Clone)]
pub struct Host {
    pub vendor_id: String,
    pub brand: String,
    pub family: u32,
    pub model: u32,
    pub stepping: u32,
    /// None when the OS has not enabled XSAVE.
    pub xcr0: Option<u64>,
    pub xsave_size: u32,
    pub xsave_size_max: u32,
    /// Usable features (CPUID bit set, XCR0 states enabled).
    pub features: FeatureBits,
    /// Features CPUID reports but whose register state the OS has not enabled.
    pub state_disabled: Vec<(&'static Feature, XState)>,
    pub warnings: Vec<String>,
}

fn bit_set(src: &dyn CpuidSource, b: CpuidBit, max_basic: u32, max_ext: u32, max_7: u32) -> bool {
    let ok = if b.leaf >= 0x8000_0000 { b.leaf <= max_ext } else { b.leaf <= max_basic };
    if !ok || (b.leaf == 7 && b.subleaf > max_7) {
        return false;
    }
    let r: Regs = src.cpuid(b.leaf, b.subleaf);
    let v = match b.reg {
        Reg::Eax => r[0],
        Reg::Ebx => r[1],
        Reg::Ecx => r[2],
        Reg::Edx => r[3],
    };
    v & (1 << b.bit) != 0
}

/// Reads the host through `src` (the CPU itself: [`crate::sys::cpuid::NativeCpu`]).
pub fn detect(src: &dyn CpuidSource) -> Host {
    let r0 = src.cpuid(0, 0);
    let max_basic = r0[0];
    let vendor_id: String =
        [r0[1], r0[3], r0[2]].iter().flat_map(|w| w.to_le_bytes()).map(char::from).collect();
    let max_ext = src.cpuid(0x8000_0000, 0)[0];
    let max_7 = if max_basic >= 7 { src.cpuid(7, 0)[0] } else { 0 };
    let brand = if max_ext >= 0x8000_0004 {
        let bytes: Vec<u8> = (0x8000_0002..=0x8000_0004u32)
            .flat_map(|l| src.cpuid(l, 0))
            .flat_map(|w| w.to_le_bytes())
            .collect();
        String::from_utf8_lossy(&bytes).trim_matches(char::from(0)).trim().to_string()
    } else {
        String::new()
    };
    let eax1 = src.cpuid(1, 0)[0];
    let base_family = (eax1 >> 8) & 0xf;
    let family = if base_family == 0xf { base_family + ((eax1 >> 20) & 0xff) } else { base_family };
    let mut model = (eax1 >> 4) & 0xf;
    if base_family == 6 || base_family == 0xf {
        model |= ((eax1 >> 16) & 0xf) << 4;
    }
    let stepping = eax1 & 0xf;

    let xcr0 = src.xcr0();
    let enabled = |s: XState| match xcr0 {
        Some(x) => x & (1 << s.bit()) != 0,
        // Without OSXSAVE the OS still saves x87/SSE state with FXSAVE.
        None => matches!(s, XState::X87 | XState::Sse),
    };
    let (xsave_size, xsave_size_max) = if max_basic >= 0xd && xcr0.is_some() {
        let d = src.cpuid(0xd, 0);
        (d[1], d[2])
    } else {
        (512, 512)
    };

    let mut features = FeatureBits::default();
    let mut state_disabled = Vec::new();
    for f in TABLE {
        let present = match f.cpuid {
            Some(b) => bit_set(src, b, max_basic, max_ext, max_7),
            None => f.baseline,
        };
        if !present {
            continue;
        }
        match f.xcr0.iter().find(|s| !enabled(**s)) {
            Some(&s) => state_disabled.push((f, s)),
            None => features.insert(f.id()),
        }
    }
    let mut warnings: Vec<String> = state_disabled
        .iter()
        .map(|(f, s)| format!("{}: CPUID reports it but the OS has not enabled XCR0 state {}: not available", f.name, s.as_str()))
        .collect();
    if xcr0.is_none() {
        warnings.push("OSXSAVE is clear: the OS has not enabled XSAVE; AVX and later are not available".into());
    }
    Host { vendor_id, brand, family, model, stepping, xcr0, xsave_size, xsave_size_max, features, state_disabled, warnings }
}

/// Flags the kernel never prints in /proc/cpuinfo (hidden or unsupported by Linux), so
/// their absence there is no disagreement.
const KERNEL_SILENT: &[&str] = &["osxsave", "mpx", "keylocker", "uintr", "nopl", "pause", "hle", "rtm"];

/// Compares with /proc/cpuinfo's first `flags` line; returns one warning per disagreement.
pub fn cross_check(host: &Host, cpuinfo: &str) -> Vec<String> {
    let Some(flags) = cpuinfo.lines().find(|l| l.starts_with("flags")).and_then(|l| l.split_once(':')) else {
        return vec!["/proc/cpuinfo has no flags line: cross-check skipped".into()];
    };
    let flags: std::collections::HashSet<&str> = flags.1.split_whitespace().collect();
    let mut out = Vec::new();
    for f in TABLE.iter().filter(|f| f.cpuid.is_some()) {
        let ours = host.features.has(f) || host.state_disabled.iter().any(|(d, _)| std::ptr::eq(*d, f));
        let kernel = flags.contains(f.name);
        if ours && !kernel && !KERNEL_SILENT.contains(&f.name) {
            out.push(format!("{}: CPUID reports it, /proc/cpuinfo does not (kernel disabled or hides it)", f.name));
        } else if !ours && kernel {
            out.push(format!("{}: /proc/cpuinfo lists it, CPUID does not", f.name));
        }
    }
    out
}

impl Host {
    pub fn vendor(&self) -> Vendor {
        catalog::vendor_of(&self.vendor_id)
    }

    pub fn platform(&self, name: &str) -> Platform {
        Platform {
            name: name.into(),
            cpu_model: self.brand.clone(),
            microarchitecture: String::new(),
            vendor: self.vendor(),
            features: self.features,
            xcr0: self.xcr0.map(XState::from_xcr0).unwrap_or_else(|| vec![XState::X87, XState::Sse]),
            xsave_size: self.xsave_size,
            xsave_size_max: self.xsave_size_max,
        }
    }

    /// The host feature set (`kind: "host"`).
    pub fn feature_set(&self, hostname: &str) -> FeatureSet {
        FeatureSet {
            schema: SCHEMA.into(),
            kind: "host".into(),
            arch: "x86_64".into(),
            subject: json!({
                "cpu_model": self.brand,
                "hostname": hostname,
                "vendor": self.vendor_id,
                "family": self.family,
                "model": self.model,
                "stepping": self.stepping,
                "xcr0": self.xcr0.map(|x| format!("{x:#x}")),
                "xsave_size": self.xsave_size,
                "xsave_size_max": self.xsave_size_max,
            }),
            features: self.features.iter().map(|f| FeatureEntry::canonical(f, f.class)).collect(),
            warnings: self.warnings.clone(),
            stats: serde_json::Value::Null,
        }
    }
}

/// NFD (`cpu-cpuid`) label prefix.
pub const NFD_PREFIX: &str = "feature.node.kubernetes.io/cpu-cpuid.";

/// The `cpu-cpuid` flags nfd-worker (klauspost/cpuid) would report for a platform,
/// before its attributeBlacklist: `(flag, hidden by the default blacklist)`.
/// Mirrors klauspost/cpuid's gating: AMX, WRMSRNS and MSRLIST only with AVX-512 state,
/// BMI2 only with BMI1; x86-64 levels X86_64_V1..V4 from the psABI feature lists.
pub fn nfd_flags(p: &Platform) -> Vec<(String, bool)> {
    let has = |n: &str| p.features.has_name(n);
    let avx512_state = [XState::Opmask, XState::ZmmHi256, XState::Hi16Zmm].iter().all(|s| p.has_xstate(*s));
    let mut out: Vec<(String, bool)> = Vec::new();
    for f in TABLE.iter().filter(|f| p.features.has(f)) {
        let gated = match f.name {
            "amx_bf16" | "amx_tile" | "amx_int8" | "amx_fp16" | "wrmsrns" | "msrlist" => !avx512_state,
            "bmi2" => !has("bmi1"),
            _ => false,
        };
        if gated {
            continue;
        }
        match f.nfd {
            Nfd::Label(l) => out.push((l.into(), false)),
            Nfd::Blacklisted(l) => out.push((l.into(), true)),
            Nfd::None => {}
        }
    }
    // klauspost sets POPCNT together with LZCNT.
    if has("abm") && !out.iter().any(|(l, _)| l == "POPCNT") {
        out.push(("POPCNT".into(), true));
    }
    let v1 = ["cmov", "cx8", "fpu", "fxsr", "mmx", "sse", "sse2", "syscall"];
    let v2 = ["cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"];
    let v3 = ["avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "osxsave"];
    let v4 = ["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"];
    let mut ok = true;
    for (i, lvl) in [&v1[..], &v2, &v3, &v4].iter().enumerate() {
        ok = ok && lvl.iter().all(|n| has(n));
        if ok {
            out.push((format!("X86_64_V{}", i + 1), false));
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A recorded CPU: CPUID leaves and an XCR0 value.
    struct Recorded {
        leaves: HashMap<(u32, u32), Regs>,
        xcr0: Option<u64>,
    }

    impl CpuidSource for Recorded {
        fn cpuid(&self, leaf: u32, subleaf: u32) -> Regs {
            self.leaves.get(&(leaf, subleaf)).copied().unwrap_or_default()
        }
        fn xcr0(&self) -> Option<u64> {
            self.xcr0
        }
    }

    /// A Skylake-SP-like CPU: AVX2, BMI2, AVX-512F/VL, with the given XCR0.
    fn skylake(xcr0: u64) -> Recorded {
        let vendor = *b"GenuineIntel";
        let w = |i: usize| u32::from_le_bytes(vendor[i..i + 4].try_into().unwrap());
        let mut leaves = HashMap::new();
        leaves.insert((0, 0), [0xd, w(0), w(8), w(4)]);
        // family 6 model 0x55 stepping 4; ECX: SSE3, SSSE3, FMA, SSE4.1/4.2, POPCNT, XSAVE, OSXSAVE, AVX
        // (+ CX16, MOVBE, F16C); EDX: FPU, TSC, CX8, SEP, CMOV, CLFLUSH, MMX, FXSR, SSE, SSE2.
        let ecx1 = 1 | 1 << 9 | 1 << 12 | 1 << 13 | 1 << 19 | 1 << 20 | 1 << 22 | 1 << 23 | 1 << 26 | 1 << 27 | 1 << 28 | 1 << 29;
        let edx1 = 1 | 1 << 4 | 1 << 8 | 1 << 11 | 1 << 15 | 1 << 19 | 1 << 23 | 1 << 24 | 1 << 25 | 1 << 26;
        leaves.insert((1, 0), [0x0005_0654, 0, ecx1, edx1]);
        leaves.insert((7, 0), [0, 1 << 3 | 1 << 5 | 1 << 8 | 1 << 16 | 1 << 31, 0, 0]);
        leaves.insert((0xd, 0), [0x2e7, 2696, 2696, 0]);
        leaves.insert((0x8000_0000, 0), [0x8000_0001, 0, 0, 0]);
        leaves.insert((0x8000_0001, 0), [0, 0, 1 | 1 << 5, 1 << 11 | 1 << 29]);
        Recorded { leaves, xcr0: Some(xcr0) }
    }

    #[test]
    fn avx512_with_zmm_state_off_is_not_available() {
        let h = detect(&skylake(0x7));
        assert!(h.features.has_name("avx2") && h.features.has_name("bmi2"));
        assert!(!h.features.has_name("avx512f") && !h.features.has_name("avx512vl"));
        assert!(h.state_disabled.iter().any(|(f, s)| f.name == "avx512f" && *s == XState::Opmask));
        assert!(h.warnings.iter().any(|w| w.starts_with("avx512f: CPUID reports it but the OS has not enabled")));
        assert_eq!((h.vendor_id.as_str(), h.family, h.model, h.stepping), ("GenuineIntel", 6, 0x55, 4));

        let on = detect(&skylake(0xe7));
        assert!(on.features.has_name("avx512f") && on.state_disabled.is_empty());
    }

    #[test]
    fn avx_needs_ymm_state_and_osxsave() {
        let mut cpu = skylake(0x3);
        let h = detect(&cpu);
        assert!(!h.features.has_name("avx") && !h.features.has_name("avx2") && !h.features.has_name("fma"));
        assert!(h.features.has_name("sse4_2") && h.features.has_name("bmi2"));
        cpu.xcr0 = None;
        let h = detect(&cpu);
        assert!(!h.features.has_name("avx"));
        assert!(h.warnings.iter().any(|w| w.contains("OSXSAVE")));
    }

    #[test]
    fn cross_check_reports_disagreements() {
        let h = detect(&skylake(0xe7));
        let cpuinfo = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 bmi1 bmi2 fma sse4_1 sse4_2 ssse3 pni popcnt xsave avx512f avx512vl abm lm syscall cmov cx8 tsc mmx fxsr sep sha_ni\n";
        let w = cross_check(&h, cpuinfo);
        assert!(w.iter().any(|w| w.starts_with("sha_ni: /proc/cpuinfo lists it")), "{w:?}");
        assert!(!w.iter().any(|w| w.starts_with("osxsave")), "the kernel never prints osxsave: {w:?}");
    }

    #[test]
    fn nfd_flags_follow_klauspost_gating() {
        let p = detect(&skylake(0xe7)).platform("skl");
        let flags = nfd_flags(&p);
        let has = |l: &str| flags.iter().any(|(f, _)| f == l);
        for l in ["AVX2", "AVX512F", "AVX512VL", "FMA3", "X86_64_V3", "X86_64_V2"] {
            assert!(has(l), "{l}: {flags:?}");
        }
        assert!(!has("X86_64_V4"), "no AVX512BW/CD/DQ in this CPU");
        assert!(flags.contains(&("BMI2".to_string(), true)), "BMI2 is blacklisted by default");
    }
}
