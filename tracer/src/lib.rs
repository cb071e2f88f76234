//! tracer: finds which CPU features a live process's reachable code uses.
//!
//! ```no_run
//! let report = tracer::trace::trace_pid(4242, &tracer::trace::Options::default()).unwrap();
//! report.write_json(std::io::stdout()).unwrap();
//! ```
pub mod cli;
pub mod error;
pub mod features;
pub mod report;
pub mod attach;
pub mod elf;
pub mod procfs;
pub mod sys;
pub mod analysis;
pub mod guards;
pub mod image;
pub mod catalog;
pub mod check;
pub mod host;
pub mod k8s;
pub mod policy;
pub mod trace;
pub mod record;
pub mod audit;
pub mod python;
