//! The only modules that make raw syscalls or use CPU intrinsics.
pub mod ptrace;
pub mod cpuid;
pub mod mmap;
pub mod step;
pub mod sched;
