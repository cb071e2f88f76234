//! `tracer record`: the ground-truth oracle. Observes which instructions a process
//! actually executes — every thread single-stepped (or branch-stepped), or sampled at a
//! fixed rate — and reports their features as a feature set with `mode: "record"`.
//!
//! Independent of path tracking: it shares only the decoder, the feature table and the
//! process image (for symbols in evidence). The vDSO is ignored, as in path and full
//! mode: it is the running kernel's code, replaced by the destination's on migration.

use crate::analysis::Tally;
use crate::attach::{self, AttachError};
use crate::image::{CachedMem, Image, Memory};
use crate::procfs::{Proc, ProcError};
use crate::report::{FeatureSet, SCHEMA};
use crate::sys::ptrace::{PtraceError, SignalBlock};
use crate::sys::step::{self, Event, Resume, StepSession};
use crate::trace;
use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction};
use nix::errno::Errno;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// How execution is observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// PTRACE_SINGLESTEP: every executed instruction (exact, slowest).
    Step,
    /// PTRACE_SINGLEBLOCK: one stop per taken branch; the straight-line code in between
    /// is decoded from the previous stop to the branch that reached the new PC.
    Block,
    /// Periodic interrupts; the basic block at each thread's PC is decoded.
    Sample { hz: u32 },
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Step => "step",
            Method::Block => "block",
            Method::Sample { .. } => "sample",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RecordOptions {
    pub duration: Duration,
    pub method: Method,
}

impl Default for RecordOptions {
    fn default() -> Self {
        RecordOptions { duration: Duration::from_secs(2), method: Method::Step }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error("permission denied tracing {pid}: run as root or grant CAP_SYS_PTRACE (and check /proc/sys/kernel/yama/ptrace_scope)")]
    PermissionDenied { pid: i32 },
    #[error("recording {pid}: {source}")]
    Ptrace { pid: i32, source: PtraceError },
}

impl From<ProcError> for RecordError {
    fn from(e: ProcError) -> Self {
        RecordError::Attach(AttachError::Proc(e))
    }
}

/// Counters of one recording.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RecordStats {
    /// Stops handled (steps, branch steps or samples).
    pub stops: u64,
    /// Instructions executed while recording (step: exact; block: decoded per stop).
    pub executed: u64,
    /// Distinct instruction addresses decoded.
    pub distinct: u64,
    /// Stops whose PC was in the vDSO (not counted as workload code).
    pub vdso_stops: u64,
    /// Stops at code outside the image loaded before recording (decoded from live memory).
    pub live_code_stops: u64,
    pub signals_reinjected: u64,
    pub threads_seen: u64,
    pub new_threads: u64,
    pub record_ms: u64,
    /// Whether the recording ended early because the tracer was asked to terminate.
    pub interrupted: bool,
}

struct Recorder<'a> {
    image: &'a Image,
    mem: &'a CachedMem,
    raw: &'a crate::procfs::ProcMem,
    vdso: Vec<(u64, u64)>,
    seen: HashSet<u64>,
    /// Branch-step (from, to) pairs already decoded, with their instruction counts.
    seen_blocks: HashMap<(u64, u64), u64>,
    tally: Tally,
    stats: RecordStats,
}

impl Recorder<'_> {
    /// Decodes the instruction at `ip` from the image (or live memory for code that
    /// appeared later). `None` for the vDSO and unreadable addresses.
    fn decode(&mut self, ip: u64, out: &mut Instruction) -> bool {
        let mut buf = [0u8; 16];
        let bytes: &[u8] = match self.image.region_of(ip) {
            Some(r) => {
                let region = &self.image.regions[r];
                let off = (ip - region.start) as usize;
                let b = region.bytes();
                let end = (off + 16).min(b.len());
                let n = end - off;
                buf[..n].copy_from_slice(&b[off..end]);
                // An instruction at a region's end may continue in the next page of memory.
                if n < 16 {
                    let got = self.mem.read(ip + n as u64, &mut buf[n..]);
                    &buf[..n + got]
                } else {
                    &buf[..]
                }
            }
            None => {
                if self.vdso.iter().any(|&(s, e)| (s..e).contains(&ip)) {
                    return false;
                }
                self.stats.live_code_stops += 1;
                // JIT code may be rewritten: read it uncached.
                let n = self.raw.read(ip, &mut buf);
                &buf[..n]
            }
        };
        let mut d = Decoder::with_ip(64, bytes, ip, DecoderOptions::NONE);
        if !d.can_decode() {
            return false;
        }
        d.decode_out(out);
        !out.is_invalid()
    }

    fn in_vdso(&self, ip: u64) -> bool {
        self.vdso.iter().any(|&(s, e)| (s..e).contains(&ip))
    }

    /// One instruction observed at `ip` (it executes next).
    fn at(&mut self, ip: u64) {
        self.stats.executed += 1;
        if self.in_vdso(ip) {
            self.stats.vdso_stops += 1;
            return;
        }
        if !self.seen.insert(ip) {
            return;
        }
        let mut insn = Instruction::default();
        if self.decode(ip, &mut insn) {
            self.stats.distinct += 1;
            self.tally.record(&insn);
        }
    }

    /// Straight-line code from `from` that ended at `to`: every instruction up to the
    /// branch that reached `to` (or up to `to` itself if execution fell through to it).
    fn walk(&mut self, from: u64, to: u64) {
        if self.in_vdso(from) {
            self.stats.vdso_stops += 1;
            return;
        }
        if let Some(&n) = self.seen_blocks.get(&(from, to)) {
            self.stats.executed += n;
            return;
        }
        let before = self.stats.executed;
        self.walk_new(from, to);
        self.seen_blocks.insert((from, to), self.stats.executed - before);
    }

    fn walk_new(&mut self, from: u64, to: u64) {
        let mut ip = from;
        let mut insn = Instruction::default();
        for _ in 0..4096 {
            if !self.decode(ip, &mut insn) {
                return;
            }
            self.stats.executed += 1;
            if self.seen.insert(ip) {
                self.stats.distinct += 1;
                self.tally.record(&insn);
            }
            let next = insn.next_ip();
            match insn.flow_control() {
                FlowControl::Next => {
                    if next == to {
                        return;
                    }
                }
                FlowControl::ConditionalBranch | FlowControl::XbeginXabortXend => {
                    if insn.near_branch_target() == to || next == to {
                        return;
                    }
                    // Not taken: execution continued after it.
                }
                // Calls, jumps, returns, syscalls, interrupts: the stop came after it.
                _ => return,
            }
            ip = next;
        }
    }

    /// The basic block at `ip` (sampling): up to and including its first branch.
    fn block_at(&mut self, ip: u64) {
        self.stats.executed += 1;
        if self.in_vdso(ip) {
            self.stats.vdso_stops += 1;
            return;
        }
        let mut insn = Instruction::default();
        let mut at = ip;
        for _ in 0..256 {
            if !self.seen.insert(at) {
                return;
            }
            if !self.decode(at, &mut insn) {
                return;
            }
            self.stats.distinct += 1;
            self.tally.record(&insn);
            if insn.flow_control() != FlowControl::Next {
                return;
            }
            at = insn.next_ip();
        }
    }
}

/// Records the features `pid` executes for `opts.duration`.
pub fn record_pid(pid: i32, opts: &RecordOptions) -> Result<FeatureSet, RecordError> {
    let t0 = Instant::now();
    let proc = Proc::new(pid)?;
    attach::precheck(&proc)?;
    let exe = proc.exe();
    let raw = attach::open_mem(&proc)?;
    let maps = proc.maps()?;
    let mem = CachedMem::new(proc.mem()?);
    let image = Image::load(&proc, &maps, &mem);
    let vdso = maps.iter().filter(|m| m.path.as_deref() == Some("[vdso]")).map(|m| (m.start, m.end)).collect();
    let mut rec = Recorder {
        image: &image,
        mem: &mem,
        raw: &raw,
        vdso,
        seen: HashSet::new(),
        seen_blocks: HashMap::new(),
        tally: Tally::default(),
        stats: RecordStats::default(),
    };
    let mut warnings = image.warnings.clone();
    let ptrace_err = |source: PtraceError| match source.errno() {
        Errno::EPERM | Errno::EACCES => RecordError::PermissionDenied { pid },
        _ => RecordError::Ptrace { pid, source },
    };

    // SIGINT/SIGTERM while recording: stop, detach, then let the signal act.
    let _block = SignalBlock::new();
    let mut session = StepSession::new();
    loop {
        let tids = match proc.tids() {
            Ok(t) => t,
            Err(ProcError::NoSuchProcess { .. }) => return Err(AttachError::Exited { pid }.into()),
            Err(e) => return Err(e.into()),
        };
        let mut new = 0;
        for tid in tids {
            if session.seize(tid).map_err(ptrace_err)? {
                new += 1;
            }
        }
        if new == 0 {
            break;
        }
    }
    let resume_how = match opts.method {
        Method::Step => Resume::Step,
        Method::Block => Resume::Block,
        Method::Sample { .. } => Resume::Cont,
    };
    let period = match opts.method {
        Method::Sample { hz } => Some(Duration::from_secs_f64(1.0 / hz.max(1) as f64)),
        _ => None,
    };
    let mut all_threads: HashSet<i32> = session.tids().into_iter().collect();
    // Branch step: where each thread was at its previous stop.
    let mut prev: HashMap<i32, u64> = HashMap::new();
    let start = Instant::now();
    let deadline = start + opts.duration;
    let mut next_tick = start;
    let mut idle = 0u32;
    let mut polls = 0u64;
    while !session.is_empty() {
        polls += 1;
        if polls % 1024 == 0 || idle > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if (polls % 1024 == 0 || idle % 256 == 1) && step::termination_pending() {
                rec.stats.interrupted = true;
                warnings.push("recording interrupted by a termination signal: partial result".into());
                break;
            }
            if let Some(p) = period {
                if now >= next_tick {
                    next_tick = now + p;
                    for tid in session.tids() {
                        if session.running(tid) {
                            session.interrupt(tid).map_err(ptrace_err)?;
                        }
                    }
                }
            }
        }
        let ev = match session.wait(false).map_err(ptrace_err)? {
            Some(ev) => {
                idle = 0;
                ev
            }
            None => {
                // Every thread is blocked (in a syscall, or between samples).
                // Spin first: a step completes within microseconds.
                idle += 1;
                if idle > 4096 || (period.is_some() && idle > 64) {
                    std::thread::sleep(Duration::from_micros(if period.is_some() { 500 } else { 50 }));
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
        };
        rec.stats.stops += 1;
        let (tid, sig) = match ev {
            Event::Exited { tid } => {
                prev.remove(&tid);
                continue;
            }
            Event::Clone { tid, new_tid } => {
                rec.stats.new_threads += 1;
                all_threads.insert(new_tid);
                (tid, None)
            }
            Event::Signal { tid, sig } => {
                rec.stats.signals_reinjected += 1;
                (tid, Some(sig))
            }
            Event::Stepped { tid } | Event::Stop { tid, .. } | Event::Other { tid } => {
                all_threads.insert(tid);
                (tid, None)
            }
        };
        let regs = match session.regs(tid) {
            Ok(r) => r,
            Err(e) if e.errno() == Errno::ESRCH => continue,
            Err(e) => return Err(ptrace_err(e)),
        };
        if regs.cs == 0x23 {
            drop(session);
            return Err(AttachError::Compat32 { pid }.into());
        }
        match opts.method {
            Method::Step => {
                // A signal stop is reported before the handler runs: the instruction at
                // the PC has not executed yet and is recorded when the thread gets there.
                if sig.is_none() {
                    rec.at(regs.rip);
                }
            }
            Method::Block => {
                if let Some(from) = prev.remove(&tid) {
                    rec.walk(from, regs.rip);
                }
                // After a signal the thread enters its handler: start a new straight line.
                if sig.is_none() {
                    prev.insert(tid, regs.rip);
                }
            }
            Method::Sample { .. } => {
                if matches!(ev, Event::Stop { group: None, .. }) {
                    rec.block_at(regs.rip);
                }
            }
        }
        session.resume(tid, resume_how, sig).map_err(ptrace_err)?;
    }
    let recorded = start.elapsed();
    session.detach_all(Duration::from_secs(5));
    drop(session);
    rec.stats.threads_seen = all_threads.len() as u64;
    rec.stats.record_ms = recorded.as_millis() as u64;
    if rec.stats.vdso_stops > 0 {
        warnings.push(format!(
            "{} stops in the vDSO ignored: it is the host kernel's code, not the workload's",
            rec.stats.vdso_stops
        ));
    }
    if let Method::Sample { .. } = opts.method {
        warnings.push("sampling sees only the basic blocks at sampled PCs: a lower bound of what executes".into());
    }
    let features = trace::entries(&image, &rec.tally);
    let stats = json!({
        "record": rec.stats,
        "analysis_ms": t0.elapsed().as_millis() as u64,
        "bytes_decoded": rec.tally.bytes_decoded,
        "instructions": rec.tally.instructions,
    });
    Ok(FeatureSet {
        schema: SCHEMA.into(),
        kind: "workload".into(),
        arch: "x86_64".into(),
        subject: json!({
            "pid": pid,
            "exe": exe,
            "mode": "record",
            "method": opts.method.as_str(),
            "duration_s": opts.duration.as_secs_f64(),
            "threads": all_threads.len(),
        }),
        features,
        warnings,
        stats,
    })
}

/// Whether this kernel/CPU honours PTRACE_SINGLEBLOCK: some hypervisors ignore the BTF
/// bit, so a block step stops after one instruction like a single step. Decided by the
/// ratio of executed instructions to stops in a recording.
pub fn block_step_effective(stats: &RecordStats) -> bool {
    stats.stops > 0 && stats.executed > stats.stops * 2
}
