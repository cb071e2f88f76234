//! Stopping a process for the shortest possible time: seize every thread, record
//! registers and the live part of each stack, detach. Everything else runs afterwards.

use crate::procfs::{Mapping, Proc, ProcError, ProcMem};
use crate::sys::ptrace::{wait_any, PtraceError, Regs, SeizedThread, SignalBlock};
use nix::errno::Errno;
use std::time::Instant;

/// How much of each thread's stack (above its stack pointer) is copied while stopped.
pub const DEFAULT_STACK_BYTES: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("permission denied attaching to {pid}: run as root or grant CAP_SYS_PTRACE (and check /proc/sys/kernel/yama/ptrace_scope)")]
    PermissionDenied { pid: i32 },
    #[error("process {pid} is a zombie: it has exited and has no code to analyze")]
    Zombie { pid: i32 },
    #[error("pid {pid} is a kernel thread: it has no user-space code to analyze")]
    KernelThread { pid: i32 },
    #[error("process {pid} is a 32-bit program: only x86-64 processes are supported")]
    Compat32 { pid: i32 },
    #[error("process {pid} exited while being traced")]
    Exited { pid: i32 },
    #[error(transparent)]
    Proc(#[from] ProcError),
    #[error(transparent)]
    Ptrace(PtraceError),
}

/// What was captured of one thread while it was stopped.
#[derive(Debug, Clone)]
pub struct ThreadState {
    pub tid: i32,
    pub regs: Regs,
    /// Address of `stack[0]` (the thread's stack pointer).
    pub stack_addr: u64,
    pub stack: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub pid: i32,
    pub threads: Vec<ThreadState>,
    /// Longest time any one thread was stopped (its stop → its detach), microseconds.
    pub pause_us: u64,
    /// Wall time of the whole capture (first seize → last detach), microseconds.
    pub attach_us: u64,
}

/// Checks that `pid` is a live 64-bit user-space process before touching it.
pub fn precheck(proc: &Proc) -> Result<(), AttachError> {
    let pid = proc.pid;
    let status = proc.status()?;
    let state = status.iter().find(|(k, _)| k == "State").map(|(_, v)| v.as_str()).unwrap_or("");
    if state.starts_with('Z') || state.starts_with('X') {
        return Err(AttachError::Zombie { pid });
    }
    const PF_KTHREAD: u64 = 0x0020_0000;
    if proc.stat_flags()? & PF_KTHREAD != 0 {
        return Err(AttachError::KernelThread { pid });
    }
    let mut hdr = [0u8; 5];
    if let Ok(mut f) = std::fs::File::open(format!("/proc/{pid}/exe")) {
        use std::io::Read;
        if f.read_exact(&mut hdr).is_ok() && &hdr[..4] == b"\x7fELF" && hdr[4] == 1 {
            return Err(AttachError::Compat32 { pid });
        }
    }
    Ok(())
}

/// Opens the target's memory; EACCES/EPERM becomes the "run as root" error.
pub fn open_mem(proc: &Proc) -> Result<ProcMem, AttachError> {
    match proc.mem() {
        Ok(m) => Ok(m),
        Err(ProcError::Io { source, .. }) if source.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(AttachError::PermissionDenied { pid: proc.pid })
        }
        Err(e) => Err(e.into()),
    }
}

/// Captures every thread's registers and stack. All threads are seized and interrupted
/// at once; each is read and detached as soon as *it* stops, so a thread is stopped only
/// for its own capture (tens of microseconds) and never waits for the others — the
/// analysis needs no cross-thread consistency (PCs and stacks are only roots). Threads
/// created meanwhile are picked up by re-listing until no new thread appears.
pub fn capture(proc: &Proc, maps: &[Mapping], mem: &ProcMem, stack_bytes: usize) -> Result<Snapshot, AttachError> {
    let pid = proc.pid;
    // SIGINT/SIGTERM while a thread is stopped are handled after it is detached
    // (and the seized-thread guards detach on every early return).
    let _block = SignalBlock::new();
    let _rt = crate::sys::sched::RealtimeGuard::new();
    let t0 = Instant::now();
    let map_err = |e: PtraceError| match e.errno() {
        Errno::EPERM | Errno::EACCES => AttachError::PermissionDenied { pid },
        _ => AttachError::Ptrace(e),
    };
    let mut seen: Vec<i32> = Vec::new();
    let mut threads = Vec::new();
    let mut max_stop = 0u64;
    loop {
        let tids = match proc.tids() {
            Ok(t) => t,
            Err(ProcError::NoSuchProcess { .. }) if !threads.is_empty() => break,
            Err(ProcError::NoSuchProcess { .. }) => return Err(AttachError::Exited { pid }),
            Err(e) => return Err(e.into()),
        };
        let mut pending: Vec<SeizedThread> = Vec::new();
        for tid in tids {
            if seen.contains(&tid) {
                continue;
            }
            seen.push(tid);
            if let Some(t) = SeizedThread::seize(tid).map_err(map_err)? {
                pending.push(t);
            }
        }
        if pending.is_empty() {
            break;
        }
        while !pending.is_empty() {
            let Some((tid, st)) = wait_any().map_err(map_err)? else {
                // Nothing left to wait for: the remaining threads are gone.
                for t in &mut pending {
                    let _ = t.on_status(nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(t.tid()), 0));
                }
                pending.clear();
                break;
            };
            let Some(i) = pending.iter().position(|t| t.tid() == tid) else { continue };
            match pending[i].on_status(st) {
                None => continue,
                Some(false) => {
                    pending.swap_remove(i);
                    continue;
                }
                Some(true) => {}
            }
            let t = pending.swap_remove(i);
            let stopped_at = Instant::now();
            let regs = match t.regs() {
                Ok(r) => r,
                Err(e) if e.errno() == Errno::ESRCH => continue,
                Err(e) => return Err(map_err(e)),
            };
            let top = maps.iter().find(|m| m.contains(regs.rsp)).map(|m| m.end).unwrap_or(regs.rsp.saturating_add(stack_bytes as u64));
            let len = (top.saturating_sub(regs.rsp) as usize).min(stack_bytes);
            let mut stack = vec![0u8; len];
            let n = mem.read(regs.rsp, &mut stack);
            stack.truncate(n);
            t.detach();
            max_stop = max_stop.max(stopped_at.elapsed().as_micros() as u64);
            threads.push(ThreadState { tid, regs, stack_addr: regs.rsp, stack });
        }
    }
    if threads.is_empty() {
        return Err(AttachError::Exited { pid });
    }
    Ok(Snapshot { pid, threads, pause_us: max_stop, attach_us: t0.elapsed().as_micros() as u64 })
}
