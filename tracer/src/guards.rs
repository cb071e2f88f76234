//! Branches on frozen CPU-capability data: a tiny constant evaluator for the walk.
//!
//! Code like `if (cpu_features->avx512f) use_avx512();` is reachable, but the process will
//! only ever take the branch its capability data (computed once at startup) selects. When a
//! conditional branch depends only on immediates and on memory that cannot change — a
//! mapping that is no longer writable (RELRO'd `.data.rel.ro`, such as glibc's
//! `_rtld_global_ro` cpu_features, and the GOT pointing at it), or a named capability
//! variable (`OPENSSL_ia32cap_P`, libgcc's `__cpu_model`, …) — the walk follows only the
//! side the live values select. The values travel with the process when it moves, so the
//! choice stays right on the destination.
//!
//! Soundness: registers are tracked only through `mov`, `lea`, `cmp`, `test`, `bt`, NOPs and
//! conditional branches; any other instruction forgets everything. A branch is decided only
//! when every input of its flags is known.

use crate::image::Memory;
use iced_x86::{ConditionCode, Instruction, Mnemonic, OpKind, Register};

/// Address ranges whose contents are constant for the rest of the process's life.
#[derive(Debug, Default, Clone)]
pub struct Frozen {
    /// Sorted, non-overlapping `[start, end)`.
    pub ranges: Vec<(u64, u64)>,
}

impl Frozen {
    pub fn new(mut ranges: Vec<(u64, u64)>) -> Frozen {
        ranges.sort_unstable();
        Frozen { ranges }
    }
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        let i = self.ranges.partition_point(|r| r.0 <= addr);
        i > 0 && {
            let (s, e) = self.ranges[i - 1];
            addr >= s && addr.saturating_add(len) <= e
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Flags {
    zf: bool,
    sf: bool,
    cf: bool,
    of: bool,
}

/// Known register values and flags within one straight-line block.
#[derive(Debug, Default)]
pub struct Consts {
    regs: [Option<u64>; 16],
    flags: Option<Flags>,
    /// The flags come from BT: only CF is defined.
    bt_only: bool,
}

fn gpr(r: Register) -> Option<(usize, u32)> {
    let (base, bits) = if r.is_gpr64() {
        (Register::RAX, 64)
    } else if r.is_gpr32() {
        (Register::EAX, 32)
    } else {
        return None;
    };
    Some(((r as usize).wrapping_sub(base as usize), bits))
}

fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

impl Consts {
    pub fn clear(&mut self) {
        *self = Consts::default();
    }

    fn reg(&self, r: Register) -> Option<u64> {
        let (i, bits) = gpr(r)?;
        self.regs.get(i).copied().flatten().map(|v| v & mask(bits))
    }

    fn mem_addr(&self, insn: &Instruction) -> Option<u64> {
        if insn.is_ip_rel_memory_operand() {
            return Some(insn.ip_rel_memory_address());
        }
        if insn.memory_index() != Register::None || insn.segment_prefix() != Register::None {
            return None;
        }
        let base = self.reg(insn.memory_base())?;
        Some(base.wrapping_add(insn.memory_displacement64()))
    }

    /// Value and width of operand `op`, if known.
    fn operand<M: Memory>(&self, insn: &Instruction, op: u32, mem: &M, frozen: &Frozen) -> Option<(u64, u32)> {
        match insn.op_kind(op) {
            OpKind::Register => {
                let r = insn.op_register(op);
                let (_, bits) = gpr(r)?;
                Some((self.reg(r)?, bits))
            }
            OpKind::Memory => {
                let size = insn.memory_size().size() as u64;
                if !(1..=8).contains(&size) {
                    return None;
                }
                let addr = self.mem_addr(insn)?;
                if !frozen.contains(addr, size) {
                    return None;
                }
                let mut b = [0u8; 8];
                (mem.read(addr, &mut b[..size as usize]) == size as usize).then(|| (u64::from_le_bytes(b), size as u32 * 8))
            }
            OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64 => Some((insn.immediate(op), 64)),
            _ => None,
        }
    }

    /// Updates the state for a non-branch instruction.
    pub fn step<M: Memory>(&mut self, insn: &Instruction, mem: &M, frozen: &Frozen) {
        match insn.mnemonic() {
            Mnemonic::Nop | Mnemonic::Endbr64 => {}
            Mnemonic::Mov | Mnemonic::Lea if insn.op0_kind() == OpKind::Register => {
                let dst = insn.op0_register();
                let v = if insn.mnemonic() == Mnemonic::Lea {
                    self.mem_addr(insn)
                } else {
                    self.operand(insn, 1, mem, frozen).map(|(v, _)| v)
                };
                match gpr(dst) {
                    // 32-bit writes zero-extend into the full register.
                    Some((i, bits)) if i < 16 => self.regs[i] = v.map(|v| v & mask(bits)),
                    _ => self.forget_register(dst),
                }
            }
            Mnemonic::Mov => {} // store to memory: registers and flags unchanged
            Mnemonic::Test | Mnemonic::Cmp => {
                let a = self.operand(insn, 0, mem, frozen);
                let b = self.operand(insn, 1, mem, frozen);
                self.flags = match (a, b) {
                    (Some((a, wa)), Some((b, _))) => {
                        let bits = operand_bits(insn, wa);
                        let m = mask(bits);
                        let (a, b) = (a & m, b & m);
                        let sign = 1u64 << (bits - 1);
                        Some(if insn.mnemonic() == Mnemonic::Test {
                            let r = a & b;
                            Flags { zf: r == 0, sf: r & sign != 0, cf: false, of: false }
                        } else {
                            let r = a.wrapping_sub(b) & m;
                            let of = ((a ^ b) & (a ^ r) & sign) != 0;
                            Flags { zf: r == 0, sf: r & sign != 0, cf: a < b, of }
                        })
                    }
                    _ => None,
                };
            }
            Mnemonic::Bt => {
                let a = self.operand(insn, 0, mem, frozen);
                let b = self.operand(insn, 1, mem, frozen);
                // `bt mem, reg` addresses memory beyond the operand: only decide the
                // register-destination and immediate-offset forms.
                let simple = insn.op0_kind() == OpKind::Register || insn.op1_kind() != OpKind::Register;
                self.flags = match (a, b) {
                    (Some((a, wa)), Some((b, _))) if simple => {
                        let bits = operand_bits(insn, wa);
                        let bit = b % u64::from(bits);
                        Some(Flags { cf: (a >> bit) & 1 != 0, zf: false, sf: false, of: false })
                    }
                    _ => None,
                };
                self.bt_only = self.flags.is_some();
                return;
            }
            _ => {
                self.clear();
                return;
            }
        }
        self.bt_only = false;
    }

    fn forget_register(&mut self, r: Register) {
        let full = r.full_register();
        if let Some((i, _)) = gpr(full) {
            if i < 16 {
                self.regs[i] = None;
            }
        } else {
            self.clear();
        }
    }

    /// Whether a conditional branch is taken, when its flags are known.
    pub fn decide(&self, cc: ConditionCode) -> Option<bool> {
        let f = self.flags?;
        use ConditionCode as C;
        if self.bt_only && !matches!(cc, C::b | C::ae) {
            return None;
        }
        Some(match cc {
            C::o => f.of,
            C::no => !f.of,
            C::b => f.cf,
            C::ae => !f.cf,
            C::e => f.zf,
            C::ne => !f.zf,
            C::be => f.cf || f.zf,
            C::a => !f.cf && !f.zf,
            C::s => f.sf,
            C::ns => !f.sf,
            C::l => f.sf != f.of,
            C::ge => f.sf == f.of,
            C::le => f.zf || f.sf != f.of,
            C::g => !f.zf && f.sf == f.of,
            _ => return None,
        })
    }
}

/// Width of a two-operand instruction: the register or memory operand's width.
fn operand_bits(insn: &Instruction, first: u32) -> u32 {
    if insn.op0_kind() == OpKind::Memory {
        (insn.memory_size().size() as u32 * 8).clamp(8, 64)
    } else {
        first.clamp(8, 64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};

    /// Memory with one 8-byte word at 0x5000 = 0x0000_0800_0000_0020.
    struct Mem;
    impl Memory for Mem {
        fn read(&self, addr: u64, buf: &mut [u8]) -> usize {
            let word = 0x0000_0800_0000_0020u64.to_le_bytes();
            for (i, b) in buf.iter_mut().enumerate() {
                let a = addr + i as u64;
                if !(0x5000..0x5008).contains(&a) {
                    return i;
                }
                *b = word[(a - 0x5000) as usize];
            }
            buf.len()
        }
    }

    /// Runs `code` (at 0x1000) through the evaluator; returns the disassembly and the
    /// decision for the final conditional branch.
    fn run(code: &[u8], frozen: &Frozen) -> (Vec<String>, Option<bool>) {
        let mut d = Decoder::with_ip(64, code, 0x1000, DecoderOptions::NONE);
        let mut c = Consts::default();
        let mut text = Vec::new();
        let mut last = None;
        for insn in &mut d {
            let mut s = String::new();
            IntelFormatter::new().format(&insn, &mut s);
            text.push(s);
            if insn.flow_control() == iced_x86::FlowControl::ConditionalBranch {
                last = c.decide(insn.condition_code());
            } else {
                c.step(&insn, &Mem, frozen);
            }
        }
        (text, last)
    }

    fn frozen() -> Frozen {
        Frozen::new(vec![(0x5000, 0x5008)])
    }

    #[test]
    fn test_frozen_byte_then_branch() {
        // test byte [rip+0x3ff9],20h (= [0x5000]) ; jne
        let code = [0xf6, 0x05, 0xf9, 0x3f, 0x00, 0x00, 0x20, 0x75, 0x10];
        let (text, d) = run(&code, &frozen());
        assert_eq!(text, ["test byte ptr [5000h],20h", "jne short 0000000000001019h"]);
        assert_eq!(d, Some(true));
        // Same code, memory not frozen: undecided.
        assert_eq!(run(&code, &Frozen::default()).1, None);
    }

    #[test]
    fn load_then_bt_then_jc() {
        // lea r11,[rip+0x3ff9] (=0x5000) ; mov r10,[r11] ; bt r10,43 ; jb
        let code = [0x4c, 0x8d, 0x1d, 0xf9, 0x3f, 0x00, 0x00, 0x4d, 0x8b, 0x13, 0x49, 0x0f, 0xba, 0xe2, 0x2b, 0x72, 0x10];
        let (text, d) = run(&code, &frozen());
        assert_eq!(text[2], "bt r10,2Bh");
        assert_eq!(d, Some(true), "{text:?}");
        // jz after bt: ZF undefined, so undecided.
        let mut code2 = code;
        code2[15] = 0x74;
        assert_eq!(run(&code2, &frozen()).1, None);
    }

    #[test]
    fn any_other_instruction_forgets() {
        // lea r11,[rip+0x3ff9] ; add r11,8 ; mov r10,[r11] ; test r10d,r10d ; je
        let code = [
            0x4c, 0x8d, 0x1d, 0xf9, 0x3f, 0x00, 0x00, 0x49, 0x83, 0xc3, 0x08, 0x4d, 0x8b, 0x13, 0x45, 0x85, 0xd2, 0x74, 0x10,
        ];
        let (text, d) = run(&code, &frozen());
        assert_eq!(text[1], "add r11,8");
        assert_eq!(d, None);
    }

    #[test]
    fn cmp_signed_and_unsigned() {
        // mov eax,5 ; cmp eax,7 ; jl / jb / jg
        let base = [0xb8, 0x05, 0x00, 0x00, 0x00, 0x83, 0xf8, 0x07];
        for (cc, want) in [(0x7c, true), (0x72, true), (0x7f, false), (0x74, false)] {
            let mut code = base.to_vec();
            code.extend([cc, 0x10]);
            assert_eq!(run(&code, &Frozen::default()).1, Some(want), "jcc {cc:#x}");
        }
    }
}
