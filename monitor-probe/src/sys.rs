//! The only `unsafe` in this crate: registering owned file descriptors with tokio's reactor.
use aya::maps::{MapData, RingBuf};
use std::fs::File;
use std::io;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Wake on ring-buffer data (EPOLLIN).
pub fn ring_fd(ring: RingBuf<MapData>) -> io::Result<AsyncFd<RingBuf<MapData>>> {
    // SAFETY: the RingBuf owns its MapData, which owns the map fd; `as_raw_fd` always returns
    // that fd, and it stays open until the RingBuf (moved into the AsyncFd) is dropped.
    Ok(unsafe { AsyncFd::register(ring) }?)
}

/// Wake on a PSI trigger (EPOLLPRI).
pub fn psi_fd(file: File) -> io::Result<AsyncFd<File>> {
    // SAFETY: the File owns its fd and is moved into the AsyncFd, so the fd stays open and
    // unchanged for the AsyncFd's lifetime.
    Ok(unsafe { AsyncFd::register_with_interest(file, Interest::PRIORITY) }?)
}
