//! Runs a [`Task`] on its own thread and serves checkpoint and kill requests
//! for it. Used by foreground `run`/`restore` and by the daemon.
//!
//! A task is never lost and never runs twice: a stop-checkpoint writes the
//! image atomically *before* the runner lets the task go; if capturing or
//! writing fails, the task resumes and the requester gets the error.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::control::TaskInfo;
use crate::engine::TASK_THREAD_STACK;
use crate::error::TaskError;
use crate::task::{CheckpointInfo, PendingCheckpoint, RunOutcome, Task, TaskHandle};

/// How a task's thread ended.
#[derive(Debug)]
pub enum TaskEnd {
    Exited(i32),
    /// Stopped by a checkpoint; the image holds it now.
    Checkpointed(PathBuf),
    Killed,
    Failed(TaskError),
}

pub struct RunningTask {
    pub handle: TaskHandle,
    pub info: Arc<Mutex<TaskInfo>>,
    pub join: Option<JoinHandle<TaskEnd>>,
}

pub(crate) fn set_state(info: &Mutex<TaskInfo>, f: impl FnOnce(&mut TaskInfo)) {
    f(&mut info.lock().unwrap_or_else(|e| e.into_inner()));
}

/// Starts `task` on a thread with a large stack.
pub fn spawn(task: Task, info: TaskInfo) -> std::io::Result<RunningTask> {
    let handle = task.handle();
    let info = Arc::new(Mutex::new(info));
    let info2 = info.clone();
    let join = std::thread::Builder::new()
        .name(format!("task-{}", task.name))
        .stack_size(TASK_THREAD_STACK)
        .spawn(move || drive(task, &info2, |_| None))?;
    Ok(RunningTask { handle, info, join: Some(join) })
}

/// Runs the task until it ends, serving checkpoint requests whenever it stops.
/// `on_stop` runs first at every stop (the migration driver's jobs); returning
/// an end ends the task there.
pub(crate) fn drive(mut task: Task, info: &Mutex<TaskInfo>, mut on_stop: impl FnMut(&mut Task) -> Option<TaskEnd>) -> TaskEnd {
    let handle = task.handle();
    let end = loop {
        match task.run() {
            Ok(RunOutcome::Exited(code)) => {
                set_state(info, |i| {
                    i.state = "exited".into();
                    i.exit_code = Some(code);
                });
                break TaskEnd::Exited(code);
            }
            Ok(RunOutcome::Stopped) => {
                if let Some(end) = on_stop(&mut task) {
                    break end;
                }
                let stop_us = task.last_stop_latency().map(|d| d.as_micros() as u64).unwrap_or(0);
                let pending = handle.control().pending.lock().unwrap_or_else(|e| e.into_inner()).take();
                let Some(p) = pending else { continue };
                let t = Instant::now();
                let result = task.capture_to_file(&p.output).map_err(|e| format!("writing {}: {e}", p.output.display())).map(|img| {
                    CheckpointInfo {
                        image: p.output.display().to_string(),
                        bytes: img.bytes,
                        memory_pages: img.pages_total,
                        stored_pages: img.stored_pages,
                        stop_us,
                        capture_us: t.elapsed().as_micros() as u64,
                        leave_running: p.leave_running,
                    }
                });
                let ok = result.is_ok();
                if let Err(e) = &result {
                    log::warn!("checkpoint of {} failed, task resumes: {e}", task.name);
                }
                if ok && !p.leave_running {
                    set_state(info, |i| {
                        i.state = "checkpointed".into();
                        i.image = Some(p.output.display().to_string());
                    });
                    let _ = p.reply.send(result);
                    break TaskEnd::Checkpointed(p.output);
                }
                let _ = p.reply.send(result);
                set_state(info, |i| i.state = "running".into());
            }
            Err(TaskError::Killed) => {
                set_state(info, |i| i.state = "killed".into());
                break TaskEnd::Killed;
            }
            Err(e) => {
                set_state(info, |i| {
                    i.state = "failed".into();
                    i.error = Some(e.to_string());
                });
                break TaskEnd::Failed(e);
            }
        }
    };
    // Anyone still waiting for a checkpoint learns that the task is gone.
    if let Some(p) = handle.control().pending.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = p.reply.send(Err(format!("task ended before it could be checkpointed ({})", describe(&end))));
    }
    end
}

fn describe(end: &TaskEnd) -> String {
    match end {
        TaskEnd::Exited(c) => format!("exited with {c}"),
        TaskEnd::Checkpointed(p) => format!("checkpointed to {}", p.display()),
        TaskEnd::Killed => "killed".into(),
        TaskEnd::Failed(e) => format!("failed: {e}"),
    }
}

/// Asks a running task for a checkpoint and waits for the image.
pub fn checkpoint(handle: &TaskHandle, output: PathBuf, leave_running: bool, timeout: Duration) -> Result<CheckpointInfo, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let mut slot = handle.control().pending.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_some() {
            return Err("a checkpoint of this task is already in progress".into());
        }
        *slot = Some(PendingCheckpoint { output, leave_running, reply: tx });
    }
    handle.request_stop();
    match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(_) => {
            // Withdraw the request if the task never reached a poll (e.g. it
            // is blocked reading stdin); if the runner already took it, wait
            // for its answer: the image may be being written.
            let withdrawn = handle.control().pending.lock().unwrap_or_else(|e| e.into_inner()).take().is_some();
            if withdrawn {
                handle.cancel_stop();
                Err(format!("task did not stop within {timeout:?} (blocked in a host call?); it keeps running"))
            } else {
                rx.recv().unwrap_or_else(|_| Err("task ended during the checkpoint".into()))
            }
        }
    }
}
