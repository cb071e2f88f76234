//! CPUID and XGETBV on the running CPU: the only place that executes them.
//!
//! Everything above this module sees [`CpuidSource`], so host detection also runs on a
//! recorded CPUID dump (tests, or a host captured elsewhere).

/// Raw CPUID registers `[eax, ebx, ecx, edx]`.
pub type Regs = [u32; 4];

/// Where CPUID and XCR0 values come from.
pub trait CpuidSource {
    /// CPUID with `eax = leaf`, `ecx = subleaf`.
    fn cpuid(&self, leaf: u32, subleaf: u32) -> Regs;
    /// XCR0 as enabled by the OS, or None when the OS has not enabled XSAVE (OSXSAVE clear).
    fn xcr0(&self) -> Option<u64>;
}

/// The CPU this process runs on.
#[derive(Debug, Default, Clone, Copy)]
pub struct NativeCpu;

impl CpuidSource for NativeCpu {
    fn cpuid(&self, leaf: u32, subleaf: u32) -> Regs {
        let r = raw_cpuid::cpuid!(leaf, subleaf);
        [r.eax, r.ebx, r.ecx, r.edx]
    }

    fn xcr0(&self) -> Option<u64> {
        // XGETBV raises #UD unless CR4.OSXSAVE is set, which CPUID.1:ECX[27] reflects.
        let osxsave = self.cpuid(1, 0)[2] & (1 << 27) != 0;
        if !osxsave {
            return None;
        }
        Some(xgetbv0())
    }
}

/// Reads XCR0 (XGETBV with ECX = 0).
fn xgetbv0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only called after CPUID.1:ECX.OSXSAVE[27] was seen set, so the OS has set
    // CR4.OSXSAVE and XGETBV is a valid, side-effect-free instruction at any privilege
    // level; it reads ECX and writes only EDX:EAX, which are declared as operands.
    unsafe {
        std::arch::asm!("xgetbv", in("ecx") 0u32, out("eax") lo, out("edx") hi,
                        options(nomem, nostack, preserves_flags));
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_cpu_has_sse_state_enabled() {
        let cpu = NativeCpu;
        let max = cpu.cpuid(0, 0)[0];
        assert!(max >= 1, "CPUID max leaf {max}");
        if let Some(xcr0) = cpu.xcr0() {
            assert_eq!(xcr0 & 3, 3, "XCR0 {xcr0:#x} lacks x87|SSE");
        }
    }
}
