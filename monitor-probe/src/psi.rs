//! PSI trigger on /proc/pressure/memory: the kernel wakes us (POLLPRI) when tasks stalled on
//! memory for `stall` within a 2 s window, instead of us polling the averages.
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

pub const PSI_MEMORY: &str = "/proc/pressure/memory";
/// Unprivileged PSI triggers need a window that is a multiple of 2 s; use that everywhere.
pub const WINDOW: Duration = Duration::from_secs(2);

pub struct PsiTrigger {
    fd: AsyncFd<File>,
}

impl PsiTrigger {
    pub fn open(stall: Duration) -> io::Result<PsiTrigger> {
        let mut f = OpenOptions::new().read(true).write(true).custom_flags(libc::O_NONBLOCK).open(PSI_MEMORY)?;
        let stall_us = stall.as_micros().clamp(1, WINDOW.as_micros());
        // One write with the trailing NUL, as the kernel's psi documentation does.
        f.write_all(format!("some {stall_us} {}\0", WINDOW.as_micros()).as_bytes())?;
        Ok(PsiTrigger { fd: crate::sys::psi_fd(f)? })
    }

    /// Wait for the next trigger.
    pub async fn wait(&self) -> io::Result<()> {
        let mut g = self.fd.ready(Interest::PRIORITY).await?;
        g.clear_ready();
        Ok(())
    }
}

pub fn read_avg10() -> Option<f64> {
    crate::procfs::psi_some_avg10(&std::fs::read_to_string(PSI_MEMORY).ok()?)
}
