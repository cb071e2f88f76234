//! Stopping a process for the shortest possible time: seize every thread, record
//! registers and the live part of each stack, detach. Everything else runs afterwards.

use crate::procfs::{Mapping, Proc, ProcError, ProcMem};
use crate::sys::ptrace::{PtraceError, Regs, SeizedThread, SignalBlock};
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
    /// First seize → last detach, microseconds.
    pub pause_us: u64,
}

/// Checks that `pid` is a live user-space process before touching it.
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
    Ok(())
}

/// Seizes all threads of the process, captures registers and stacks, detaches.
pub fn capture(proc: &Proc, maps: &[Mapping], mem: &ProcMem, stack_bytes: usize) -> Result<Snapshot, AttachError> {
    let pid = proc.pid;
    // SIGINT/SIGTERM during the stop are handled after detaching (the guard's drop order:
    // threads are released before the signal mask is restored).
    let _block = SignalBlock::new();
    let t0 = Instant::now();
    let mut seized: Vec<SeizedThread> = Vec::new();
    let map_err = |e: PtraceError| match e.errno() {
        Errno::EPERM | Errno::EACCES => AttachError::PermissionDenied { pid },
        _ => AttachError::Ptrace(e),
    };
    // Threads may be created while we seize: re-list until no new thread appears.
    loop {
        let tids = match proc.tids() {
            Ok(t) => t,
            Err(ProcError::NoSuchProcess { .. }) => return Err(AttachError::Exited { pid }),
            Err(e) => return Err(e.into()),
        };
        let mut new = 0;
        for tid in tids {
            if seized.iter().any(|t| t.tid() == tid) {
                continue;
            }
            if let Some(t) = SeizedThread::seize(tid).map_err(map_err)? {
                seized.push(t);
                new += 1;
            }
        }
        if new == 0 {
            break;
        }
    }
    let mut threads = Vec::with_capacity(seized.len());
    for t in &mut seized {
        if !t.wait_stop().map_err(map_err)? {
            continue;
        }
        let regs = match t.regs() {
            Ok(r) => r,
            Err(e) if e.errno() == Errno::ESRCH => continue,
            Err(e) => return Err(map_err(e)),
        };
        let top = maps.iter().find(|m| m.contains(regs.rsp)).map(|m| m.end).unwrap_or(regs.rsp + stack_bytes as u64);
        let len = (top.saturating_sub(regs.rsp) as usize).min(stack_bytes);
        let mut stack = vec![0u8; len];
        let n = mem.read(regs.rsp, &mut stack);
        stack.truncate(n);
        threads.push(ThreadState { tid: t.tid(), regs, stack_addr: regs.rsp, stack });
    }
    for t in seized.drain(..) {
        t.detach();
    }
    let pause_us = t0.elapsed().as_micros() as u64;
    if threads.is_empty() {
        return Err(AttachError::Exited { pid });
    }
    Ok(Snapshot { pid, threads, pause_us })
}
