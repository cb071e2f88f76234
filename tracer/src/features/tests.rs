use super::*;
use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
use std::collections::{HashMap, HashSet};

const XED_TSV: &str = include_str!("../../data/xed-isa-set-cpuid-bits.tsv");

/// XED bit name → coordinates, from the ISA-set table (only plain `name.leaf.sub.reg.bit` ids).
fn xed_bits() -> HashMap<String, CpuidBit> {
    let mut m = HashMap::new();
    for line in XED_TSV.lines().skip(1) {
        let Some((_, bits)) = line.split_once('\t') else { continue };
        for id in bits.split_whitespace() {
            if let Some((name, bit)) = CpuidBit::parse_xed_id(id) {
                m.insert(name.to_string(), bit);
            }
        }
    }
    m
}

#[test]
fn table_agrees_with_xed_data() {
    let xed = xed_bits();
    assert!(xed.len() > 100, "parsed only {} XED bits", xed.len());
    for f in TABLE {
        if let Some(name) = f.xed {
            let bit = xed.get(name).unwrap_or_else(|| panic!("{}: XED bit {name} not in the data", f.name));
            assert_eq!(Some(*bit), f.cpuid, "{}: CPUID bit differs from XED's {name}", f.name);
        }
    }
    // Every XED bit that a user-mode instruction can need maps to a table entry.
    let privileged_or_other_vendor = [
        "vmx", "smx", "snp", "bhi_ctrl", "pbndkb", "user_msr", "klenabled", "klwide", "avx10_enabled",
    ];
    for (name, bit) in &xed {
        if name.starts_with("via_") || privileged_or_other_vendor.contains(&name.as_str()) {
            continue;
        }
        let f = by_cpuid(*bit).unwrap_or_else(|| panic!("XED bit {name} {bit} has no canonical feature"));
        assert_eq!(f.xed, Some(name.as_str()), "XED bit {name} maps to {} whose xed name differs", f.name);
    }
}

#[test]
fn table_is_one_to_one() {
    let mut names = HashSet::new();
    let mut bits = HashSet::new();
    let mut iced = HashSet::new();
    for f in TABLE {
        assert!(names.insert(f.name), "duplicate name {}", f.name);
        if let Some(b) = f.cpuid {
            assert!(bits.insert(b), "duplicate CPUID bit {b} ({})", f.name);
        }
        for &i in f.iced {
            assert!(iced.insert(i as usize), "iced feature {i:?} mapped twice");
        }
        assert_eq!(f.name, f.name.to_ascii_lowercase());
        assert!(std::ptr::eq(get(f.id()), f));
    }
}

#[test]
fn every_iced_feature_with_a_cpuid_bit_is_mapped() {
    use iced_x86::CpuidFeature as C;
    // iced features with no CPUID bit of their own, or not executable in user mode on
    // current CPUs: these are deliberately unmapped.
    let unmapped = |c: C| {
        let s = format!("{c:?}");
        s.starts_with("INTEL") || s.starts_with("CYRIX") || s.starts_with("PADLOCK") || s.starts_with("CENTAUR")
            || matches!(
                c,
                C::UMOV | C::IA64 | C::CPUID | C::MSR | C::OSS | C::FPU287XL_ONLY | C::FPU387SL_ONLY
                    | C::CL1INVMB | C::INVEPT | C::INVVPID | C::VMX | C::SMX | C::PCOMMIT | C::MOV_TR
                    | C::SMM | C::TDX | C::UDBG | C::KNC | C::RMPQUERY | C::SEV_ES | C::SEV_SNP
                    | C::INVLPGB | C::RDPMC | C::TSE
            )
    };
    for c in C::values() {
        if !unmapped(c) {
            assert!(by_iced(c).is_some(), "iced feature {c:?} has no canonical feature");
        }
    }
}

#[test]
fn nfd_labels_for_common_features() {
    for (name, label) in [("avx2", "AVX2"), ("avx512f", "AVX512F"), ("sha_ni", "SHA"), ("fma", "FMA3"), ("avx512vl", "AVX512VL")] {
        assert_eq!(by_name(name).unwrap().nfd, Nfd::Label(label), "{name}");
    }
    assert_eq!(by_name("bmi2").unwrap().nfd, Nfd::Blacklisted("BMI2"));
}

#[test]
fn aliases_resolve() {
    assert_eq!(by_name("SHA").unwrap().name, "sha_ni");
    assert_eq!(by_name("lzcnt").unwrap().name, "abm");
    assert_eq!(by_name("sse4.1").unwrap().name, "sse4_1");
    assert_eq!(by_name("avx2").unwrap().cpuid, Some(CpuidBit { leaf: 7, subleaf: 0, reg: Reg::Ebx, bit: 5 }));
    assert!(by_name("no_such_feature").is_none());
}

/// Decodes `bytes` as one instruction; returns its Intel disassembly and features.
fn features_of(bytes: &[u8]) -> (String, Vec<(&'static str, Class)>) {
    let mut d = Decoder::with_ip(64, bytes, 0x1000, DecoderOptions::NONE);
    let insn = d.decode();
    assert!(!insn.is_invalid(), "invalid: {bytes:02x?}");
    assert_eq!(insn.len(), bytes.len(), "length of {bytes:02x?}");
    let mut text = String::new();
    IntelFormatter::new().format(&insn, &mut text);
    let mut fs: Vec<_> = classify(&insn).map(|f| (f.feature.name, f.class)).collect();
    fs.sort();
    (text, fs)
}

#[test]
fn instruction_classes() {
    use Class::*;
    let cases: &[(&[u8], &str, &[(&str, Class)])] = &[
        (&[0xc5, 0xf8, 0x77], "vzeroupper", &[("avx", Faults)]),
        (&[0xc5, 0xfd, 0xfe, 0xc1], "vpaddd ymm0,ymm0,ymm1", &[("avx2", Faults)]),
        // EVEX xmm form needs AVX512VL as well as AVX512F.
        (&[0x62, 0xf1, 0x74, 0x08, 0x58, 0xc2], "vaddps xmm0,xmm1,xmm2", &[("avx512f", Faults), ("avx512vl", Faults)]),
        (&[0x62, 0xf1, 0x74, 0x48, 0x58, 0xc2], "vaddps zmm0,zmm1,zmm2", &[("avx512f", Faults)]),
        (&[0xf3, 0x0f, 0x1e, 0xfa], "endbr64", &[("ibt", Hint)]),
        (&[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00], "nop [rax+rax]", &[("nopl", Hint)]),
        (&[0xf3, 0x90], "pause", &[("pause", Hint)]),
        (&[0xf3, 0x48, 0x0f, 0xbd, 0xc1], "lzcnt rax,rcx", &[("abm", Silent)]),
        (&[0xf3, 0x48, 0x0f, 0xbc, 0xc1], "tzcnt rax,rcx", &[("bmi1", Silent)]),
        (&[0xc4, 0xe2, 0x70, 0xf2, 0xc2], "andn eax,ecx,edx", &[("bmi1", Faults)]),
        (&[0x0f, 0x38, 0xcb, 0xca], "sha256rnds2 xmm1,xmm2", &[("sha_ni", Faults)]),
        (&[0x66, 0x0f, 0x38, 0xdc, 0xc1], "aesenc xmm0,xmm1", &[("aes", Faults)]),
        (&[0xf3, 0x48, 0x0f, 0xb8, 0xc1], "popcnt rax,rcx", &[("popcnt", Faults)]),
        (&[0x0f, 0x0d, 0x09], "prefetchw [rcx]", &[("3dnowprefetch", Hint)]),
        (&[0xf3, 0x48, 0x0f, 0x1e, 0xc8], "rdsspq rax", &[("shstk", Hint)]),
    ];
    for (bytes, disasm, want) in cases {
        let (text, got) = features_of(bytes);
        assert_eq!(text, *disasm, "disassembly of {bytes:02x?}");
        let mut want = want.to_vec();
        want.sort();
        assert_eq!(got, want, "features of {disasm}");
    }
}
