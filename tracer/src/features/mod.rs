//! The canonical CPU feature model (see DESIGN.md, "Canonical CPU feature model").
//!
//! A feature's identity is its CPUID bit `(leaf, subleaf, register, bit)` plus the XCR0
//! state components the OS must enable; its name is the Linux /proc/cpuinfo flag.
//! [`TABLE`] is the one place that maps canonical features to iced-x86's
//! `CpuidFeature`, XED's CPUID-bit names and Kubernetes node-feature-discovery labels.

mod classify;
mod table;

pub use classify::{classify, InsnFeature};
pub use table::TABLE;

use serde::{Deserialize, Serialize};
use std::fmt;

/// How an instruction behaves on a CPU without the feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    /// Raises #UD (SIGILL): the destination must have the feature.
    Faults,
    /// Executes as a different instruction (LZCNT as BSR): wrong results, so required.
    Silent,
    /// Executes as a no-op (ENDBR64, multi-byte NOP, PAUSE): reported, never required.
    Hint,
}

impl Class {
    /// Whether a destination must have a feature used in this class.
    pub fn is_required(self) -> bool {
        !matches!(self, Class::Hint)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Faults => "faults",
            Class::Silent => "silent",
            Class::Hint => "hint",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A CPUID register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

impl Reg {
    pub fn as_str(self) -> &'static str {
        match self {
            Reg::Eax => "eax",
            Reg::Ebx => "ebx",
            Reg::Ecx => "ecx",
            Reg::Edx => "edx",
        }
    }
    pub fn parse(s: &str) -> Option<Reg> {
        Some(match s {
            "eax" => Reg::Eax,
            "ebx" => Reg::Ebx,
            "ecx" => Reg::Ecx,
            "edx" => Reg::Edx,
            _ => return None,
        })
    }
}

/// One CPUID bit: the canonical identity of a feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CpuidBit {
    pub leaf: u32,
    pub subleaf: u32,
    pub reg: Reg,
    pub bit: u8,
}

impl CpuidBit {
    /// Parses XED/catalog bit ids such as `avx2.7.0.ebx.5` or `xsavec.d.1.eax.1`
    /// (leaf and subleaf in hex). Returns the XED name and the bit.
    pub fn parse_xed_id(id: &str) -> Option<(&str, CpuidBit)> {
        let mut parts = id.rsplitn(5, '.');
        let bit = parts.next()?.parse().ok()?;
        let reg = Reg::parse(parts.next()?)?;
        let subleaf = u32::from_str_radix(parts.next()?, 16).ok()?;
        let leaf = u32::from_str_radix(parts.next()?, 16).ok()?;
        let name = parts.next()?;
        Some((name, CpuidBit { leaf, subleaf, reg, bit }))
    }
}

impl fmt::Display for CpuidBit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CPUID.(EAX={:#x},ECX={}):{}[{}]", self.leaf, self.subleaf, self.reg.as_str().to_uppercase(), self.bit)
    }
}

/// XCR0 state components (XSAVE feature set) that the OS must enable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XState {
    X87,
    Sse,
    Avx,
    Bndregs,
    Bndcsr,
    Opmask,
    ZmmHi256,
    Hi16Zmm,
    Pkru,
    Tilecfg,
    Tiledata,
}

impl XState {
    pub const ALL: [XState; 11] = [
        XState::X87,
        XState::Sse,
        XState::Avx,
        XState::Bndregs,
        XState::Bndcsr,
        XState::Opmask,
        XState::ZmmHi256,
        XState::Hi16Zmm,
        XState::Pkru,
        XState::Tilecfg,
        XState::Tiledata,
    ];
    /// Bit number in XCR0.
    pub fn bit(self) -> u32 {
        match self {
            XState::X87 => 0,
            XState::Sse => 1,
            XState::Avx => 2,
            XState::Bndregs => 3,
            XState::Bndcsr => 4,
            XState::Opmask => 5,
            XState::ZmmHi256 => 6,
            XState::Hi16Zmm => 7,
            XState::Pkru => 9,
            XState::Tilecfg => 17,
            XState::Tiledata => 18,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            XState::X87 => "x87",
            XState::Sse => "sse",
            XState::Avx => "avx",
            XState::Bndregs => "bndregs",
            XState::Bndcsr => "bndcsr",
            XState::Opmask => "opmask",
            XState::ZmmHi256 => "zmm_hi256",
            XState::Hi16Zmm => "hi16_zmm",
            XState::Pkru => "pkru",
            XState::Tilecfg => "tilecfg",
            XState::Tiledata => "tiledata",
        }
    }
    /// The states enabled in an XCR0 value.
    pub fn from_xcr0(xcr0: u64) -> Vec<XState> {
        XState::ALL.into_iter().filter(|s| xcr0 & (1 << s.bit()) != 0).collect()
    }
}

/// Kubernetes node-feature-discovery label for a feature.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nfd {
    /// Not labelled by NFD at all (no cpuid name in NFD's source).
    None,
    /// Labelled by default as `feature.node.kubernetes.io/cpu-cpuid.<NAME>`.
    Label(&'static str),
    /// NFD knows the name but its default `attributeBlacklist` hides it; enable it in
    /// nfd-worker's `sources.cpu.cpuid.attributeWhitelist`.
    Blacklisted(&'static str),
}

/// One canonical feature.
#[derive(Debug)]
pub struct Feature {
    /// Linux /proc/cpuinfo flag name (canonical).
    pub name: &'static str,
    /// None for the few hint features with no CPUID bit (multi-byte NOP, PAUSE).
    pub cpuid: Option<CpuidBit>,
    /// XCR0 states required (beyond what the OS always enables).
    pub xcr0: &'static [XState],
    /// Class of most instructions of this feature (some instructions differ, see [`classify`]).
    pub class: Class,
    /// iced-x86 `CpuidFeature`s that map to this feature.
    pub iced: &'static [iced_x86::CpuidFeature],
    /// XED CPUID-bit name (`sha` in `sha.7.0.ebx.29`), if XED knows the bit.
    pub xed: Option<&'static str>,
    pub nfd: Nfd,
    /// Present on every x86-64 CPU (x86-64 baseline): never limits a destination.
    pub baseline: bool,
}

/// Index of a feature in [`TABLE`].
pub type FeatureId = u16;

impl Feature {
    /// Index in [`TABLE`] (address arithmetic: every `Feature` lives in `TABLE`).
    pub fn id(&self) -> FeatureId {
        let base = TABLE.as_ptr() as usize;
        let idx = (self as *const Feature as usize - base) / std::mem::size_of::<Feature>();
        debug_assert!(std::ptr::eq(&TABLE[idx], self));
        idx as FeatureId
    }
}

/// Looks a feature up by canonical name, or by an alias some tools use
/// (`sha` → `sha_ni`, `lzcnt` → `abm`, `sse3` → `pni`, `sse4.1` → `sse4_1`, ...).
pub fn by_name(name: &str) -> Option<&'static Feature> {
    let lower = name.to_ascii_lowercase().replace(['.', '-'], "_");
    let canon = match lower.as_str() {
        "sha" | "shani" => "sha_ni",
        "lzcnt" => "abm",
        "sse3" => "pni",
        "sse41" => "sse4_1",
        "sse42" => "sse4_2",
        "fma3" => "fma",
        "aesni" => "aes",
        "cx16" | "cmpxchg16b" => "cx16",
        "prefetchw" => "3dnowprefetch",
        "osxsave" => "osxsave",
        "rdpid" => "rdpid",
        "user_shstk" | "cet_ss" => "shstk",
        "cet_ibt" => "ibt",
        "fsgsbase" | "rdwrfsgs" => "fsgsbase",
        other => other,
    };
    TABLE.iter().find(|f| f.name == canon)
}

/// Looks a feature up by its CPUID bit.
pub fn by_cpuid(bit: CpuidBit) -> Option<&'static Feature> {
    TABLE.iter().find(|f| f.cpuid == Some(bit))
}

/// Looks a feature up by its XED CPUID-bit name (`sha`, `movebe`, `sse42`, ...).
pub fn by_xed(name: &str) -> Option<&'static Feature> {
    TABLE.iter().find(|f| f.xed == Some(name))
}

/// Maps an iced-x86 feature to the canonical one (None for features with no
/// CPUID bit, such as `INTEL386` or `X64`, which every x86-64 CPU has).
pub fn by_iced(f: iced_x86::CpuidFeature) -> Option<&'static Feature> {
    table::iced_index()[f as usize].map(|i| &TABLE[i as usize])
}

pub fn get(id: FeatureId) -> &'static Feature {
    &TABLE[id as usize]
}

#[cfg(test)]
mod tests;
