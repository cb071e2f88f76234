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
//! conditional branches; any other instruction forgets everything. A direct call forgets
//! everything too, except the returned `rax` of a callee that [`run_resolver`] evaluates on
//! frozen data alone (so the same value on every call). A branch is decided only when
//! every input of its flags is known.

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

/// Functions of one object that run only while a capability variable of the same object
/// is non-zero: code that a CPUID-derived flag, fixed at startup, keeps from ever running.
/// The variable's live value travels with the process, so a closed gate stays closed on
/// any destination. Needs the object's symbols (`.symtab`, or its debug file).
pub struct Gate {
    pub var: &'static str,
    pub functions: &'static [&'static str],
    pub why: &'static str,
}

/// glibc (sysdeps/unix/sysv/linux/x86/elision-conf.c, force-elision.h): the
/// `__lll_*_elision` functions (XBEGIN/XEND/XABORT/XTEST) run only for mutexes whose kind
/// has PTHREAD_MUTEX_ELISION_NP, and only `FORCE_ELISION` in pthread_mutex_lock/trylock/
/// timedlock sets that bit, when `__pthread_force_elision` is non-zero
/// (`pthread_mutexattr_settype` rejects elision kinds). `__pthread_force_elision` is
/// written once, by the glibc.elision.enable tunable at startup, and only to 1 when the
/// CPU has RTM. Default: 0, elision off.
pub const GATES: &[Gate] = &[Gate {
    var: "__pthread_force_elision",
    functions: &[
        "__lll_lock_elision",
        "__lll_clocklock_elision",
        "__lll_timedlock_elision",
        "__lll_trylock_elision",
        "__lll_unlock_elision",
    ],
    why: "glibc lock elision (RTM) disabled: __pthread_force_elision = 0",
}];

/// Every name in [`GATES`] (elf.rs records their addresses).
pub const GATE_NAMES: &[&str] = &[
    "__pthread_force_elision",
    "__lll_lock_elision",
    "__lll_clocklock_elision",
    "__lll_timedlock_elision",
    "__lll_trylock_elision",
    "__lll_unlock_elision",
];

/// Entry addresses of gated functions whose gate is closed in this process, with why.
pub fn closed_gates<M: Memory>(objects: &[crate::image::Object], mem: &M) -> Vec<(u64, &'static str)> {
    let mut out = Vec::new();
    for o in objects {
        for g in GATES {
            let Some(&(var, size)) = o.info.gate_symbols.get(g.var) else { continue };
            let size = size.clamp(1, 8) as usize;
            let mut b = [0u8; 8];
            if mem.read(var.wrapping_add(o.bias), &mut b[..size]) != size || b.iter().any(|&x| x != 0) {
                continue;
            }
            for f in g.functions {
                if let Some(&(addr, _)) = o.info.gate_symbols.get(f) {
                    out.push((addr.wrapping_add(o.bias), g.why));
                }
            }
        }
    }
    out.sort_unstable();
    out
}

/// The instructions in the `max` code bytes from `addr` (within its region), up to the
/// first that does not decode.
pub fn decode_run(image: &crate::image::Image, addr: u64, max: usize) -> Vec<Instruction> {
    use iced_x86::{Decoder, DecoderOptions};
    let Some(r) = image.region_of(addr).map(|r| &image.regions[r]) else { return Vec::new() };
    let b = r.bytes();
    let off = (addr - r.start) as usize;
    Decoder::with_ip(64, &b[off..b.len().min(off + max)], addr, DecoderOptions::NONE).into_iter().take_while(|i| !i.is_invalid()).collect()
}

/// Whether `[x, x+len)` lies in one of `obj`'s data sections (a writable variable).
fn in_data(obj: &crate::image::Object, x: u64, len: u64) -> bool {
    obj.info.data_sections.iter().any(|s| {
        let a = s.addr.wrapping_add(obj.bias);
        x >= a && x.saturating_add(len) <= a.wrapping_add(s.size)
    })
}

/// Size of OpenSSL's `OPENSSL_ia32cap_P` that the dispatch code reads: CPUID.1 EDX/ECX,
/// CPUID.7 EBX/ECX.
const OPENSSL_CAP_BYTES: u64 = 16;

/// OpenSSL's `OPENSSL_ia32cap_P` in a libcrypto stripped of that (hidden) symbol, as
/// `(address, size)`. OpenSSL's perlasm puts `call OPENSSL_cpuid_setup` in the object's
/// `.init` section; that function passes the vector's address to `OPENSSL_ia32_cpuid`
/// (which executes CPUID) and stores the result with bit 10 set ("initialized"). All three
/// must hold: the callee of `.init` loads `lea reg,[rip+X]` at most three instructions
/// before a direct call to a function containing CPUID, every such X is the same
/// writable variable, and its first dword has bit 10 set in the live process.
pub fn openssl_cap_vector<M: Memory>(image: &crate::image::Image, o: usize, mem: &M) -> Option<(u64, u64)> {
    use iced_x86::FlowControl;
    let obj = &image.objects[o];
    let decode = |addr: u64, max: usize| decode_run(image, addr, max);
    let init = obj.info.exec_sections.iter().find(|s| s.name == ".init")?;
    let init_calls: Vec<u64> = decode(init.addr.wrapping_add(obj.bias), init.size as usize)
        .iter()
        .filter(|i| i.flow_control() == FlowControl::Call && i.op0_kind() == OpKind::NearBranch64)
        .map(|i| i.near_branch_target())
        .collect();
    let writable = |x: u64| in_data(obj, x, OPENSSL_CAP_BYTES);
    let mut found: Option<u64> = None;
    for t in init_calls {
        let body = decode(t, 768);
        for (k, i) in body.iter().enumerate() {
            if i.flow_control() != FlowControl::Call || i.op0_kind() != OpKind::NearBranch64 {
                continue;
            }
            let callee = decode(i.near_branch_target(), 512);
            if !callee.iter().any(|c| c.mnemonic() == Mnemonic::Cpuid) {
                continue;
            }
            for p in &body[k.saturating_sub(3)..k] {
                if p.mnemonic() == Mnemonic::Lea && p.is_ip_rel_memory_operand() && writable(p.ip_rel_memory_address()) {
                    let x = p.ip_rel_memory_address();
                    if found.is_some_and(|f| f != x) {
                        return None;
                    }
                    found = Some(x);
                }
            }
        }
    }
    let x = found?;
    let mut w = [0u8; 4];
    (mem.read(x, &mut w) == 4 && u32::from_le_bytes(w) & (1 << 10) != 0).then_some((x, OPENSSL_CAP_BYTES))
}

/// libgcrypt's `hw_features` word (src/hwfeatures.c, a static in a stripped library), as
/// `(address, live value)`. libgcrypt picks every CPU-specific implementation (AES-NI,
/// VAES, SHA-NI, PCLMUL, AVX2, ...) from this word, which `_gcry_detect_hw_features` fills
/// once, on the first API call (global_init), from CPUID minus `hwf.deny`. Found by its two
/// accesses, both required: the detection stores it right after a direct call to a
/// function containing CPUID (`call detect_x86; mov edx,eax; mov eax,[disabled]; not eax;
/// and eax,edx; mov [X],eax`), and `_gcry_get_hw_features` is `mov eax,[rip+X]; ret`.
/// Every candidate store must name the same writable X. Only for `libgcrypt.so*`.
pub fn gcrypt_hw_features<M: Memory>(image: &crate::image::Image, o: usize, mem: &M) -> Option<(u64, u32)> {
    use iced_x86::FlowControl;
    let obj = &image.objects[o];
    if !obj.path.rsplit('/').next()?.starts_with("libgcrypt.so") {
        return None;
    }
    let writable = |x: u64| in_data(obj, x, 4);
    let regions: Vec<&crate::image::Region> = image.regions.iter().filter(|r| r.object == Some(o)).collect();
    let mut cpuids: Vec<u64> = Vec::new();
    for r in &regions {
        cpuids.extend(r.bytes().windows(2).enumerate().filter(|(_, w)| *w == [0x0f, 0xa2]).map(|(i, _)| r.start + i as u64));
    }
    cpuids.sort_unstable();
    let decode = |addr: u64, max: usize| decode_run(image, addr, max);
    let mut found: Option<u64> = None;
    for r in &regions {
        let b = r.bytes();
        for i in 0..b.len().saturating_sub(5) {
            if b[i] != 0xe8 {
                continue;
            }
            let rel = i32::from_le_bytes(b[i + 1..i + 5].try_into().ok()?) as i64 as u64;
            let t = (r.start + i as u64 + 5).wrapping_add(rel);
            let k = cpuids.partition_point(|&c| c < t);
            if k == cpuids.len() || cpuids[k] >= t.saturating_add(512) || !decode(t, 512).iter().any(|c| c.mnemonic() == Mnemonic::Cpuid) {
                continue;
            }
            for insn in decode(r.start + i as u64, 64).iter().skip(1).take(6) {
                if insn.flow_control() != FlowControl::Next {
                    break;
                }
                if insn.mnemonic() == Mnemonic::Mov
                    && insn.op0_kind() == OpKind::Memory
                    && insn.is_ip_rel_memory_operand()
                    && insn.op1_kind() == OpKind::Register
                    && insn.op1_register().is_gpr32()
                    && writable(insn.ip_rel_memory_address())
                {
                    let x = insn.ip_rel_memory_address();
                    if found.is_some_and(|f| f != x) {
                        return None;
                    }
                    found = Some(x);
                    break;
                }
            }
        }
    }
    let x = found?;
    // The getter: [endbr64] mov eax,[rip+X]; ret.
    let getter = regions.iter().any(|r| {
        r.bytes().windows(7).enumerate().any(|(i, w)| {
            w[0] == 0x8b && w[1] == 0x05 && w[6] == 0xc3 && {
                let disp = i32::from_le_bytes([w[2], w[3], w[4], w[5]]) as i64 as u64;
                (r.start + i as u64 + 6).wrapping_add(disp) == x
            }
        })
    });
    let mut v = [0u8; 4];
    (getter && mem.read(x, &mut v) == 4).then(|| (x, u32::from_le_bytes(v)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Flags {
    zf: bool,
    sf: bool,
    cf: bool,
    of: bool,
}

/// Known register values and flags within one straight-line block (carried on into a
/// forward branch target, see analysis.rs `carry`).
#[derive(Debug, Default, Clone)]
pub struct Consts {
    regs: [Option<u64>; 16],
    /// Bits known to be zero of a register whose value is unknown (`and r10d,r11d` with
    /// r10d known: every bit clear in r10d), so `test r10d,1<<16` decides either way.
    zeros: [u64; 16],
    flags: Option<Flags>,
    /// The flags come from BT: only CF is defined.
    bt_only: bool,
}

/// Index (0 = rax … 15 = r15), width in bits and bit offset (8 for ah/bh/ch/dh) of a
/// general-purpose register.
fn gpr(r: Register) -> Option<(usize, u32, u32)> {
    if !(r.is_gpr64() || r.is_gpr32() || r.is_gpr16() || r.is_gpr8()) {
        return None;
    }
    let i = (r.full_register() as usize).wrapping_sub(Register::RAX as usize);
    let high = matches!(r, Register::AH | Register::BH | Register::CH | Register::DH);
    (i < 16).then(|| (i, r.size() as u32 * 8, if high { 8 } else { 0 }))
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

    /// Whether this state knows everything `other` knows, with the same values.
    pub fn covers(&self, other: &Consts) -> bool {
        self.regs.iter().zip(&other.regs).all(|(a, b)| b.is_none() || a == b)
            && self.regs.iter().zip(&other.regs).zip(self.zeros.iter().zip(&other.zeros)).all(|((a, b), (za, zb))| {
                // What `other` knows to be zero, this state knows too.
                b.is_some() || a.map_or(za & zb == *zb, |v| v & zb == 0)
            })
            && (other.flags.is_none() || (self.flags == other.flags && self.bt_only == other.bt_only))
    }

    /// Whether anything is known.
    pub fn any(&self) -> bool {
        self.flags.is_some() || self.regs.iter().any(Option::is_some)
    }

    /// The state after a call that returned `rax`: every other register and the flags
    /// unknown.
    pub fn returned(&mut self, rax: u64) {
        self.clear();
        self.regs[0] = Some(rax);
    }

    fn reg(&self, r: Register) -> Option<u64> {
        let (i, bits, shift) = gpr(r)?;
        self.regs[i].map(|v| (v >> shift) & mask(bits))
    }

    /// Writes `v` (None: unknown) to a register with x86 semantics: 32-bit writes
    /// zero-extend, 8/16-bit writes keep the other bits.
    fn set_reg(&mut self, r: Register, v: Option<u64>) {
        let Some((i, bits, shift)) = gpr(r) else {
            self.clear();
            return;
        };
        self.zeros[i] = 0;
        self.regs[i] = match (bits, v) {
            (64 | 32, v) => v.map(|v| v & mask(bits)),
            (_, Some(v)) => self.regs[i].map(|old| (old & !(mask(bits) << shift)) | ((v & mask(bits)) << shift)),
            (_, None) => None,
        };
    }

    /// Bits of operand `op` known to be zero (all clear bits of a known value).
    fn zero_bits<M: Memory>(&self, insn: &Instruction, op: u32, mem: &M, frozen: &Frozen) -> u64 {
        if let Some((v, _)) = self.operand(insn, op, mem, frozen) {
            return !v;
        }
        match gpr(insn.op_register(op)) {
            Some((i, bits, shift)) if insn.op_kind(op) == OpKind::Register && self.regs[i].is_none() => (self.zeros[i] >> shift) & mask(bits),
            _ => 0,
        }
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
                let (_, bits, _) = gpr(r)?;
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
        let dst_reg = (insn.op_count() > 0 && insn.op0_kind() == OpKind::Register).then(|| insn.op0_register());
        match insn.mnemonic() {
            Mnemonic::Nop | Mnemonic::Endbr64 => {}
            Mnemonic::Mov | Mnemonic::Lea | Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd if dst_reg.is_some() => {
                let dst = insn.op0_register();
                let v = match insn.mnemonic() {
                    Mnemonic::Lea => self.mem_addr(insn),
                    Mnemonic::Movsx | Mnemonic::Movsxd => self.operand(insn, 1, mem, frozen).map(|(v, w)| sign_extend(v, w)),
                    _ => self.operand(insn, 1, mem, frozen).map(|(v, _)| v),
                };
                self.set_reg(dst, v);
            }
            m if is_cmov(m) && dst_reg.is_some() => {
                // Flags unchanged; the destination is the source when the condition holds
                // (a 32-bit destination is zero-extended either way).
                let dst = insn.op0_register();
                let v = match self.decide(insn.condition_code()) {
                    Some(true) => self.operand(insn, 1, mem, frozen).map(|(v, _)| v),
                    Some(false) => self.reg(dst),
                    None => None,
                };
                self.set_reg(dst, v);
                return;
            }
            // Stores: registers and flags unchanged.
            Mnemonic::Mov => {}
            Mnemonic::Push => (self.regs[4], self.zeros[4]) = (None, 0),
            Mnemonic::Pop => {
                (self.regs[4], self.zeros[4]) = (None, 0);
                self.forget_register(insn.op0_register());
            }
            Mnemonic::Not => {
                if let Some(r) = dst_reg {
                    let v = self.reg(r).map(|v| !v);
                    self.set_reg(r, v);
                }
            }
            Mnemonic::And | Mnemonic::Or | Mnemonic::Xor | Mnemonic::Add | Mnemonic::Sub => {
                let Some(dst) = dst_reg else {
                    // Read-modify-write of memory: registers unchanged, flags unknown.
                    self.flags = None;
                    self.bt_only = false;
                    return;
                };
                let same = insn.op1_kind() == OpKind::Register && insn.op1_register() == dst;
                let a = self.operand(insn, 0, mem, frozen);
                let b = self.operand(insn, 1, mem, frozen);
                let (bits, r) = match (insn.mnemonic(), a, b) {
                    // xor r,r / sub r,r: zero whatever r held.
                    (Mnemonic::Xor | Mnemonic::Sub, _, _) if same => {
                        let bits = gpr(dst).map_or(64, |g| g.1);
                        (bits, Some((0, false, false)))
                    }
                    (m, Some((a, wa)), Some((b, _))) => {
                        let bits = wa.clamp(8, 64);
                        let mk = mask(bits);
                        let sign = 1u64 << (bits - 1);
                        let (a, b) = (a & mk, b & mk);
                        let r = match m {
                            Mnemonic::And => (a & b, false, false),
                            Mnemonic::Or => (a | b, false, false),
                            Mnemonic::Xor => (a ^ b, false, false),
                            Mnemonic::Add => {
                                let r = a.wrapping_add(b) & mk;
                                (r, r < a, ((a ^ r) & (b ^ r) & sign) != 0)
                            }
                            _ => {
                                let r = a.wrapping_sub(b) & mk;
                                (r, a < b, ((a ^ b) & (a ^ r) & sign) != 0)
                            }
                        };
                        (bits, Some(r))
                    }
                    // and with an unknown operand: the bits clear in either are clear.
                    (Mnemonic::And, _, _) => {
                        let bits = gpr(dst).map_or(64, |g| g.1);
                        let z = (self.zero_bits(insn, 0, mem, frozen) | self.zero_bits(insn, 1, mem, frozen)) & mask(bits);
                        if z == mask(bits) {
                            (bits, Some((0, false, false)))
                        } else {
                            self.set_reg(dst, None);
                            if let Some((i, 32 | 64, 0)) = gpr(dst) {
                                // A 32-bit write clears the upper half.
                                self.zeros[i] = z | !mask(bits);
                            }
                            self.flags = None;
                            return;
                        }
                    }
                    _ => (64, None),
                };
                match r {
                    Some((v, cf, of)) => {
                        let sign = 1u64 << (bits - 1);
                        self.set_reg(dst, Some(v));
                        self.flags = Some(Flags { zf: v == 0, sf: v & sign != 0, cf, of });
                    }
                    None => {
                        self.set_reg(dst, None);
                        self.flags = None;
                    }
                }
            }
            Mnemonic::Shl | Mnemonic::Shr if dst_reg.is_some() && insn.op1_kind() != OpKind::Register => {
                // Only the value is tracked; the flags are forgotten.
                let dst = insn.op0_register();
                let v = match (self.reg(dst), gpr(dst)) {
                    (Some(v), Some((_, bits, _))) => {
                        let n = (insn.immediate(1) & if bits == 64 { 63 } else { 31 }) as u32;
                        let v = if insn.mnemonic() == Mnemonic::Shl { v.checked_shl(n).unwrap_or(0) } else { v.checked_shr(n).unwrap_or(0) };
                        Some(v & mask(bits))
                    }
                    _ => None,
                };
                self.set_reg(dst, v);
                self.flags = None;
            }
            Mnemonic::Test | Mnemonic::Cmp => {
                let a = self.operand(insn, 0, mem, frozen);
                let b = self.operand(insn, 1, mem, frozen);
                self.flags = match (a, b) {
                    // test with every bit clear in one operand or the other: zero.
                    (None, _) | (_, None) if insn.mnemonic() == Mnemonic::Test => {
                        let bits = match insn.op0_kind() {
                            OpKind::Register => gpr(insn.op0_register()).map_or(0, |g| g.1),
                            _ => insn.memory_size().size() as u32 * 8,
                        };
                        let z = self.zero_bits(insn, 0, mem, frozen) | self.zero_bits(insn, 1, mem, frozen);
                        (bits > 0 && z & mask(bits) == mask(bits)).then_some(Flags { zf: true, sf: false, cf: false, of: false })
                    }
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
            // SSE/AVX work on vector registers and memory (`pxor xmm0,xmm0; movdqa
            // [rsp],xmm0` between OpenSSL's cap load and its test): nothing tracked changes.
            _ if vector_only(insn) => return,
            _ => {
                self.clear();
                return;
            }
        }
        self.bt_only = false;
    }

    fn forget_register(&mut self, r: Register) {
        match gpr(r) {
            Some((i, _, _)) => (self.regs[i], self.zeros[i]) = (None, 0),
            None => self.clear(),
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

/// An instruction that writes only a vector or mask register, or stores one to memory,
/// and leaves the flags alone: general-purpose registers and flags keep their values.
fn vector_only(insn: &Instruction) -> bool {
    let vector = |r: Register| r.is_xmm() || r.is_ymm() || r.is_zmm() || r.is_k();
    insn.rflags_modified() == 0
        && match insn.op0_kind() {
            OpKind::Register => vector(insn.op0_register()),
            OpKind::Memory => insn.op_count() == 2 && insn.op1_kind() == OpKind::Register && vector(insn.op1_register()),
            _ => false,
        }
}

fn is_cmov(m: Mnemonic) -> bool {
    use Mnemonic as M;
    matches!(
        m,
        M::Cmova
            | M::Cmovae
            | M::Cmovb
            | M::Cmovbe
            | M::Cmove
            | M::Cmovg
            | M::Cmovge
            | M::Cmovl
            | M::Cmovle
            | M::Cmovne
            | M::Cmovno
            | M::Cmovnp
            | M::Cmovns
            | M::Cmovo
            | M::Cmovp
            | M::Cmovs
    )
}

/// Runs an IFUNC resolver on frozen data alone: from `entry`, one path, every branch and
/// conditional move decided by the evaluator, until `ret`; the result is `rax`. `None`
/// as soon as anything is unknown (a branch on an argument, a call, an unsupported
/// instruction, more than 256 instructions). glibc's resolvers read only the CPU
/// features in `_rtld_global_ro` (RELRO), so the answer is the function the dynamic
/// linker would bind — here and on any destination, as the data travels with the process.
pub fn run_resolver<M: Memory>(image: &crate::image::Image, mem: &M, entry: u64) -> Option<u64> {
    use iced_x86::{Decoder, DecoderOptions, FlowControl};
    let mut c = Consts::default();
    let mut ip = entry;
    for _ in 0..256 {
        let r = &image.regions[image.region_of(ip)?];
        let off = (ip - r.start) as usize;
        let insn = Decoder::with_ip(64, &r.bytes()[off..], ip, DecoderOptions::NONE).decode();
        if insn.is_invalid() {
            return None;
        }
        match insn.flow_control() {
            FlowControl::Next => {
                c.step(&insn, mem, &image.frozen);
                ip = insn.next_ip();
            }
            FlowControl::ConditionalBranch if insn.op0_kind() == OpKind::NearBranch64 => {
                ip = if c.decide(insn.condition_code())? { insn.near_branch_target() } else { insn.next_ip() };
            }
            FlowControl::UnconditionalBranch if insn.op0_kind() == OpKind::NearBranch64 => ip = insn.near_branch_target(),
            FlowControl::Return => return c.reg(Register::RAX),
            _ => return None,
        }
    }
    None
}

fn sign_extend(v: u64, bits: u32) -> u64 {
    if bits >= 64 {
        v
    } else {
        let shift = 64 - bits;
        (((v << shift) as i64) >> shift) as u64
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
    fn and_with_an_unknown_register_keeps_the_clear_bits() {
        // OpenSSL's poly1305: mov r10d,[cap] ; and r10d,r11d (r11d unknown: left by the
        // caller) ; test r10d,1<<16 ; jne avx512. [0x5000] = 0x20: bit 16 clear whatever
        // r11d holds, so the branch is not taken; bit 5 depends on r11d: undecided.
        let code = [
            0x4c, 0x8d, 0x1d, 0xf9, 0x3f, 0x00, 0x00, 0x45, 0x8b, 0x13, 0x45, 0x21, 0xe2, 0x41, 0xf7, 0xc2, 0x00, 0x00, 0x01, 0x00,
            0x75, 0x10,
        ];
        let (text, d) = run(&code, &frozen());
        assert_eq!(text[2..], ["and r10d,r12d", "test r10d,10000h", "jne short 0000000000001026h"]);
        assert_eq!(d, Some(false));
        let mut code2 = code;
        code2[16] = 0x20;
        code2[18] = 0x00;
        assert_eq!(run(&code2, &frozen()).1, None);
        // Anything else written to r10 forgets the clear bits: add r10d,r12d.
        let mut code3 = code;
        code3[11] = 0x01;
        assert_eq!(run(&code3, &frozen()).1, None);
    }

    #[test]
    fn and_cmp_on_loaded_capability_word() {
        // OpenSSL's dispatch: lea r11,[rip+X] (=0x5000) ; mov r10d,[r11+4] ; and r10d,800h ;
        // jne (XOP bit of CPUID.1:ECX). [0x5004] = 0x800: XOP set.
        let code = [
            0x4c, 0x8d, 0x1d, 0xf9, 0x3f, 0x00, 0x00, 0x45, 0x8b, 0x53, 0x04, 0x41, 0x81, 0xe2, 0x00, 0x08, 0x00, 0x00, 0x75,
            0x10,
        ];
        let (text, d) = run(&code, &frozen());
        assert_eq!(text[1..], ["mov r10d,[r11+4]", "and r10d,800h", "jne short 0000000000001024h"]);
        assert_eq!(d, Some(true));
        // The same bit against 0x400 instead: clear, branch not taken.
        let mut code2 = code;
        code2[15] = 0x04;
        assert_eq!(run(&code2, &frozen()).1, Some(false));
        // and ; or ; cmp chain: (0x20 & 0x20) | 0x100 == 0x120.
        // mov eax,[0x5000] ; and eax,20h ; or eax,100h ; cmp eax,120h ; je
        let code3 = [
            0x8b, 0x05, 0xfa, 0x3f, 0x00, 0x00, 0x83, 0xe0, 0x20, 0x0d, 0x00, 0x01, 0x00, 0x00, 0x3d, 0x20, 0x01, 0x00, 0x00,
            0x74, 0x10,
        ];
        let (text, d) = run(&code3, &frozen());
        assert_eq!(text[..4], ["mov eax,[5000h]", "and eax,20h", "or eax,100h", "cmp eax,120h"]);
        assert_eq!(d, Some(true));
    }

    #[test]
    fn partial_registers_and_unknown_sources() {
        // mov eax,[0x5000] ; test ah,0 ... : high byte of 0x20 is 0.
        // mov eax,[rip..] ; test ah,1 ; je  -> ZF set, taken.
        let code = [0x8b, 0x05, 0xfa, 0x3f, 0x00, 0x00, 0xf6, 0xc4, 0x01, 0x74, 0x10];
        let (text, d) = run(&code, &frozen());
        assert_eq!(text[1], "test ah,1");
        assert_eq!(d, Some(true));
        // An operand from unfrozen memory makes the result unknown: and eax,[rdi] ; je.
        let code2 = [0x8b, 0x05, 0xfa, 0x3f, 0x00, 0x00, 0x23, 0x07, 0x74, 0x10];
        assert_eq!(run(&code2, &frozen()).1, None);
        // xor eax,eax zeroes whatever eax held: xor eax,eax ; test eax,eax ; je.
        assert_eq!(run(&[0x31, 0xc0, 0x85, 0xc0, 0x74, 0x10], &Frozen::default()).1, Some(true));
        // A write to memory does not touch registers, but its flags are unknown:
        // mov eax,[0x5000] ; test eax,eax ; add dword [rdi],1 ; jne.
        let code3 = [0x8b, 0x05, 0xfa, 0x3f, 0x00, 0x00, 0x85, 0xc0, 0x83, 0x07, 0x01, 0x75, 0x10];
        assert_eq!(run(&code3, &frozen()).1, None);
    }

    #[test]
    fn conditional_move_on_known_flags() {
        // glibc's resolvers end in cmov: mov eax,[0x5000] (=0x20) ; mov ecx,1 ; mov edx,2 ;
        // test eax,20h ; cmovne ecx,edx ; cmp ecx,2 ; je
        let code = [
            0x8b, 0x05, 0xfa, 0x3f, 0x00, 0x00, 0xb9, 0x01, 0x00, 0x00, 0x00, 0xba, 0x02, 0x00, 0x00, 0x00, 0xa9, 0x20, 0x00,
            0x00, 0x00, 0x0f, 0x45, 0xca, 0x83, 0xf9, 0x02, 0x74, 0x10,
        ];
        let (text, d) = run(&code, &frozen());
        assert_eq!(text[4], "cmovne ecx,edx");
        assert_eq!(d, Some(true), "{text:?}");
        // test eax,40h instead: condition false, ecx keeps 1.
        let mut code2 = code;
        code2[17] = 0x40;
        assert_eq!(run(&code2, &frozen()).1, Some(false));
        // Flags unknown (memory not frozen): ecx unknown afterwards.
        assert_eq!(run(&code, &Frozen::default()).1, None);
    }

    #[test]
    fn gate_names_cover_the_gates() {
        for g in GATES {
            assert!(GATE_NAMES.contains(&g.var), "{}", g.var);
            for f in g.functions {
                assert!(GATE_NAMES.contains(f), "{f}");
            }
        }
        assert_eq!(GATE_NAMES.len(), GATES.iter().map(|g| 1 + g.functions.len()).sum::<usize>());
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
