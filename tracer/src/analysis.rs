//! Decoding and feature accounting: path tracking (`--mode path`) and full scan
//! (`--mode full`). Pure: works on an [`Image`], captured thread states and a
//! [`Memory`] reader, never on a pid.

use crate::attach::ThreadState;
use crate::features::{self, Class, FeatureId};
use crate::image::{Image, Memory};
use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind, Register};
use std::collections::{BTreeMap, HashMap, HashSet};

/// How many example instructions are kept per feature.
pub const EVIDENCE_PER_FEATURE: usize = 3;

/// Per-feature accumulation.
#[derive(Debug, Clone)]
pub struct Acc {
    pub class: Class,
    pub count: u64,
    /// Addresses of the first instructions seen using the feature.
    pub evidence: Vec<u64>,
}

/// Features found, with counts and evidence addresses.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub features: BTreeMap<FeatureId, Acc>,
    pub bytes_decoded: u64,
    pub instructions: u64,
}

impl Tally {
    #[inline]
    pub fn record(&mut self, insn: &Instruction) {
        self.instructions += 1;
        self.bytes_decoded += insn.len() as u64;
        for f in features::classify(insn) {
            let acc = self.features.entry(f.id).or_insert(Acc { class: f.class, count: 0, evidence: Vec::new() });
            acc.count += 1;
            // The most demanding class wins: faults < silent < hint in `Class`'s order.
            acc.class = acc.class.min(f.class);
            if acc.evidence.len() < EVIDENCE_PER_FEATURE {
                acc.evidence.push(insn.ip());
            }
        }
    }

    pub fn merge(&mut self, other: Tally) {
        self.bytes_decoded += other.bytes_decoded;
        self.instructions += other.instructions;
        for (id, acc) in other.features {
            match self.features.get_mut(&id) {
                None => {
                    self.features.insert(id, acc);
                }
                Some(a) => {
                    a.count += acc.count;
                    a.class = a.class.min(acc.class);
                    for e in acc.evidence {
                        if a.evidence.len() < EVIDENCE_PER_FEATURE {
                            a.evidence.push(e);
                        }
                    }
                }
            }
        }
    }
}

/// Counters describing what the analysis did and could not do.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct PathStats {
    pub roots: u64,
    pub roots_thread_pc: u64,
    pub roots_stack: u64,
    pub roots_data: u64,
    pub roots_code_refs: u64,
    pub jump_tables: u64,
    pub got_targets: u64,
    /// Register-indirect call/jmp sites whose target could not be determined (the blind spot).
    pub indirect_unresolved: u64,
    /// PLT/GOT slots still pointing at the lazy-binding stub, resolved from symbol tables.
    pub lazy_slots: u64,
    /// Of those, IFUNC symbols whose every candidate was followed.
    pub lazy_ifuncs: u64,
    /// IFUNC symbols resolved from the defining object's own IRELATIVE slot instead.
    pub lazy_ifuncs_bound: u64,
    /// IFUNC symbols whose resolver was run on frozen data (guards.rs `run_resolver`).
    pub lazy_ifuncs_evaluated: u64,
    /// Bytes of anonymous executable memory (JIT) decoded in full.
    pub jit_bytes: u64,
    /// Branch targets outside every known code region.
    pub targets_outside_code: u64,
    pub objects_entered: u64,
    /// Exported functions of dlopen'ed objects (plugins, Python extension modules).
    pub roots_dlopen: u64,
    /// Conditional branches decided from frozen capability data (one side not followed).
    pub guards_decided: u64,
    /// Decided branches whose other side was followed after all, because another path
    /// joined the straight-line code the decision was computed on.
    pub guards_reopened: u64,
    /// Functions behind a closed gate (guards.rs `GATES`) and how often the walk stopped
    /// at one.
    pub gated_functions: u64,
    /// Objects whose CPU dispatch has not run yet (libgcrypt's `hw_features` = 0): walked,
    /// their features not counted.
    pub undetected_dispatch: u64,
    pub gated_stops: u64,
    /// Code addresses taken into a register and overwritten before any use (not roots).
    pub code_refs_dead: u64,
    /// Address-taken roots (not function starts) whose straight-line bytes reach an
    /// undecodable instruction: data kept in `.text` (constant tables), not counted.
    pub data_in_text: u64,
}

/// Linear sweep of every code region. Uses up to `threads` threads.
pub fn full_scan(image: &Image, threads: usize) -> Tally {
    let regions: Vec<usize> = (0..image.regions.len()).collect();
    let total: u64 = image.code_bytes();
    // Split regions into chunks of roughly equal size.
    let n = threads.max(1);
    let mut buckets: Vec<Vec<(usize, usize, usize)>> = vec![Vec::new(); n];
    let per = (total as usize).div_ceil(n).max(1);
    let (mut b, mut filled) = (0, 0usize);
    for r in regions {
        let len = image.regions[r].bytes().len();
        let mut off = 0;
        while off < len {
            let take = (per - filled).min(len - off).max(1);
            buckets[b].push((r, off, off + take));
            off += take;
            filled += take;
            if filled >= per && b + 1 < n {
                b += 1;
                filled = 0;
            }
        }
    }
    let tallies: Vec<Tally> = std::thread::scope(|s| {
        let hs: Vec<_> = buckets
            .into_iter()
            .map(|chunks| {
                s.spawn(move || {
                    let mut t = Tally::default();
                    for (r, from, to) in chunks {
                        sweep(image, r, from, to, &mut t);
                    }
                    t
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    });
    let mut t = Tally::default();
    for x in tallies {
        t.merge(x);
    }
    t
}

/// Decodes `[from, to)` of a region linearly (an instruction may run past `to`).
fn sweep(image: &Image, r: usize, from: usize, to: usize, t: &mut Tally) {
    let region = &image.regions[r];
    let bytes = region.bytes();
    let mut dec = Decoder::with_ip(64, &bytes[from..], region.start + from as u64, DecoderOptions::NONE);
    let mut insn = Instruction::default();
    let end_ip = region.start + to as u64;
    while dec.can_decode() && dec.ip() < end_ip {
        dec.decode_out(&mut insn);
        if insn.is_invalid() {
            continue; // the decoder already advanced past the bad byte(s)
        }
        t.record(&insn);
    }
}

/// Options for path tracking.
#[derive(Debug, Clone)]
pub struct PathOptions {
    /// Follow everything an address-taken word in an entered object's data points to.
    pub data_roots: bool,
    /// Scan stacks for return addresses and function pointers.
    pub stack_roots: bool,
    /// Keep what is needed to explain reachability ([`PathResult::explain`]).
    pub explain: bool,
    /// Data words never used as roots: table entries (Python method tables, ufunc loop
    /// arrays) of functions the workload cannot name (python.rs).
    pub skip_data_words: HashSet<u64>,
    /// dlopen'ed objects (indices into `Image::objects`) whose exports are not roots:
    /// Python extension modules and the libraries they need, whose entry points
    /// python.rs gives as roots instead.
    pub skip_export_roots: HashSet<usize>,
    /// Decide conditional branches on frozen capability data (guards.rs).
    pub guards: bool,
}

impl Default for PathOptions {
    fn default() -> Self {
        PathOptions { data_roots: true, stack_roots: true, explain: false, skip_data_words: HashSet::new(), skip_export_roots: HashSet::new(), guards: true }
    }
}

/// Extra roots given by the caller (e.g. Python-aware analysis), with a reason.
#[derive(Debug, Clone)]
pub struct Root {
    pub addr: u64,
    pub why: String,
}

struct Walker<'a, M: Memory> {
    image: &'a Image,
    mem: &'a M,
    opts: &'a PathOptions,
    visited: Vec<Vec<u64>>,
    queue: Vec<(u64, Src)>,
    /// Why the walk is at the current instruction/word: recorded with every push.
    src: Src,
    /// How each decoded block was reached (block start → source).
    parents: HashMap<u64, Src>,
    /// Decoded blocks as (start, end).
    blocks: Vec<(u64, u64)>,
    cur_end: u64,
    entered: Vec<bool>,
    tally: Tally,
    /// Regions whose features are not counted (libgcrypt before its hardware detection).
    quiet: Vec<bool>,
    quiet_tally: Tally,
    stats: PathStats,
    warnings: Vec<String>,
    lazy_symbols: HashSet<String>,
    unresolved_symbols: HashSet<String>,
    /// Entries of functions behind a closed gate, sorted.
    gated: Vec<u64>,
    /// Decided branches: branch address → (start of the straight-line run the decision
    /// was computed on, the side not followed).
    decided: BTreeMap<u64, (Path, u64)>,
    /// Addresses taken by `lea`, `mov reg,imm`, `push imm`: code, or data kept in `.text`.
    address_taken: HashSet<u64>,
    /// What direct callees return when run on frozen data alone (memoised
    /// [`crate::guards::run_resolver`]): `None` when it depends on anything else.
    returns: HashMap<u64, Option<u64>>,
    /// Register state carried into a forward branch target not yet decoded: (target,
    /// branch) → (state at the branch, start of the run it was computed on).
    carried: HashMap<(u64, u64), (crate::guards::Consts, Path)>,
    /// Lowest run start and highest branch of any state ever carried: joins outside it
    /// touch none.
    carried_span: (u64, u64),
    /// The state a target was first decoded with, when it was carried in.
    carried_in: HashMap<u64, crate::guards::Consts>,
    info: iced_x86::InstructionInfoFactory,
}

/// The straight-line pieces a run took to an instruction, in order: `(start, last
/// address)`; pieces after the first begin at a forward branch target the register state
/// was carried into.
type Path = Vec<(u64, u64)>;

/// `path` with its last piece ending at `ip`.
fn path_to(path: &Path, ip: u64) -> Path {
    let mut p = path.clone();
    if let Some(last) = p.last_mut() {
        last.1 = ip;
    }
    p
}

/// Whether a path that joins at `at` invalidates what was computed along `path`: `at`
/// lies on one of its pieces after the run's own start (a run's first instruction is
/// entered with nothing known anyway; a carried piece's first is not).
fn path_holds(path: &Path, at: u64) -> bool {
    path.iter().enumerate().any(|(i, &(s, e))| (s < at || (i > 0 && s == at)) && at <= e)
}

/// Why an address was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Src {
    /// A branch, call, code reference or resolved pointer in the instruction at this address.
    Code(u64),
    /// A word of an entered object's data at this address.
    Data(u64),
    Root(RootKind),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKind {
    ThreadPc(i32),
    Stack(i32),
    Entry,
    InitArray,
    /// An exported function of an object loaded with dlopen.
    Dlopen,
    /// Index into the caller's extra roots.
    Given(usize),
    Extra,
}

/// Result of path tracking.
pub struct PathResult {
    pub tally: Tally,
    pub stats: PathStats,
    pub warnings: Vec<String>,
    pub explain: Explainer,
}

/// Answers "why is this instruction reachable?" with a chain back to a root.
pub struct Explainer {
    parents: HashMap<u64, Src>,
    blocks: Vec<(u64, u64)>,
}

impl Explainer {
    /// The chain of sources from `addr` back to a root (at most `max` steps).
    pub fn chain(&self, mut addr: u64, max: usize) -> Vec<(u64, Src)> {
        let mut out = Vec::new();
        for _ in 0..max {
            // The decoded block containing addr: the latest start <= addr whose end is past it.
            let i = self.blocks.partition_point(|b| b.0 <= addr);
            let Some(&(start, _)) = self.blocks[..i].iter().rev().take(64).find(|b| addr < b.1.max(b.0 + 1)) else { break };
            let Some(&src) = self.parents.get(&start) else { break };
            out.push((start, src));
            match src {
                Src::Code(from) if from != addr => addr = from,
                _ => break,
            }
        }
        out
    }
}

/// Path tracking from the process's roots.
pub fn path_track<M: Memory>(
    image: &Image,
    threads: &[ThreadState],
    mem: &M,
    extra_roots: &[Root],
    opts: &PathOptions,
) -> PathResult {
    let mut w = Walker {
        image,
        mem,
        opts,
        visited: image.regions.iter().map(|r| vec![0u64; (r.bytes().len() + 63) / 64]).collect(),
        queue: Vec::new(),
        src: Src::Root(RootKind::Extra),
        parents: HashMap::new(),
        blocks: Vec::new(),
        cur_end: 0,
        entered: vec![false; image.objects.len()],
        tally: Tally::default(),
        quiet: vec![false; image.regions.len()],
        quiet_tally: Tally::default(),
        stats: PathStats::default(),
        warnings: Vec::new(),
        lazy_symbols: HashSet::new(),
        unresolved_symbols: HashSet::new(),
        gated: Vec::new(),
        decided: BTreeMap::new(),
        returns: HashMap::new(),
        carried: HashMap::new(),
        carried_in: HashMap::new(),
        carried_span: (u64::MAX, 0),
        address_taken: HashSet::new(),
        info: iced_x86::InstructionInfoFactory::new(),
    };
    if opts.guards {
        let closed = crate::guards::closed_gates(&image.objects, mem);
        w.gated = closed.iter().map(|g| g.0).collect();
        w.stats.gated_functions = w.gated.len() as u64;
        if let Some((_, why)) = closed.first() {
            w.warnings.push(format!("{} functions not followed: {why}", closed.len()));
        }
        // libgcrypt with its hardware features not yet detected: whatever it runs, it
        // selects after detecting the CPU it then runs on, so its CPU-specific code is no
        // requirement of this process as it is now. Still walked (its calls into other
        // objects count), its own features not.
        for (o, obj) in image.objects.iter().enumerate() {
            if let Some((x, 0)) = crate::guards::gcrypt_hw_features(image, o, mem) {
                for (r, region) in image.regions.iter().enumerate() {
                    w.quiet[r] |= region.object == Some(o);
                }
                w.stats.undetected_dispatch += 1;
                let file = obj.path.rsplit('/').next().unwrap_or(&obj.path);
                w.warnings.push(format!(
                    "{file}: hardware features not detected yet (hw_features at {x:#x} = 0): its CPU-specific code is chosen on the host it runs on then; its features not counted"
                ));
            }
        }
    }
    // Roots: thread PCs and stacks.
    for t in threads {
        w.src = Src::Root(RootKind::ThreadPc(t.tid));
        if w.push(t.regs.rip) {
            w.stats.roots_thread_pc += 1;
        }
        if opts.stack_roots {
            w.src = Src::Root(RootKind::Stack(t.tid));
            w.stack_roots(t);
        }
    }
    // Entry point and main of the executable; init/fini arrays of every object.
    for o in &image.objects {
        w.src = Src::Root(RootKind::Entry);
        if o.is_main {
            w.push(o.info.entry.wrapping_add(o.bias));
            if let Some(m) = o.info.main {
                w.push(m.wrapping_add(o.bias));
            }
        }
        for a in &o.info.init_arrays {
            w.src = Src::Root(RootKind::InitArray);
            w.data_words(a.addr.wrapping_add(o.bias), a.size, false);
        }
    }
    // Objects loaded with dlopen (outside the executable's DT_NEEDED closure) are
    // entered through dlsym, a register-indirect call: their exported functions are roots.
    for i in dlopened(image) {
        if opts.skip_export_roots.contains(&i) {
            continue;
        }
        let o = &image.objects[i];
        w.src = Src::Root(RootKind::Dlopen);
        let mut exports: Vec<u64> = o.info.exports.values().map(|&(a, _)| a.wrapping_add(o.bias)).collect();
        exports.sort_unstable();
        for a in exports {
            w.push(a);
            w.stats.roots_dlopen += 1;
        }
    }
    for (i, r) in extra_roots.iter().enumerate() {
        w.src = Src::Root(RootKind::Given(i));
        w.push(r.addr);
    }
    // JIT code (anonymous executable memory) is reached through register-indirect calls
    // the walk cannot follow: decode it whole.
    for (i, r) in image.regions.iter().enumerate() {
        if r.object.is_none() && r.name != "[vdso]" {
            w.stats.jit_bytes += r.bytes().len() as u64;
            sweep(image, i, 0, r.bytes().len(), &mut w.tally);
        }
    }
    w.run();
    let explain = Explainer { parents: std::mem::take(&mut w.parents), blocks: { let mut b = std::mem::take(&mut w.blocks); b.sort_unstable(); b } };
    if w.stats.jit_bytes > 0 {
        w.warnings.push(format!(
            "{} KiB of anonymous executable memory (JIT code) decoded in full: it has no symbols to follow",
            w.stats.jit_bytes / 1024
        ));
    }
    if w.stats.lazy_slots > 0 {
        w.warnings.push(format!(
            "lazy binding: {} PLT slots unresolved; resolved from symbol tables ({} IFUNC symbols followed to every candidate: {})",
            w.stats.lazy_slots,
            w.stats.lazy_ifuncs,
            {
                let mut v: Vec<_> = w.lazy_symbols.iter().cloned().collect();
                v.sort();
                v.truncate(8);
                v.join(", ")
            }
        ));
    }
    if !w.unresolved_symbols.is_empty() {
        let mut v: Vec<_> = w.unresolved_symbols.iter().cloned().collect();
        v.sort();
        v.truncate(8);
        w.warnings.push(format!("{} unbound PLT symbols not found in any loaded object: {}", w.unresolved_symbols.len(), v.join(", ")));
    }
    w.stats.objects_entered = w.entered.iter().filter(|&&e| e).count() as u64;
    w.tally.instructions += w.quiet_tally.instructions;
    w.tally.bytes_decoded += w.quiet_tally.bytes_decoded;
    PathResult { tally: w.tally, stats: w.stats, warnings: w.warnings, explain }
}

impl<M: Memory> Walker<'_, M> {
    /// Queues an address if it is code. Returns whether it was.
    fn push(&mut self, addr: u64) -> bool {
        if self.image.region_of(addr).is_some() {
            self.queue.push((addr, self.src));
            self.stats.roots += 1;
            true
        } else {
            self.stats.targets_outside_code += 1;
            false
        }
    }

    fn is_code(&self, addr: u64) -> bool {
        self.image.region_of(addr).is_some()
    }

    /// Words of live memory `[addr, addr+size)` that point at code become roots.
    fn data_words(&mut self, addr: u64, size: u64, count_as_data: bool) {
        const CHUNK: usize = 1 << 20;
        let mut off = 0u64;
        let mut buf = vec![0u8; CHUNK.min(size as usize)];
        while off < size {
            let n = ((size - off) as usize).min(CHUNK);
            let got = self.mem.read(addr.wrapping_add(off), &mut buf[..n]);
            for c in buf[..got].chunks_exact(8) {
                let v = u64::from_le_bytes(c.try_into().expect("8 bytes"));
                if v > 0x1000 && self.is_code(v) {
                    let word = addr.wrapping_add(off).wrapping_add(c.as_ptr() as u64 - buf.as_ptr() as u64);
                    if count_as_data && self.opts.skip_data_words.contains(&word) {
                        continue;
                    }
                    let src = if count_as_data { Src::Data(word) } else { self.src };
                    self.queue.push((v, src));
                    self.stats.roots += 1;
                    if count_as_data {
                        self.stats.roots_data += 1;
                    }
                }
            }
            if got < n {
                break;
            }
            off += n as u64;
        }
    }

    fn stack_roots(&mut self, t: &ThreadState) {
        for c in t.stack.chunks_exact(8) {
            let v = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            let Some(r) = self.image.region_of(v) else { continue };
            let symbol_start = self.is_function_start(r, v);
            if symbol_start || self.after_call(r, v) {
                self.queue.push((v, self.src));
                self.stats.roots += 1;
                self.stats.roots_stack += 1;
            }
        }
    }

    fn is_function_start(&self, r: usize, addr: u64) -> bool {
        self.image.regions[r]
            .object
            .is_some_and(|o| self.image.objects[o].info.is_function_start(addr.wrapping_sub(self.image.objects[o].bias)))
    }

    /// Whether the code after a call at `ip` cannot be its return point: the return
    /// address (after any padding) starts another function, so the callee does not
    /// return (abort, __stack_chk_fail, ...) and the compiler put nothing after it.
    fn call_does_not_return(&self, r: usize, next: u64) -> bool {
        let region = &self.image.regions[r];
        if !region.contains(next) {
            return true;
        }
        let bytes = region.bytes();
        let mut off = (next - region.start) as usize;
        let mut d = Decoder::with_ip(64, &bytes[off..], next, DecoderOptions::NONE);
        // Skip up to a few padding instructions (nop forms, int3).
        for _ in 0..4 {
            if self.is_function_start(r, region.start + off as u64) {
                return true;
            }
            let i = d.decode();
            if i.is_invalid() || !(i.mnemonic() == Mnemonic::Nop || i.mnemonic() == Mnemonic::Int3) {
                return false;
            }
            off += i.len();
        }
        false
    }

    /// Whether a call instruction ends exactly at `addr` (a return address).
    fn after_call(&self, r: usize, addr: u64) -> bool {
        let region = &self.image.regions[r];
        let bytes = region.bytes();
        let off = (addr - region.start) as usize;
        [2usize, 3, 5, 6, 7].iter().any(|&k| {
            if k > off {
                return false;
            }
            let mut d = Decoder::with_ip(64, &bytes[off - k..off], addr - k as u64, DecoderOptions::NONE);
            let i = d.decode();
            !i.is_invalid() && i.len() == k && matches!(i.flow_control(), FlowControl::Call | FlowControl::IndirectCall)
        })
    }

    fn enter_object(&mut self, o: usize) {
        if self.entered[o] {
            return;
        }
        self.entered[o] = true;
        if !self.opts.data_roots {
            return;
        }
        let obj = &self.image.objects[o];
        let ranges: Vec<(u64, u64)> = obj.info.data_sections.iter().map(|s| (s.addr.wrapping_add(obj.bias), s.size)).collect();
        for (a, s) in ranges {
            self.data_words(a, s, true);
        }
    }

    fn run(&mut self) {
        let mut insn = Instruction::default();
        while let Some((addr, src)) = self.queue.pop() {
            let carry = match src {
                Src::Code(branch) if !self.carried.is_empty() => self.carried.remove(&(addr, branch)),
                _ => None,
            };
            let Some(r) = self.image.region_of(addr) else { continue };
            if self.is_gated(addr) {
                continue;
            }
            if self.is_visited(r, addr) {
                // Arriving with at least what the first visit was entered with: every
                // decision from here on holds for this path too.
                let same = carry.as_ref().zip(self.carried_in.get(&addr)).is_some_and(|((now, _), first)| now.covers(first));
                if !same {
                    self.joined(addr, carry.as_ref().map(|c| &c.0));
                }
                continue;
            }
            if let Some((c, _)) = &carry {
                self.carried_in.insert(addr, c.clone());
            }
            if self.opts.explain {
                self.parents.entry(addr).or_insert(src);
            }
            if let Some(o) = self.image.regions[r].object {
                self.enter_object(o);
            }
            self.cur_end = addr;
            let maybe_data = (matches!(src, Src::Data(_)) || self.address_taken.contains(&addr)) && !self.is_function_start(r, addr);
            let mut refs = HeldRefs::default();
            self.block(r, addr, &mut insn, maybe_data, &mut refs, carry);
            // The path ended: whatever code address a register still holds may be used
            // by the code that runs next.
            self.release_refs(&mut refs);
            if self.opts.explain {
                self.blocks.push((addr, self.cur_end));
            }
        }
    }

    fn is_gated(&mut self, addr: u64) -> bool {
        let gated = !self.gated.is_empty() && self.gated.binary_search(&addr).is_ok();
        self.stats.gated_stops += u64::from(gated);
        gated
    }

    /// Another path reaches `at`, already decoded. A branch decided on values computed
    /// in straight-line code that started before `at` may go the other way for this
    /// path (its registers came from elsewhere): follow the side not taken.
    ///
    /// `state`: what the joining path knows at `at`. A decision on the straight line from
    /// `at` that this state decides the same way stays decided.
    fn joined(&mut self, at: u64, state: Option<&crate::guards::Consts>) {
        // A state carried from a run this path joins before the branch no longer holds
        // for every way into the target.
        if !self.carried.is_empty() && (self.carried_span.0..=self.carried_span.1).contains(&at) {
            self.carried.retain(|_, (_, path)| !path_holds(path, at));
        }
        if self.decided.is_empty() {
            return;
        }
        let reopen: Vec<(u64, u64)> = self
            .decided
            .range(at..at.saturating_add(1 << 16))
            .filter(|(_, d)| path_holds(&d.0, at))
            .filter(|&(&ip, d)| !state.is_some_and(|c| d.0.last().is_some_and(|p| p.0 <= at) && self.decides_alike(at, c, ip, d.1)))
            .map(|(&ip, d)| (ip, d.1))
            .collect();
        for (ip, other) in reopen {
            self.decided.remove(&ip);
            self.stats.guards_reopened += 1;
            self.queue.push((other, Src::Code(ip)));
        }
    }

    /// Whether a path entering the straight line at `at` with `state` reaches the branch
    /// at `ip` knowing enough to decide it as it was decided (not towards `other`). Only
    /// plain instructions and conditional branches may lie between; anything else: no.
    fn decides_alike(&self, at: u64, state: &crate::guards::Consts, ip: u64, other: u64) -> bool {
        if ip < at {
            return false;
        }
        let mut c = state.clone();
        // Up to and including the branch (at most 15 bytes long).
        for insn in crate::guards::decode_run(self.image, at, (ip - at) as usize + 15) {
            if insn.ip() > ip {
                return false;
            }
            if insn.ip() == ip {
                let taken = other == insn.next_ip();
                return insn.flow_control() == FlowControl::ConditionalBranch && c.decide(insn.condition_code()) == Some(taken);
            }
            match insn.flow_control() {
                FlowControl::Next => c.step(&insn, self.mem, &self.image.frozen),
                FlowControl::ConditionalBranch => {}
                _ => return false,
            }
        }
        false
    }

    fn is_visited(&self, r: usize, addr: u64) -> bool {
        let off = (addr - self.image.regions[r].start) as usize;
        self.visited[r][off / 64] & (1 << (off % 64)) != 0
    }

    fn visited(&mut self, r: usize, addr: u64) -> bool {
        let off = (addr - self.image.regions[r].start) as usize;
        let (w, b) = (off / 64, off % 64);
        let seen = self.visited[r][w] & (1 << b) != 0;
        self.visited[r][w] |= 1 << b;
        seen
    }

    /// Decodes from `addr` until the path ends, queuing every target found.
    ///
    /// `maybe_data`: `addr` is only known as a pointer (a data word, `lea`, immediate) and
    /// starts no function, so it may be a constant table in `.text` (OpenSSL's perlasm
    /// keeps its masks there). Its instructions are held back until the first control
    /// transfer; if an undecodable instruction comes first, every execution from `addr`
    /// would end in SIGILL on any CPU, so a working process never runs it: the held
    /// instructions are dropped and their bytes left unvisited for real code paths.
    fn block(&mut self, r: usize, addr: u64, insn: &mut Instruction, maybe_data: bool, refs: &mut HeldRefs, carry: Option<(crate::guards::Consts, Path)>) {
        let image = self.image;
        let region = &image.regions[r];
        let bytes = region.bytes();
        let off = (addr - region.start) as usize;
        let mut dec = Decoder::with_ip(64, &bytes[off..], addr, DecoderOptions::NONE);
        // What registers were last loaded with, within this block.
        let mut reg_load: RegLoads = RegLoads::default();
        let mut leas: Vec<u64> = Vec::with_capacity(4);
        let mut cmp_bound: Option<u64> = None;
        // The run's register state and where the run began: `addr`, or, for a forward
        // branch target entered with the state at the branch, that branch's run.
        let (mut consts, mut path) = carry.unwrap_or_default();
        let run_start = path.first().map_or(addr, |s| s.0);
        path.push((addr, addr));
        let guards = self.opts.guards;
        let mut held: Vec<Instruction> = Vec::new();
        let mut holding = maybe_data;
        while dec.can_decode() {
            let ip = dec.ip();
            if self.visited(r, ip) {
                self.joined(ip, guards.then_some(&consts));
                break;
            }
            if ip != addr && self.is_gated(ip) {
                break;
            }
            dec.decode_out(insn);
            if insn.is_invalid() {
                if holding {
                    self.stats.data_in_text += 1;
                    for i in held.iter().map(|i| i.ip()).chain([ip]) {
                        let off = (i - region.start) as usize;
                        self.visited[r][off / 64] &= !(1 << (off % 64));
                    }
                    held.clear();
                }
                break;
            }
            self.cur_end = insn.next_ip();
            if holding && insn.flow_control() == FlowControl::Next && insn.mnemonic() != Mnemonic::Hlt {
                held.push(*insn);
            } else {
                if holding {
                    holding = false;
                    for i in held.drain(..) {
                        self.record(r, &i);
                    }
                }
                self.record(r, insn);
            }
            self.src = Src::Code(ip);
            let flow = insn.flow_control();
            if !matches!(flow, FlowControl::Next | FlowControl::ConditionalBranch) && refs.any() {
                if flow == FlowControl::UnconditionalBranch && is_near(insn) {
                    self.follow_refs(insn.near_branch_target(), refs);
                } else {
                    self.release_refs(refs);
                }
            }
            match flow {
                FlowControl::Next => {
                    if insn.mnemonic() == Mnemonic::Hlt {
                        return;
                    }
                    if refs.any() {
                        self.refs_step(insn, refs, &consts);
                    }
                    if guards {
                        consts.step(insn, self.mem, &image.frozen);
                    }
                    self.note_operands(insn, &mut reg_load, &mut leas, &mut cmp_bound, refs);
                }
                FlowControl::Return | FlowControl::Exception => return,
                FlowControl::Interrupt => {
                    consts.clear();
                    if insn.code() == Code::Int3 || insn.code() == Code::Int1 {
                        return;
                    }
                }
                FlowControl::UnconditionalBranch => {
                    if is_near(insn) {
                        if guards {
                            self.carry(insn.near_branch_target(), ip, &consts, &path);
                        }
                        self.push(insn.near_branch_target());
                    }
                    return;
                }
                FlowControl::ConditionalBranch => {
                    // A decision is reopened by a join within 64 KiB after its run's start.
                    let decided = if guards && ip.wrapping_sub(run_start) < 1 << 16 { consts.decide(insn.condition_code()) } else { None };
                    if decided != Some(false) && refs.any() {
                        self.release_refs(refs);
                    }
                    match decided {
                        Some(true) => {
                            self.stats.guards_decided += 1;
                            self.decided.insert(ip, (path_to(&path, ip), insn.next_ip()));
                            if is_near(insn) {
                                self.carry(insn.near_branch_target(), ip, &consts, &path);
                                self.push(insn.near_branch_target());
                            }
                            return;
                        }
                        Some(false) => {
                            self.stats.guards_decided += 1;
                            if is_near(insn) {
                                self.decided.insert(ip, (path_to(&path, ip), insn.near_branch_target()));
                            }
                        }
                        None => {
                            if is_near(insn) {
                                self.carry(insn.near_branch_target(), ip, &consts, &path);
                                self.push(insn.near_branch_target());
                            }
                        }
                    }
                }
                FlowControl::Call => {
                    consts.clear();
                    if is_near(insn) {
                        let target = insn.near_branch_target();
                        self.push(target);
                        if guards {
                            // A callee whose result depends on frozen data alone (OpenSSL's
                            // `ossl_rsaz_avx512ifma_eligible`: load the cap word, and, cmp,
                            // cmove, ret) returns the same value on every call: the caller's
                            // `test eax,eax; je` is decided like an inline guard.
                            let (image, mem) = (self.image, self.mem);
                            if let Some(v) = *self.returns.entry(target).or_insert_with(|| crate::guards::run_resolver(image, mem, target)) {
                                consts.returned(v);
                            }
                        }
                        if self.call_does_not_return(r, insn.next_ip()) {
                            return;
                        }
                    }
                }
                FlowControl::XbeginXabortXend => {
                    consts.clear();
                    if is_near(insn) {
                        self.push(insn.near_branch_target());
                    }
                }
                FlowControl::IndirectCall | FlowControl::IndirectBranch => {
                    consts.clear();
                    let resolved = self.indirect(insn, &reg_load, &leas, cmp_bound, r);
                    if !resolved {
                        self.stats.indirect_unresolved += 1;
                    }
                    if insn.flow_control() == FlowControl::IndirectBranch || self.call_does_not_return(r, insn.next_ip()) {
                        return;
                    }
                }
            }
        }
        // Ended at code already decoded, a gate or the region's end: real code after all.
        for i in held.drain(..) {
            self.record(r, &i);
        }
    }

    /// Hands the run's register state on to a forward branch target that no path has
    /// decoded yet (OpenSSL: `mov r11d,[cap]; cmp rsi,rdx; jne L` … `L: and r11d,0x80100;
    /// cmp; je mulx`). Sound with [`Self::joined`]: a pending state and every decision
    /// made with it keep the straight-line pieces of their path ([`Path`]); another path
    /// joining any of them drops the state or reopens the decision (forward targets within
    /// 64 KiB of the run's start only, so the join lookup finds them). A target already
    /// decoded keeps the state it was decoded with.
    fn carry(&mut self, target: u64, branch: u64, consts: &crate::guards::Consts, path: &Path) {
        let run_start = path.first().map_or(branch, |s| s.0);
        if consts.any() && target > branch && target.wrapping_sub(run_start) < 1 << 16 && !self.image.region_of(target).is_some_and(|r| self.is_visited(r, target)) {
            self.carried.insert((target, branch), (consts.clone(), path_to(path, branch)));
            self.carried_span = (self.carried_span.0.min(run_start), self.carried_span.1.max(branch));
        }
    }

    fn record(&mut self, r: usize, insn: &Instruction) {
        if self.quiet[r] {
            self.quiet_tally.record(insn);
        } else {
            self.tally.record(insn);
        }
    }

    /// Queues the code addresses still held in registers.
    fn release_refs(&mut self, refs: &mut HeldRefs) {
        for (a, src) in refs.0.iter_mut().filter_map(Option::take) {
            self.queue.push((a, src));
            self.stats.roots += 1;
        }
    }

    /// An unconditional jump ends the straight-line run while registers still hold code
    /// addresses: look on into the straight-line code at the jump's target, which every
    /// execution of this path runs next, so a register overwritten there before any read
    /// is no root (the candidate a `cmov` did not pick: ld.so's `lea xsave; lea xsavec;
    /// cmovne; mov [got+16]; jmp`). A read, any control transfer, an instruction that
    /// cannot be decoded or 32 instructions end the look-ahead and release what is held.
    fn follow_refs(&mut self, target: u64, refs: &mut HeldRefs) {
        if let Some(r) = self.image.region_of(target) {
            let region = &self.image.regions[r];
            let off = (target - region.start) as usize;
            let mut dec = Decoder::with_ip(64, &region.bytes()[off..], target, DecoderOptions::NONE);
            let mut insn = Instruction::default();
            let none = crate::guards::Consts::default();
            for _ in 0..32 {
                if !refs.any() || !dec.can_decode() {
                    break;
                }
                dec.decode_out(&mut insn);
                if insn.is_invalid() || insn.flow_control() != FlowControl::Next || insn.mnemonic() == Mnemonic::Hlt {
                    break;
                }
                self.refs_step(&insn, refs, &none);
            }
        }
        self.release_refs(refs);
    }

    /// A code address taken by `lea`/`mov imm` into a register becomes a root when the
    /// register is read (it may be called, stored, passed on) or at the end of the
    /// straight-line run; overwritten unread, it is dead and never one. So the
    /// candidates a selector loads and then replaces by a decided branch or conditional
    /// move (ld.so's choice of lazy-binding trampoline, IFUNC resolvers) are not roots.
    fn refs_step(&mut self, insn: &Instruction, refs: &mut HeldRefs, consts: &crate::guards::Consts) {
        use iced_x86::OpAccess;
        if matches!(insn.mnemonic(), Mnemonic::Syscall | Mnemonic::Sysenter | Mnemonic::Int | Mnemonic::Int1 | Mnemonic::Int3 | Mnemonic::Into) {
            // The kernel (or a signal handler) sees every register.
            self.release_refs(refs);
            return;
        }
        if insn.condition_code() != iced_x86::ConditionCode::None
            && insn.op0_kind() == OpKind::Register
            && insn.op1_kind() == OpKind::Register
            && matches!(insn.op0_register().size(), 4 | 8)
        {
            // cmovcc reg, reg
            if let (Some(taken), Some(d), Some(s)) =
                (consts.decide(insn.condition_code()), HeldRefs::index(insn.op0_register()), HeldRefs::index(insn.op1_register()))
            {
                if taken {
                    refs.0[d] = refs.0[s];
                }
                return;
            }
        }
        let mut escaped = Vec::new();
        let info = self.info.info(insn);
        for u in info.used_registers() {
            let Some(i) = HeldRefs::index(u.register()) else { continue };
            if refs.0[i].is_none() {
                continue;
            }
            let full_write = matches!(u.register().size(), 4 | 8);
            match u.access() {
                OpAccess::Write if full_write => {
                    refs.0[i] = None;
                    self.stats.code_refs_dead += 1;
                }
                OpAccess::None | OpAccess::NoMemAccess => {}
                _ => escaped.extend(refs.0[i].take()),
            }
        }
        for (a, src) in escaped {
            self.queue.push((a, src));
            self.stats.roots += 1;
        }
    }

    /// Records code addresses taken by LEA / MOV imm, and loads used by later indirect jumps.
    fn note_operands(
        &mut self,
        insn: &Instruction,
        reg_load: &mut RegLoads,
        leas: &mut Vec<u64>,
        cmp_bound: &mut Option<u64>,
        refs: &mut HeldRefs,
    ) {
        match insn.mnemonic() {
            Mnemonic::Lea if insn.is_ip_rel_memory_operand() => {
                let a = insn.ip_rel_memory_address();
                if self.is_code(a) {
                    self.address_taken.insert(a);
                    self.stats.roots_code_refs += 1;
                    refs.hold(insn.op0_register(), a, self.src);
                } else {
                    leas.push(a);
                    if leas.len() > 4 {
                        leas.remove(0);
                    }
                }
            }
            Mnemonic::Mov => {
                if insn.op_count() == 2 && insn.op0_kind() == OpKind::Register {
                    let dst = insn.op0_register().full_register();
                    if insn.op1_kind() == OpKind::Memory && insn.is_ip_rel_memory_operand() {
                        reg_load.set(dst, Some(insn.ip_rel_memory_address()));
                    } else if matches!(insn.op1_kind(), OpKind::Immediate32 | OpKind::Immediate64 | OpKind::Immediate32to64) {
                        let v = insn.immediate(1);
                        if v > 0x10000 && self.is_code(v) {
                            self.address_taken.insert(v);
                            self.stats.roots_code_refs += 1;
                            refs.hold(insn.op0_register(), v, self.src);
                        }
                    } else {
                        reg_load.set(dst, None);
                    }
                }
            }
            Mnemonic::Push if matches!(insn.op0_kind(), OpKind::Immediate32to64) => {
                let v = insn.immediate(0);
                if v > 0x10000 && self.is_code(v) {
                    self.address_taken.insert(v);
                    self.queue.push((v, self.src));
                    self.stats.roots += 1;
                    self.stats.roots_code_refs += 1;
                }
            }
            Mnemonic::Cmp if matches!(insn.op1_kind(), OpKind::Immediate8 | OpKind::Immediate32 | OpKind::Immediate8to32 | OpKind::Immediate8to64 | OpKind::Immediate32to64 | OpKind::Immediate16 | OpKind::Immediate8to16) => {
                *cmp_bound = Some(insn.immediate(1));
            }
            _ => {}
        }
    }

    /// Resolves an indirect call/jmp. Returns whether any target was found.
    fn indirect(
        &mut self,
        insn: &Instruction,
        reg_load: &RegLoads,
        leas: &[u64],
        cmp_bound: Option<u64>,
        r: usize,
    ) -> bool {
        if insn.op0_kind() == OpKind::Memory {
            if insn.is_ip_rel_memory_operand() {
                return self.through_slot(insn.ip_rel_memory_address());
            }
            // Absolute jump table: jmp [index*8 + table] (non-PIC code).
            if insn.memory_base() == Register::None && insn.memory_index_scale() == 8 && insn.memory_displacement64() > 0x1000 {
                return self.abs_table(insn.memory_displacement64(), cmp_bound, r);
            }
            return false;
        }
        if insn.op0_kind() != OpKind::Register {
            return false;
        }
        let reg = insn.op0_register().full_register();
        if let Some(slot) = reg_load.get(reg) {
            if self.through_slot(slot) {
                return true;
            }
        }
        // PIC jump table: lea base,[rip+T]; movsxd r,[base+idx*4]; add r,base; jmp r.
        if insn.flow_control() == FlowControl::IndirectBranch {
            let mut found = false;
            for &t in leas.iter().rev().take(2) {
                found |= self.rel_table(t, cmp_bound, r);
                if found {
                    break;
                }
            }
            return found;
        }
        false
    }

    /// Follows a pointer stored in memory (GOT slot, function pointer variable).
    fn through_slot(&mut self, slot: u64) -> bool {
        let Some(target) = self.mem.read_u64(slot) else { return false };
        self.stats.got_targets += 1;
        // A lazily bound slot still points at its PLT stub: resolve the symbol instead.
        if let Some(o) = self.image.object_of(slot).or_else(|| self.object_with_data(slot)) {
            let in_plt = o.info.plt_sections.iter().any(|s| {
                let a = s.addr.wrapping_add(o.bias);
                (a..a.wrapping_add(s.size)).contains(&target)
            });
            if in_plt {
                if let Some(name) = o.info.got_slots.get(&slot.wrapping_sub(o.bias)).cloned() {
                    return self.resolve_symbol(&name);
                }
            }
        }
        self.push(target)
    }

    fn object_with_data(&self, addr: u64) -> Option<&crate::image::Object> {
        self.image.objects.iter().find(|o| {
            o.info.loads.iter().any(|l| {
                let a = l.vaddr.wrapping_add(o.bias);
                (a..a.wrapping_add(l.memsz)).contains(&addr)
            })
        })
    }

    /// Resolves a lazily bound symbol through the loaded objects' dynamic symbol tables
    /// (executable first, then libraries in load order). IFUNCs: the target the same
    /// resolver already returned in this process, when the defining object calls the
    /// function itself through an IRELATIVE slot (glibc's string functions: the resolver
    /// reads only the CPU features, frozen at startup, so a later lazy resolution returns
    /// the same), else the resolver's result computed on frozen data; otherwise follow the
    /// resolver and so every candidate it can return.
    fn resolve_symbol(&mut self, name: &str) -> bool {
        self.stats.lazy_slots += 1;
        let image = self.image;
        let mut order: Vec<usize> = (0..image.objects.len()).collect();
        order.sort_by_key(|&i| !image.objects[i].is_main);
        for i in order {
            let o = &image.objects[i];
            if let Some(&(addr, ifunc)) = o.info.exports.get(name) {
                let a = addr.wrapping_add(o.bias);
                if ifunc {
                    if let Some(&slot) = o.info.irelative.get(&addr) {
                        if let Some(t) = self.mem.read_u64(slot.wrapping_add(o.bias)).filter(|&t| self.is_code(t) && t != a) {
                            self.stats.lazy_ifuncs_bound += 1;
                            return self.push(t);
                        }
                    }
                    if self.opts.guards {
                        if let Some(t) = crate::guards::run_resolver(image, self.mem, a).filter(|&t| self.is_code(t) && t != a) {
                            self.stats.lazy_ifuncs_evaluated += 1;
                            return self.push(t);
                        }
                    }
                    self.stats.lazy_ifuncs += 1;
                    self.lazy_symbols.insert(name.to_string());
                    // The resolver's code takes the address of every candidate (LEA),
                    // which the walk turns into roots.
                }
                return self.push(a);
            }
        }
        self.unresolved_symbols.insert(name.to_string());
        false
    }

    /// PC-relative jump table: 32-bit entries, each an offset from the table's base.
    fn rel_table(&mut self, base: u64, bound: Option<u64>, r: usize) -> bool {
        self.jump_table(base, 4, bound, r, |mem, at| mem.read_i32(at).map(|e| base.wrapping_add(e as i64 as u64)))
    }

    /// Absolute jump table: 64-bit entries, each a code address (non-PIC code).
    fn abs_table(&mut self, base: u64, bound: Option<u64>, r: usize) -> bool {
        self.jump_table(base, 8, bound, r, |mem, at| mem.read_u64(at))
    }

    /// Reads entries until one leaves the jump's region (or the `cmp` bound is reached),
    /// queuing each target.
    fn jump_table(&mut self, base: u64, stride: u64, bound: Option<u64>, r: usize, entry: impl Fn(&M, u64) -> Option<u64>) -> bool {
        let limit = bound.map(|b| b.saturating_add(1)).unwrap_or(1024).min(4096);
        let region = &self.image.regions[r];
        let (rs, re) = (region.start, region.end);
        let mut n = 0;
        for k in 0..limit {
            let Some(t) = entry(self.mem, base.wrapping_add(stride * k)) else { break };
            if !(rs..re).contains(&t) {
                break;
            }
            self.queue.push((t, self.src));
            n += 1;
        }
        if n > 0 {
            self.stats.jump_tables += 1;
        }
        n > 0
    }
}

/// Code addresses held in general-purpose registers, with why they were taken.
#[derive(Default)]
struct HeldRefs([Option<(u64, Src)>; 16]);

impl HeldRefs {
    fn index(r: Register) -> Option<usize> {
        if !(r.is_gpr64() || r.is_gpr32() || r.is_gpr16() || r.is_gpr8()) {
            return None;
        }
        let n = (r.full_register() as usize).wrapping_sub(Register::RAX as usize);
        (n < 16).then_some(n)
    }
    fn any(&self) -> bool {
        self.0.iter().any(Option::is_some)
    }
    /// `r` now holds code address `a`. Call after the instruction's reads were handled.
    fn hold(&mut self, r: Register, a: u64, src: Src) {
        if let Some(i) = Self::index(r) {
            self.0[i] = Some((a, src));
        }
    }
}

/// The memory slot each general-purpose register was last loaded from (`mov r64,[rip+X]`)
/// within the current block.
#[derive(Default)]
struct RegLoads([Option<u64>; 16]);

impl RegLoads {
    fn index(r: Register) -> Option<usize> {
        let n = (r as usize).wrapping_sub(Register::RAX as usize);
        (n < 16).then_some(n)
    }
    fn set(&mut self, r: Register, v: Option<u64>) {
        if let Some(i) = Self::index(r) {
            self.0[i] = v;
        }
    }
    fn get(&self, r: Register) -> Option<u64> {
        Self::index(r).and_then(|i| self.0[i])
    }
}

/// Objects not in the executable's DT_NEEDED closure (nor the dynamic loader): loaded
/// at run time with dlopen.
pub fn dlopened(image: &Image) -> Vec<usize> {
    let name_of = |o: &crate::image::Object| -> Vec<String> {
        let file = o.path.rsplit('/').next().unwrap_or("").to_string();
        let mut v = vec![file];
        if let Some(s) = &o.info.soname {
            v.push(s.clone());
        }
        v
    };
    let Some(main) = image.objects.iter().position(|o| o.is_main) else { return Vec::new() };
    let mut in_closure = vec![false; image.objects.len()];
    in_closure[main] = true;
    let mut work = vec![main];
    while let Some(i) = work.pop() {
        for need in &image.objects[i].info.needed {
            for (j, o) in image.objects.iter().enumerate() {
                if !in_closure[j] && name_of(o).iter().any(|n| n == need) {
                    in_closure[j] = true;
                    work.push(j);
                }
            }
        }
    }
    (0..image.objects.len())
        .filter(|&i| {
            let o = &image.objects[i];
            // The dynamic loader is the interpreter, not a DT_NEEDED entry.
            !in_closure[i] && !o.path.contains("/ld-linux") && !o.path.contains("/ld-musl")
        })
        .collect()
}

fn is_near(insn: &Instruction) -> bool {
    matches!(insn.op0_kind(), OpKind::NearBranch64 | OpKind::NearBranch32 | OpKind::NearBranch16)
}
