//! Tracing a process instruction by instruction (or branch by branch): the ptrace calls
//! `tracer record` needs. The only module besides `sys::ptrace` that calls ptrace.
//!
//! A [`StepSession`] owns every thread it traces; dropping it interrupts the threads that
//! are running, waits for them to stop and detaches them all (re-injecting any signal
//! that was about to be delivered), so errors, panics and early returns leave the target
//! running. If the tracer itself dies, the kernel detaches every tracee.
//!
//! # Minimum kernel version
//! PTRACE_SEIZE / PTRACE_INTERRUPT: Linux 3.4. PTRACE_SINGLEBLOCK (x86 BTF): Linux 2.6.25;
//! under some hypervisors BTF is ignored and it behaves like PTRACE_SINGLESTEP.

use super::ptrace::{PtraceError, Regs};
use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// `PTRACE_SINGLEBLOCK` (x86: step to the next taken branch). Not exported by nix.
const PTRACE_SINGLEBLOCK: libc::c_uint = 33;

/// How a stopped thread is resumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// One instruction (PTRACE_SINGLESTEP).
    Step,
    /// Until the next taken branch (PTRACE_SINGLEBLOCK).
    Block,
    /// Freely (PTRACE_CONT).
    Cont,
}

/// What `waitpid` reported about one traced thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A single-step or branch-step trap (ours: never re-injected).
    Stepped { tid: i32 },
    /// Signal-delivery stop: the signal must be passed on when the thread resumes.
    Signal { tid: i32, sig: i32 },
    /// PTRACE_EVENT_STOP: after PTRACE_INTERRUPT, a new thread's first stop, or a group
    /// stop (`group` = the stopping signal).
    Stop { tid: i32, group: Option<i32> },
    /// The thread called clone(); `new_tid` is traced from now on and will report a `Stop`.
    Clone { tid: i32, new_tid: i32 },
    /// Another ptrace event (exec, ...): the thread is stopped.
    Other { tid: i32 },
    /// The thread exited or was killed.
    Exited { tid: i32 },
}

#[derive(Debug, Clone, Copy, Default)]
struct Thread {
    running: bool,
    /// A signal to deliver when the thread is resumed or detached.
    pending: Option<i32>,
}

/// Every thread of one process, seized with PTRACE_O_TRACECLONE. Detaches all on drop.
#[derive(Debug, Default)]
pub struct StepSession {
    threads: BTreeMap<i32, Thread>,
}

fn err(call: &'static str, tid: i32, errno: Errno) -> PtraceError {
    PtraceError::Syscall { call, tid, errno }
}

impl StepSession {
    pub fn new() -> StepSession {
        StepSession::default()
    }

    /// Seizes `tid` (following its future clones) and interrupts it. Returns false if the
    /// thread is gone or already traced by this session.
    pub fn seize(&mut self, tid: i32) -> Result<bool, PtraceError> {
        if self.threads.contains_key(&tid) {
            return Ok(false);
        }
        let pid = Pid::from_raw(tid);
        match ptrace::seize(pid, ptrace::Options::PTRACE_O_TRACECLONE) {
            Ok(()) => {}
            Err(Errno::ESRCH) => return Ok(false),
            Err(e) => return Err(err("PTRACE_SEIZE", tid, e)),
        }
        self.threads.insert(tid, Thread { running: true, pending: None });
        match ptrace::interrupt(pid) {
            Ok(()) | Err(Errno::ESRCH) => Ok(true),
            Err(e) => Err(err("PTRACE_INTERRUPT", tid, e)),
        }
    }

    pub fn tids(&self) -> Vec<i32> {
        self.threads.keys().copied().collect()
    }

    pub fn len(&self) -> usize {
        self.threads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    pub fn running(&self, tid: i32) -> bool {
        self.threads.get(&tid).is_some_and(|t| t.running)
    }

    /// Asks a running thread to stop (it reports `Event::Stop`).
    pub fn interrupt(&mut self, tid: i32) -> Result<(), PtraceError> {
        match ptrace::interrupt(Pid::from_raw(tid)) {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(e) => Err(err("PTRACE_INTERRUPT", tid, e)),
        }
    }

    /// Registers of a stopped thread.
    pub fn regs(&self, tid: i32) -> Result<Regs, PtraceError> {
        super::ptrace::regs_of(tid)
    }

    /// Resumes a stopped thread, delivering `sig` (a signal it stopped with) if any.
    /// A thread that vanished meanwhile (ESRCH) is forgotten.
    pub fn resume(&mut self, tid: i32, how: Resume, sig: Option<i32>) -> Result<(), PtraceError> {
        let pid = Pid::from_raw(tid);
        let signal = sig.and_then(|s| Signal::try_from(s).ok());
        let r = match how {
            Resume::Step => ptrace::step(pid, signal),
            Resume::Cont => ptrace::cont(pid, signal),
            Resume::Block => {
                // SAFETY: PTRACE_SINGLEBLOCK takes no pointers: `addr` is ignored and `data`
                // is a signal number; the kernel validates the tid and the tracee state.
                let rc = unsafe {
                    libc::ptrace(PTRACE_SINGLEBLOCK, tid as libc::pid_t, std::ptr::null_mut::<libc::c_void>(), sig.unwrap_or(0) as libc::c_long)
                };
                if rc == -1 {
                    Err(Errno::last())
                } else {
                    Ok(())
                }
            }
        };
        match r {
            Ok(()) => {
                if let Some(t) = self.threads.get_mut(&tid) {
                    t.running = true;
                    t.pending = None;
                }
                Ok(())
            }
            Err(Errno::ESRCH) => {
                self.threads.remove(&tid);
                Ok(())
            }
            Err(e) => Err(err(
                match how {
                    Resume::Step => "PTRACE_SINGLESTEP",
                    Resume::Block => "PTRACE_SINGLEBLOCK",
                    Resume::Cont => "PTRACE_CONT",
                },
                tid,
                e,
            )),
        }
    }

    /// The next event of any traced thread; `None` if nothing happened (`block` false) or
    /// no traced thread is left.
    pub fn wait(&mut self, block: bool) -> Result<Option<Event>, PtraceError> {
        if self.threads.is_empty() {
            return Ok(None);
        }
        let mut flags = WaitPidFlag::__WALL;
        if !block {
            flags |= WaitPidFlag::WNOHANG;
        }
        let status = loop {
            match waitpid(Pid::from_raw(-1), Some(flags)) {
                Ok(s) => break s,
                Err(Errno::EINTR) => continue,
                Err(Errno::ECHILD) => {
                    self.threads.clear();
                    return Ok(None);
                }
                Err(e) => return Err(err("waitpid", -1, e)),
            }
        };
        let ev = match status {
            WaitStatus::StillAlive => return Ok(None),
            WaitStatus::Exited(p, _) | WaitStatus::Signaled(p, _, _) => {
                self.threads.remove(&p.as_raw());
                return Ok(Some(Event::Exited { tid: p.as_raw() }));
            }
            WaitStatus::Stopped(p, sig) => {
                let tid = p.as_raw();
                let ours = sig == Signal::SIGTRAP
                    && ptrace::getsiginfo(p).is_ok_and(|si| {
                        // TRAP_BRKPT (step over a syscall), TRAP_TRACE (single step),
                        // TRAP_BRANCH (block step). A SIGTRAP the program raised itself
                        // (int3: SI_KERNEL, kill: SI_USER/SI_TKILL) is passed on.
                        matches!(si.si_code, 1..=3)
                    });
                if ours {
                    Event::Stepped { tid }
                } else {
                    Event::Signal { tid, sig: sig as i32 }
                }
            }
            WaitStatus::PtraceEvent(p, sig, event) => {
                let tid = p.as_raw();
                if event == libc::PTRACE_EVENT_STOP {
                    let group = matches!(sig, Signal::SIGSTOP | Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU)
                        .then_some(sig as i32);
                    Event::Stop { tid, group }
                } else if event == libc::PTRACE_EVENT_CLONE {
                    let new_tid = ptrace::getevent(p).map_err(|e| err("PTRACE_GETEVENTMSG", tid, e))? as i32;
                    // The new thread is traced already and reports its own PTRACE_EVENT_STOP.
                    self.threads.entry(new_tid).or_insert(Thread { running: true, pending: None });
                    Event::Clone { tid, new_tid }
                } else {
                    Event::Other { tid }
                }
            }
            WaitStatus::PtraceSyscall(p) => Event::Other { tid: p.as_raw() },
            #[allow(unreachable_patterns)]
            _ => return Ok(None),
        };
        let tid = match ev {
            Event::Stepped { tid }
            | Event::Signal { tid, .. }
            | Event::Stop { tid, .. }
            | Event::Clone { tid, .. }
            | Event::Other { tid }
            | Event::Exited { tid } => tid,
        };
        let t = self.threads.entry(tid).or_default();
        t.running = false;
        if let Event::Signal { sig, .. } = ev {
            t.pending = Some(sig);
        }
        Ok(Some(ev))
    }

    /// Stops every running thread and detaches all of them, delivering pending signals.
    /// Gives up waiting after `timeout` (the kernel detaches the rest when we exit).
    pub fn detach_all(&mut self, timeout: Duration) {
        let t0 = Instant::now();
        // A thread being stepped stops by itself within microseconds: let it, so its
        // trap is consumed here. Interrupting it instead could leave the step's SIGTRAP
        // queued behind the interrupt stop, and it would kill the thread after detach.
        self.settle(Duration::from_millis(50));
        // The rest are blocked in syscalls: interrupt them.
        let running: Vec<i32> = self.threads.iter().filter(|(_, t)| t.running).map(|(&k, _)| k).collect();
        for tid in running {
            let _ = self.interrupt(tid);
        }
        self.settle(timeout.saturating_sub(t0.elapsed()));
        // A syscall interrupted while stepping queues a step trap (TRAP_BRKPT) behind the
        // interrupt stop: let each such thread dequeue it (it stops again before running
        // any user code) so that it is dropped, not delivered after detach.
        for _ in 0..4 {
            let trapped: Vec<i32> =
                self.threads.iter().filter(|(&tid, t)| !t.running && t.pending.is_none() && sigtrap_pending(tid)).map(|(&k, _)| k).collect();
            if trapped.is_empty() {
                break;
            }
            for tid in trapped {
                let _ = self.resume(tid, Resume::Cont, None);
            }
            self.settle(Duration::from_millis(200));
            let running: Vec<i32> = self.threads.iter().filter(|(_, t)| t.running).map(|(&k, _)| k).collect();
            for tid in running {
                let _ = self.interrupt(tid);
            }
            self.settle(Duration::from_millis(500));
        }
        for (tid, t) in std::mem::take(&mut self.threads) {
            let sig = t.pending.and_then(|s| Signal::try_from(s).ok());
            let _ = ptrace::detach(Pid::from_raw(tid), sig);
        }
    }
}

impl StepSession {
    /// Handles events until no thread is running or `timeout` passes.
    fn settle(&mut self, timeout: Duration) {
        let t0 = Instant::now();
        while self.threads.values().any(|t| t.running) && t0.elapsed() < timeout {
            match self.wait(false) {
                Ok(Some(Event::Clone { new_tid, .. })) => {
                    let _ = self.interrupt(new_tid);
                }
                Ok(Some(_)) => {}
                Ok(None) => std::thread::sleep(Duration::from_micros(100)),
                Err(_) => break,
            }
        }
    }
}

/// Whether a SIGTRAP is queued for thread `tid` (SigPnd in /proc/TID/status).
fn sigtrap_pending(tid: i32) -> bool {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{tid}/status")) else { return false };
    s.lines()
        .find_map(|l| l.strip_prefix("SigPnd:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|m| m & (1 << (libc::SIGTRAP - 1)) != 0)
}

impl Drop for StepSession {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.detach_all(Duration::from_secs(5));
        }
    }
}

/// Whether SIGINT, SIGTERM, SIGHUP or SIGQUIT is pending for this thread (they are
/// blocked by `SignalBlock` while recording: the recorder stops and detaches first).
pub fn termination_pending() -> bool {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigpending writes a sigset_t into the valid, properly aligned buffer.
    let rc = unsafe { libc::sigpending(set.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: sigpending succeeded, so the set is initialized.
    let set = unsafe { set.assume_init() };
    [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT].iter().any(|&s| {
        // SAFETY: `set` is an initialized sigset_t and `s` a valid signal number.
        unsafe { libc::sigismember(&set, s) == 1 }
    })
}
