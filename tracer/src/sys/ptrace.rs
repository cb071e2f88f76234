//! Seizing and releasing threads with ptrace. The only module that calls `nix::sys::ptrace`.
//!
//! A [`SeizedThread`] is a guard: dropping it detaches the thread (re-injecting a signal
//! it was stopped with), so `?`, panics and early returns leave the target running. If the
//! tracer itself is killed, the kernel detaches every tracee on exit.

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// General-purpose registers of a stopped thread (the few the analysis needs).
#[derive(Debug, Clone, Copy, Default)]
pub struct Regs {
    pub rip: u64,
    pub rsp: u64,
    pub rbp: u64,
    /// Code segment selector: 0x33 for 64-bit code, 0x23 for 32-bit compat code.
    pub cs: u64,
    /// All 16 GPRs in `rax, rbx, rcx, rdx, rsi, rdi, rbp, rsp, r8..r15` order.
    pub gprs: [u64; 16],
}

#[derive(Debug, thiserror::Error)]
pub enum PtraceError {
    #[error("ptrace({call}) on thread {tid}: {errno}")]
    Syscall { call: &'static str, tid: i32, errno: Errno },
}

impl PtraceError {
    pub fn errno(&self) -> Errno {
        match self {
            PtraceError::Syscall { errno, .. } => *errno,
        }
    }
}

/// A thread seized with PTRACE_SEIZE. Detaches on drop.
#[derive(Debug)]
pub struct SeizedThread {
    tid: Pid,
    stopped: bool,
    gone: bool,
    /// A signal the thread was about to receive when it stopped; re-injected on detach.
    pending: Option<Signal>,
}

impl SeizedThread {
    /// PTRACE_SEIZE then PTRACE_INTERRUPT: the thread stops at its next opportunity
    /// (call [`SeizedThread::wait_stop`]). `Ok(None)` if the thread no longer exists.
    pub fn seize(tid: i32) -> Result<Option<SeizedThread>, PtraceError> {
        let pid = Pid::from_raw(tid);
        match ptrace::seize(pid, ptrace::Options::empty()) {
            Ok(()) => {}
            Err(Errno::ESRCH) => return Ok(None),
            Err(errno) => return Err(PtraceError::Syscall { call: "PTRACE_SEIZE", tid, errno }),
        }
        let mut t = SeizedThread { tid: pid, stopped: false, gone: false, pending: None };
        match ptrace::interrupt(pid) {
            Ok(()) => Ok(Some(t)),
            Err(Errno::ESRCH) => {
                t.gone = true;
                Ok(None)
            }
            Err(errno) => Err(PtraceError::Syscall { call: "PTRACE_INTERRUPT", tid, errno }),
        }
    }

    pub fn tid(&self) -> i32 {
        self.tid.as_raw()
    }

    /// Applies a wait status reported for this thread (by [`wait_any`]). Returns
    /// Some(true) when stopped, Some(false) when gone, None when still running.
    pub fn on_status(&mut self, st: WaitStatus) -> Option<bool> {
        match st {
            WaitStatus::PtraceEvent(..) | WaitStatus::PtraceSyscall(..) => {
                self.stopped = true;
                Some(true)
            }
            WaitStatus::Stopped(_, sig) => {
                self.stopped = true;
                self.pending = Some(sig);
                Some(true)
            }
            WaitStatus::Exited(..) | WaitStatus::Signaled(..) => {
                self.gone = true;
                Some(false)
            }
            _ => None,
        }
    }

    /// Waits (`__WALL`) until the thread is in a ptrace stop. Returns false if it exited.
    pub fn wait_stop(&mut self) -> Result<bool, PtraceError> {
        loop {
            match waitpid(self.tid, Some(WaitPidFlag::__WALL)) {
                Ok(WaitStatus::PtraceEvent(..)) | Ok(WaitStatus::PtraceSyscall(..)) => {
                    self.stopped = true;
                    return Ok(true);
                }
                Ok(WaitStatus::Stopped(_, sig)) => {
                    // Signal-delivery-stop: remember the signal so detach delivers it.
                    // SIGSTOP-family group stops are left to the kernel's job control.
                    self.stopped = true;
                    self.pending = Some(sig);
                    return Ok(true);
                }
                Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => {
                    self.gone = true;
                    return Ok(false);
                }
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) | Err(Errno::ESRCH) => {
                    self.gone = true;
                    return Ok(false);
                }
                Err(errno) => return Err(PtraceError::Syscall { call: "waitpid", tid: self.tid(), errno }),
            }
        }
    }

    /// Registers of the stopped thread.
    pub fn regs(&self) -> Result<Regs, PtraceError> {
        regs_of(self.tid())
    }

    /// Detaches now (also done on drop).
    pub fn detach(mut self) {
        self.release();
    }

    fn release(&mut self) {
        if self.gone {
            return;
        }
        self.gone = true;
        if !self.stopped {
            // PTRACE_DETACH needs a stopped tracee: let the pending interrupt land first.
            let _ = self.wait_stop();
            if self.gone && !self.stopped {
                return;
            }
            self.gone = true;
        }
        let _ = ptrace::detach(self.tid, self.pending);
    }
}

impl Drop for SeizedThread {
    fn drop(&mut self) {
        self.release();
    }
}

/// Registers of a thread in a ptrace stop (PTRACE_GETREGS).
pub fn regs_of(tid: i32) -> Result<Regs, PtraceError> {
    let r = ptrace::getregs(Pid::from_raw(tid))
        .map_err(|errno| PtraceError::Syscall { call: "PTRACE_GETREGS", tid, errno })?;
    Ok(Regs {
        rip: r.rip,
        rsp: r.rsp,
        rbp: r.rbp,
        cs: r.cs,
        gprs: [
            r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp, r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14,
            r.r15,
        ],
    })
}

/// Waits for the next event of any traced thread (`waitpid(-1, __WALL)`).
/// `Ok(None)` when there is nothing left to wait for.
pub fn wait_any() -> Result<Option<(i32, WaitStatus)>, PtraceError> {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::__WALL)) {
            Ok(st) => match st.pid() {
                Some(p) => return Ok(Some((p.as_raw(), st))),
                None => continue,
            },
            Err(Errno::EINTR) => continue,
            Err(Errno::ECHILD) => return Ok(None),
            Err(errno) => return Err(PtraceError::Syscall { call: "waitpid", tid: -1, errno }),
        }
    }
}

/// Blocks SIGINT, SIGTERM, SIGHUP and SIGQUIT for the calling thread while the guard
/// lives, so a signal arriving mid-attach is handled only after every thread is detached.
pub struct SignalBlock {
    old: nix::sys::signal::SigSet,
}

impl SignalBlock {
    pub fn new() -> SignalBlock {
        use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
        let mut set = SigSet::empty();
        for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT] {
            set.add(s);
        }
        let mut old = SigSet::empty();
        let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old));
        SignalBlock { old }
    }
}

impl Default for SignalBlock {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for SignalBlock {
    fn drop(&mut self) {
        use nix::sys::signal::{pthread_sigmask, SigmaskHow};
        let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None);
    }
}
