//! monitor-probe: event-driven migration triggers from eBPF programs on kernel tracepoints.
//!
//! The C programs in `ebpf/` (built by `build.rs`, embedded in this crate) count page-cache
//! pages, watch thermal-zone temperatures and time memory reclaim *in the kernel*, compare with
//! thresholds written into their maps, and wake userspace through a ring buffer only when a
//! threshold is crossed (plus rate-limited samples). This crate loads them, seeds and re-syncs
//! the page count from /proc/meminfo, adds sysfs sensors and PSI wake-ups, applies hysteresis,
//! cooldown and trend prediction, and prints / forwards the events.
//!
//! ```no_run
//! use monitor_probe::{config::{Options, ThresholdFlags, Thresholds}, monitor};
//! # async fn f() -> anyhow::Result<()> {
//! let mut opts = Options::new(Thresholds::from_env(ThresholdFlags::default())?);
//! opts.json = true;
//! opts.count = Some(1); // exit after the first trigger / clear / predict
//! let summary = monitor::run(opts, std::io::stdout()).await?;
//! # Ok(()) }
//! ```
//!
//! # Minimum kernel version
//! 5.12 with BTF; see [`ebpf`]. Needs root (CAP_BPF + CAP_PERFMON). Output format: [`event`].
pub mod action;
pub mod clock;
pub mod config;
pub mod ebpf;
pub mod event;
pub mod monitor;
pub mod procfs;
pub mod psi;
pub mod sys;
pub mod sysfs;
pub mod trigger;
