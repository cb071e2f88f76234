//! migrator: runs WASI (preview 1) tasks in wasmtime and checkpoints and
//! restores them portably: an image taken under Cranelift on x86_64 restores
//! under the Pulley interpreter (or another ISA) and continues with the same
//! output.
//!
//! How: the module is instrumented once at load ([`instrument`]: a cheap poll
//! at loop headers and calling functions, then Binaryen asyncify), so a
//! running task can unwind its own wasm stack into linear memory. WASI is
//! implemented on a serializable state ([`wasi`]). An [`image::Image`] holds
//! memory (non-zero pages, zstd), globals, the asyncify stack data and the
//! WASI state, with a CRC32 over everything.
//!
//! ```no_run
//! use migrator::{engine, task::{Task, TaskOptions, RunOutcome}, wasi::Stdio};
//! let kind = engine::EngineKind::Cranelift;
//! let eng = engine::new_engine(kind)?;
//! let lm = engine::load_module("matmul.wasm".as_ref(), &eng, kind)?;
//! let opts = TaskOptions { name: "mm".into(), args: vec!["matmul".into()], ..Default::default() };
//! let mut task = Task::new(&lm, opts, Stdio::inherit())?;
//! let h = task.handle();
//! std::thread::spawn(move || { std::thread::sleep(std::time::Duration::from_millis(50)); h.request_stop(); });
//! if task.run()? == RunOutcome::Stopped {
//!     let image = task.capture()?;
//!     image.write_to(std::fs::File::create("mm.img")?)?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod bench;
pub mod control;
pub mod daemon;
pub mod engine;
pub mod error;
pub mod image;
pub mod instrument;
pub mod migrate;
pub mod net;
pub mod runner;
pub mod sys;
pub mod task;
pub mod wasi;

pub use engine::EngineKind;
pub use error::{ControlError, ImageError, ModuleError, TaskError};
pub use image::Image;
pub use task::{RunOutcome, Task, TaskHandle, TaskOptions};
