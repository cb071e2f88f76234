//! The canonical feature table. Checked against XED's ISA-set → CPUID-bit data in tests.

use super::{Class, CpuidBit, Feature, Nfd, Reg, XState};
use iced_x86::CpuidFeature as I;
use std::sync::OnceLock;

use Class::{Faults as F, Hint as H, Silent as S};
use Reg::{Eax, Ebx, Ecx, Edx};

const SSE: &[XState] = &[XState::Sse];
const AVX: &[XState] = &[XState::Sse, XState::Avx];
const AVX512: &[XState] = &[XState::Sse, XState::Avx, XState::Opmask, XState::ZmmHi256, XState::Hi16Zmm];
const AMX: &[XState] = &[XState::Tilecfg, XState::Tiledata];
const NONE: &[XState] = &[];

const fn bit(leaf: u32, subleaf: u32, reg: Reg, bit: u8) -> CpuidBit {
    CpuidBit { leaf, subleaf, reg, bit }
}

macro_rules! feat {
    ($name:literal, ($l:expr, $s:expr, $r:ident, $b:expr), $x:expr, $c:ident, [$($i:ident),*], $xed:expr, $nfd:expr, $base:expr) => {
        Feature {
            name: $name,
            cpuid: Some(bit($l, $s, $r, $b)),
            xcr0: $x,
            class: $c,
            iced: &[$(I::$i),*],
            xed: $xed,
            nfd: $nfd,
            baseline: $base,
        }
    };
    // A feature with no CPUID bit (every x86-64 CPU executes it, or executes it as a no-op).
    ($name:literal, nobit, $c:ident, [$($i:ident),*]) => {
        Feature {
            name: $name,
            cpuid: None,
            xcr0: NONE,
            class: $c,
            iced: &[$(I::$i),*],
            xed: None,
            nfd: Nfd::None,
            baseline: true,
        }
    };
}

use Nfd::{Blacklisted as B, Label as L, None as N};

/// Every canonical feature. Order is stable (ids index it) but carries no meaning.
#[rustfmt::skip]
pub static TABLE: &[Feature] = &[
    // x86-64 baseline (every x86-64 CPU): reported, never limits a destination.
    feat!("fpu",        (1, 0, Edx, 0),  NONE, F, [FPU, FPU287, FPU387], Some("fpu"), L("X87"), true),
    feat!("tsc",        (1, 0, Edx, 4),  NONE, F, [TSC], None, N, true),
    feat!("cx8",        (1, 0, Edx, 8),  NONE, F, [CX8], None, L("CMPXCHG8"), true),
    feat!("sep",        (1, 0, Edx, 11), NONE, F, [SEP], Some("sep"), N, true),
    feat!("cmov",       (1, 0, Edx, 15), NONE, F, [CMOV], Some("cmov"), B("CMOV"), true),
    feat!("clflush",    (1, 0, Edx, 19), NONE, F, [CLFSH], Some("clflush"), N, true),
    feat!("mmx",        (1, 0, Edx, 23), NONE, F, [MMX], Some("mmx"), B("MMX"), true),
    feat!("fxsr",       (1, 0, Edx, 24), NONE, F, [FXSR], Some("fxsave"), L("FXSR"), true),
    feat!("sse",        (1, 0, Edx, 25), SSE,  F, [SSE], Some("sse"), B("SSE"), true),
    feat!("sse2",       (1, 0, Edx, 26), SSE,  F, [SSE2], Some("sse2"), B("SSE2"), true),
    feat!("syscall",    (0x8000_0001, 0, Edx, 11), NONE, F, [SYSCALL], None, L("SYSCALL"), true),
    feat!("nopl",       nobit, H, [MULTIBYTENOP]),
    feat!("pause",      nobit, H, [PAUSE]),
    feat!("lm",         (0x8000_0001, 0, Edx, 29), NONE, F, [X64], Some("intel64"), N, true),
    // SSE family
    feat!("pni",        (1, 0, Ecx, 0),  SSE,  F, [SSE3], Some("sse3"), B("SSE3"), false),
    feat!("pclmulqdq",  (1, 0, Ecx, 1),  SSE,  F, [PCLMULQDQ], Some("pclmulqdq"), B("CLMUL"), false),
    feat!("monitor",    (1, 0, Ecx, 3),  NONE, F, [MONITOR], Some("monitor"), N, false),
    feat!("ssse3",      (1, 0, Ecx, 9),  SSE,  F, [SSSE3], Some("ssse3"), B("SSSE3"), false),
    feat!("fma",        (1, 0, Ecx, 12), AVX,  F, [FMA], Some("fma"), L("FMA3"), false),
    feat!("cx16",       (1, 0, Ecx, 13), NONE, F, [CMPXCHG16B], Some("cmpxchg16b"), B("CX16"), false),
    feat!("sse4_1",     (1, 0, Ecx, 19), SSE,  F, [SSE4_1], Some("sse4"), B("SSE4"), false),
    feat!("sse4_2",     (1, 0, Ecx, 20), SSE,  F, [SSE4_2], Some("sse42"), B("SSE42"), false),
    feat!("movbe",      (1, 0, Ecx, 22), NONE, F, [MOVBE], Some("movebe"), L("MOVBE"), false),
    feat!("popcnt",     (1, 0, Ecx, 23), NONE, F, [POPCNT], Some("popcnt"), B("POPCNT"), false),
    feat!("aes",        (1, 0, Ecx, 25), SSE,  F, [AES], Some("aes"), L("AESNI"), false),
    feat!("xsave",      (1, 0, Ecx, 26), NONE, F, [XSAVE], Some("xsave"), L("XSAVE"), false),
    feat!("osxsave",    (1, 0, Ecx, 27), NONE, F, [], Some("osxsave"), L("OSXSAVE"), false),
    feat!("avx",        (1, 0, Ecx, 28), AVX,  F, [AVX], Some("avx"), L("AVX"), false),
    feat!("f16c",       (1, 0, Ecx, 29), AVX,  F, [F16C], Some("f16c"), B("F16C"), false),
    feat!("rdrand",     (1, 0, Ecx, 30), NONE, F, [RDRAND], Some("rdrand"), B("RDRAND"), false),
    // leaf 7.0 EBX
    feat!("fsgsbase",   (7, 0, Ebx, 0),  NONE, F, [FSGSBASE], Some("rdwrfsgs"), N, false),
    feat!("sgx",        (7, 0, Ebx, 2),  NONE, F, [SGX1], Some("sgx"), B("SGX"), false),
    feat!("bmi1",       (7, 0, Ebx, 3),  NONE, F, [BMI1], Some("bmi1"), B("BMI1"), false),
    feat!("hle",        (7, 0, Ebx, 4),  NONE, H, [HLE], None, L("HLE"), false),
    feat!("avx2",       (7, 0, Ebx, 5),  AVX,  F, [AVX2], Some("avx2"), L("AVX2"), false),
    feat!("bmi2",       (7, 0, Ebx, 8),  NONE, F, [BMI2], Some("bmi2"), B("BMI2"), false),
    feat!("invpcid",    (7, 0, Ebx, 10), NONE, F, [INVPCID], Some("invpcid"), N, false),
    feat!("rtm",        (7, 0, Ebx, 11), NONE, F, [RTM, HLE_or_RTM], Some("rtm"), L("RTM"), false),
    feat!("mpx",        (7, 0, Ebx, 14), NONE, H, [MPX], Some("mpx"), L("MPX"), false),
    feat!("avx512f",    (7, 0, Ebx, 16), AVX512, F, [AVX512F], Some("avx512f"), L("AVX512F"), false),
    feat!("avx512dq",   (7, 0, Ebx, 17), AVX512, F, [AVX512DQ], Some("avx512dq"), L("AVX512DQ"), false),
    feat!("rdseed",     (7, 0, Ebx, 18), NONE, F, [RDSEED], Some("rdseed"), B("RDSEED"), false),
    feat!("adx",        (7, 0, Ebx, 19), NONE, F, [ADX], Some("adoxadcx"), L("ADX"), false),
    feat!("smap",       (7, 0, Ebx, 20), NONE, F, [SMAP], Some("smap"), N, false),
    feat!("avx512ifma", (7, 0, Ebx, 21), AVX512, F, [AVX512_IFMA], Some("avx512ifma"), L("AVX512IFMA"), false),
    feat!("clflushopt", (7, 0, Ebx, 23), NONE, F, [CLFLUSHOPT], Some("clflushopt"), N, false),
    feat!("clwb",       (7, 0, Ebx, 24), NONE, F, [CLWB], Some("clwb"), N, false),
    feat!("intel_pt",   (7, 0, Ebx, 25), NONE, F, [], Some("intelpt"), N, false),
    feat!("avx512pf",   (7, 0, Ebx, 26), AVX512, F, [AVX512PF], Some("avx512pf"), L("AVX512PF"), false),
    feat!("avx512er",   (7, 0, Ebx, 27), AVX512, F, [AVX512ER], Some("avx512er"), L("AVX512ER"), false),
    feat!("avx512cd",   (7, 0, Ebx, 28), AVX512, F, [AVX512CD], Some("avx512cd"), L("AVX512CD"), false),
    feat!("sha_ni",     (7, 0, Ebx, 29), SSE,  F, [SHA], Some("sha"), L("SHA"), false),
    feat!("avx512bw",   (7, 0, Ebx, 30), AVX512, F, [AVX512BW], Some("avx512bw"), L("AVX512BW"), false),
    feat!("avx512vl",   (7, 0, Ebx, 31), AVX512, F, [AVX512VL], Some("avx512vl"), L("AVX512VL"), false),
    // leaf 7.0 ECX
    feat!("prefetchwt1",(7, 0, Ecx, 0),  NONE, H, [PREFETCHWT1], Some("prefetchwt1"), N, false),
    feat!("avx512vbmi", (7, 0, Ecx, 1),  AVX512, F, [AVX512_VBMI], Some("avx512vbmi"), L("AVX512VBMI"), false),
    feat!("pku",        (7, 0, Ecx, 3),  &[XState::Pkru], F, [PKU], Some("pku"), N, false),
    feat!("ospke",      (7, 0, Ecx, 4),  NONE, F, [], Some("ospku"), N, false),
    feat!("waitpkg",    (7, 0, Ecx, 5),  NONE, F, [WAITPKG], Some("waitpkg"), L("WAITPKG"), false),
    feat!("avx512_vbmi2",(7, 0, Ecx, 6), AVX512, F, [AVX512_VBMI2], Some("avx512_vbmi2"), L("AVX512VBMI2"), false),
    feat!("shstk",      (7, 0, Ecx, 7),  NONE, F, [CET_SS], Some("cet"), L("CETSS"), false),
    feat!("gfni",       (7, 0, Ecx, 8),  SSE,  F, [GFNI], Some("gfni"), L("GFNI"), false),
    feat!("vaes",       (7, 0, Ecx, 9),  AVX,  F, [VAES], Some("vaes"), L("VAES"), false),
    feat!("vpclmulqdq", (7, 0, Ecx, 10), AVX,  F, [VPCLMULQDQ], Some("vpclmulqdq"), L("VPCLMULQDQ"), false),
    feat!("avx512_vnni",(7, 0, Ecx, 11), AVX512, F, [AVX512_VNNI], Some("avx512_vnni"), L("AVX512VNNI"), false),
    feat!("avx512_bitalg",(7, 0, Ecx, 12), AVX512, F, [AVX512_BITALG], Some("avx512_bitalg"), L("AVX512BITALG"), false),
    feat!("avx512_vpopcntdq",(7, 0, Ecx, 14), AVX512, F, [AVX512_VPOPCNTDQ], Some("avx512_vpopcntdq"), L("AVX512VPOPCNTDQ"), false),
    feat!("rdpid",      (7, 0, Ecx, 22), NONE, F, [RDPID], Some("rdp"), N, false),
    feat!("keylocker",  (7, 0, Ecx, 23), SSE,  F, [KL, AESKLE, WIDE_KL], Some("klsupported"), L("KEYLOCKER"), false),
    feat!("cldemote",   (7, 0, Ecx, 25), NONE, H, [CLDEMOTE], Some("cldemote"), L("CLDEMOTE"), false),
    feat!("movdiri",    (7, 0, Ecx, 27), NONE, F, [MOVDIRI], Some("movdiri"), L("MOVDIRI"), false),
    feat!("movdir64b",  (7, 0, Ecx, 28), NONE, F, [MOVDIR64B], Some("movdir64b"), L("MOVDIR64B"), false),
    feat!("enqcmd",     (7, 0, Ecx, 29), NONE, F, [ENQCMD], Some("enqcmd"), L("ENQCMD"), false),
    // leaf 7.0 EDX
    feat!("avx512_4vnniw",(7, 0, Edx, 2), AVX512, F, [AVX512_4VNNIW], Some("avx512_4vnniw"), N, false),
    feat!("avx512_4fmaps",(7, 0, Edx, 3), AVX512, F, [AVX512_4FMAPS], Some("avx512_4fmaps"), N, false),
    feat!("uintr",      (7, 0, Edx, 5),  NONE, F, [UINTR], None, N, false),
    feat!("avx512_vp2intersect",(7, 0, Edx, 8), AVX512, F, [AVX512_VP2INTERSECT], Some("avx512_vp2intersect"), L("AVX512VP2INTERSECT"), false),
    feat!("serialize",  (7, 0, Edx, 14), NONE, F, [SERIALIZE], None, L("SERIALIZE"), false),
    feat!("tsxldtrk",   (7, 0, Edx, 16), NONE, F, [TSXLDTRK], Some("tsx_ldtrk"), L("TSXLDTRK"), false),
    feat!("pconfig",    (7, 0, Edx, 18), NONE, F, [PCONFIG], None, L("PCONFIG"), false),
    feat!("ibt",        (7, 0, Edx, 20), NONE, H, [CET_IBT], None, L("CETIBT"), false),
    feat!("amx_bf16",   (7, 0, Edx, 22), AMX,  F, [AMX_BF16], Some("amx_bf16"), L("AMXBF16"), false),
    feat!("avx512_fp16",(7, 0, Edx, 23), AVX512, F, [AVX512_FP16], Some("avx512_fp16"), L("AVX512FP16"), false),
    feat!("amx_tile",   (7, 0, Edx, 24), AMX,  F, [AMX_TILE], Some("amx_tiles"), L("AMXTILE"), false),
    feat!("amx_int8",   (7, 0, Edx, 25), AMX,  F, [AMX_INT8], Some("amx_int8"), L("AMXINT8"), false),
    // leaf 7.1 EAX / EDX
    feat!("sha512",     (7, 1, Eax, 0),  AVX,  F, [SHA512], None, N, false),
    feat!("sm3",        (7, 1, Eax, 1),  AVX,  F, [SM3], Some("sm3"), L("SM3_X86"), false),
    feat!("sm4",        (7, 1, Eax, 2),  AVX,  F, [SM4], Some("sm4"), L("SM4_X86"), false),
    feat!("rao_int",    (7, 1, Eax, 3),  NONE, F, [RAO_INT], Some("rao_int"), N, false),
    feat!("avx_vnni",   (7, 1, Eax, 4),  AVX,  F, [AVX_VNNI], Some("avx_vnni"), L("AVXVNNI"), false),
    feat!("avx512_bf16",(7, 1, Eax, 5),  AVX512, F, [AVX512_BF16], Some("bf16"), L("AVX512BF16"), false),
    feat!("cmpccxadd",  (7, 1, Eax, 7),  NONE, F, [CMPCCXADD], Some("cmpccxadd"), L("CMPCCXADD"), false),
    feat!("fred",       (7, 1, Eax, 17), NONE, F, [FRED], Some("fred"), N, false),
    feat!("lkgs",       (7, 1, Eax, 18), NONE, F, [LKGS], Some("lkgs"), N, false),
    feat!("wrmsrns",    (7, 1, Eax, 19), NONE, F, [WRMSRNS], Some("wrmsrns"), L("WRMSRNS"), false),
    feat!("amx_fp16",   (7, 1, Eax, 21), AMX,  F, [AMX_FP16], Some("amx_fp16"), L("AMXFP16"), false),
    feat!("hreset",     (7, 1, Eax, 22), NONE, F, [HRESET], Some("hreset"), L("HRESET"), false),
    feat!("avx_ifma",   (7, 1, Eax, 23), AVX,  F, [AVX_IFMA], Some("avx_ifma"), L("AVXIFMA"), false),
    feat!("msrlist",    (7, 1, Eax, 27), NONE, F, [MSRLIST], Some("msrlist"), L("MSRLIST"), false),
    feat!("avx_vnni_int8",(7, 1, Edx, 4), AVX, F, [AVX_VNNI_INT8], Some("avx_vnni_int8"), L("AVXVNNIINT8"), false),
    feat!("avx_ne_convert",(7, 1, Edx, 5), AVX, F, [AVX_NE_CONVERT], Some("avx_ne_convert"), L("AVXNECONVERT"), false),
    feat!("amx_complex",(7, 1, Edx, 8),  AMX,  F, [AMX_COMPLEX], None, L("AMXCOMPLEX"), false),
    feat!("avx_vnni_int16",(7, 1, Edx, 10), AVX, F, [AVX_VNNI_INT16], Some("avx_vnni_int16"), L("AVXVNNIINT16"), false),
    feat!("prefetchiti",(7, 1, Edx, 14), NONE, H, [PREFETCHITI], Some("icache_prefetch"), L("PREFETCHI"), false),
    // leaf 0xD.1 EAX: XSAVE variants
    feat!("xsaveopt",   (0xd, 1, Eax, 0), NONE, F, [XSAVEOPT], Some("xsaveopt"), L("XSAVEOPT"), false),
    feat!("xsavec",     (0xd, 1, Eax, 1), NONE, F, [XSAVEC], Some("xsavec"), L("XSAVEC"), false),
    feat!("xsaves",     (0xd, 1, Eax, 3), NONE, F, [XSAVES], Some("xsaves"), L("XSAVES"), false),
    // leaf 0x14
    feat!("ptwrite",    (0x14, 0, Ebx, 4), NONE, F, [PTWRITE], Some("ptwrite"), N, false),
    // AMD extended leaves
    feat!("lahf_lm",    (0x8000_0001, 0, Ecx, 0),  NONE, F, [], Some("lahf"), L("LAHF"), false),
    feat!("svm",        (0x8000_0001, 0, Ecx, 2),  NONE, F, [SVM, SKINIT, SKINIT_or_SVM], None, L("SVM"), false),
    feat!("abm",        (0x8000_0001, 0, Ecx, 5),  NONE, S, [LZCNT], Some("lzcnt"), B("LZCNT"), false),
    feat!("sse4a",      (0x8000_0001, 0, Ecx, 6),  SSE,  F, [SSE4A], Some("sse4a"), L("SSE4A"), false),
    feat!("3dnowprefetch",(0x8000_0001, 0, Ecx, 8), NONE, H, [PREFETCHW], Some("prefetchw"), N, false),
    feat!("xop",        (0x8000_0001, 0, Ecx, 11), AVX,  F, [XOP], None, L("XOP"), false),
    feat!("lwp",        (0x8000_0001, 0, Ecx, 15), NONE, F, [LWP], None, N, false),
    feat!("fma4",       (0x8000_0001, 0, Ecx, 16), AVX,  F, [FMA4], None, L("FMA4"), false),
    feat!("tbm",        (0x8000_0001, 0, Ecx, 21), NONE, F, [TBM], None, L("TBM"), false),
    feat!("mwaitx",     (0x8000_0001, 0, Ecx, 29), NONE, F, [MONITORX], Some("monitorx"), N, false),
    feat!("mmxext",     (0x8000_0001, 0, Edx, 22), NONE, F, [], None, B("MMXEXT"), false),
    feat!("rdtscp",     (0x8000_0001, 0, Edx, 27), NONE, F, [RDTSCP], Some("rdtscp"), B("RDTSCP"), false),
    feat!("3dnowext",   (0x8000_0001, 0, Edx, 30), NONE, F, [D3NOWEXT], None, L("AMD3DNOWEXT"), false),
    feat!("3dnow",      (0x8000_0001, 0, Edx, 31), NONE, F, [D3NOW], None, L("AMD3DNOW"), false),
    feat!("clzero",     (0x8000_0008, 0, Ebx, 0),  NONE, F, [CLZERO], None, L("CLZERO"), false),
    feat!("rdpru",      (0x8000_0008, 0, Ebx, 4),  NONE, F, [RDPRU], Some("rdpru"), L("RDPRU"), false),
    feat!("mcommit",    (0x8000_0008, 0, Ebx, 8),  NONE, F, [MCOMMIT], Some("mcommit"), L("MCOMMIT"), false),
    feat!("wbnoinvd",   (0x8000_0008, 0, Ebx, 9),  NONE, F, [WBNOINVD], Some("wbnoinvd"), L("WBNOINVD"), false),
];

/// iced `CpuidFeature` index → TABLE index, built once.
pub(super) fn iced_index() -> &'static [Option<u16>] {
    static INDEX: OnceLock<Vec<Option<u16>>> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut v = vec![None; iced_x86::CpuidFeature::values().count()];
        for (i, f) in TABLE.iter().enumerate() {
            for &c in f.iced {
                v[c as usize] = Some(i as u16);
            }
        }
        v
    })
}
