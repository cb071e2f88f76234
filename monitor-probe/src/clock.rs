//! CLOCK_MONOTONIC, the clock `bpf_ktime_get_ns()` uses, so kernel and userspace
//! timestamps can be subtracted.
use nix::time::{clock_gettime, ClockId};

pub fn monotonic_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}
