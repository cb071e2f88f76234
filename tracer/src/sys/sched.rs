//! Scheduling priority for the attach window.

/// Raises the calling thread to SCHED_FIFO (priority 1) while the guard lives, so the
/// tracer is not preempted by the target's runnable threads between seizing them (on a
/// loaded machine that preemption, not ptrace, dominates the pause). Silently does
/// nothing without CAP_SYS_NICE.
pub struct RealtimeGuard {
    old_policy: i32,
    old_param: libc::sched_param,
    raised: bool,
}

impl RealtimeGuard {
    pub fn new() -> RealtimeGuard {
        let mut old_param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; the param pointers are valid for the call.
        let old_policy = unsafe { libc::sched_getscheduler(0) };
        // SAFETY: as above; `old_param` is a valid, writable sched_param.
        unsafe { libc::sched_getparam(0, &mut old_param) };
        let param = libc::sched_param { sched_priority: 1 };
        // SAFETY: valid policy constant and param pointer for the calling thread.
        let raised = old_policy >= 0 && unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0;
        RealtimeGuard { old_policy, old_param, raised }
    }
}

impl Default for RealtimeGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for RealtimeGuard {
    fn drop(&mut self) {
        if self.raised {
            // SAFETY: restores the policy and param read in `new` for the calling thread.
            unsafe { libc::sched_setscheduler(0, self.old_policy, &self.old_param) };
        }
    }
}
