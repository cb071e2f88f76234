//! Integration tests: the real binary, real eBPF programs loaded into this kernel (run as root:
//! `cargo test -p monitor-probe`), fake sysfs trees from fixtures/sysfs for temperature.
mod util;

mod actions;
mod attach;
mod bad_input;
mod memory;
mod page_cache;
mod thermal;
mod thresholds;
