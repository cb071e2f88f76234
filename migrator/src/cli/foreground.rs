//! Runs a task in this process, reachable on its own control socket.

use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use migrator::control::{self, Request, Response, TaskInfo};
use migrator::engine::LoadedModule;
use migrator::migrate::{self, MigrateOptions};
use migrator::runner::{self, TaskEnd};
use migrator::Task;

use super::OperationFailed;

struct RemoveOnDrop(std::path::PathBuf);
impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn run(task: Task, info: TaskInfo, lm: LoadedModule) -> Result<ExitCode> {
    let name = info.name.clone();
    let sock = control::task_socket(&name);
    if control::alive(&control::daemon_socket()) {
        if let Ok(r) = control::request(&control::daemon_socket(), &Request::Ps, Duration::from_secs(2)) {
            if r.tasks.unwrap_or_default().iter().any(|t| t.name == name && (t.state == "running" || t.state == "checkpointing")) {
                anyhow::bail!("a task named {name:?} is already running under the daemon");
            }
        }
    }
    let listener = control::bind(&sock).with_context(|| format!("task name {name:?} is taken"))?;
    let _guard = RemoveOnDrop(sock);
    let (rt, hooks) = migrate::spawn(task, info, lm).context("starting the task thread")?;
    let in_flight = Arc::new(AtomicUsize::new(0));
    {
        let handle = rt.handle.clone();
        let info = rt.info.clone();
        let name = name.clone();
        let in_flight = in_flight.clone();
        std::thread::spawn(move || {
            control::serve(listener, in_flight, move |line| match control::parse_request(line) {
                Err(resp) => resp,
                Ok(Request::Ps) => {
                    let mut r = Response::ok();
                    r.tasks = Some(vec![info.lock().unwrap_or_else(|e| e.into_inner()).clone()]);
                    r
                }
                Ok(Request::Checkpoint { task, output, leave_running }) if task == name => {
                    if info.lock().unwrap_or_else(|e| e.into_inner()).state != "running" {
                        return Response::err(format!("task {name} is not running"));
                    }
                    match runner::checkpoint(&handle, output, leave_running, Duration::from_secs(60)) {
                        Ok(ci) => Response { ok: true, checkpoint: Some(ci), ..Default::default() },
                        Err(e) => Response::err(e),
                    }
                }
                Ok(Request::Migrate { task, to, live, code, max_rounds, timeout_s, verify }) if task == name => {
                    migrate::answer_request(&hooks, &to, &MigrateOptions { live, code, max_rounds, timeout_s, verify })
                }
                Ok(Request::Kill { task }) if task == name => {
                    handle.kill();
                    Response::ok()
                }
                Ok(_) => Response::err(format!("this socket controls task {name} only")),
            })
        });
    }
    let end = rt.join.map(|j| j.join()).transpose().map_err(|_| anyhow::anyhow!("task thread panicked"))?;
    // Let the last answer (e.g. the checkpoint reply) reach its client.
    let t = Instant::now();
    while in_flight.load(Ordering::SeqCst) > 0 && t.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(2));
    }
    match end {
        Some(TaskEnd::Exited(code)) => Ok(ExitCode::from(code.clamp(0, 255) as u8)),
        Some(TaskEnd::Checkpointed(path)) => {
            match path.to_str().and_then(|p| p.strip_prefix("tcp://")) {
                Some(dest) => eprintln!("[Migration] task {name} now runs on {dest}; its output continues there"),
                None => log::info!("task {name} checkpointed to {}", path.display()),
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(TaskEnd::Killed) => {
            log::info!("task {name} killed");
            Ok(ExitCode::from(137))
        }
        Some(TaskEnd::Failed(e)) => Err(anyhow::Error::new(e)),
        None => Err(OperationFailed("task thread lost".into()).into()),
    }
}
