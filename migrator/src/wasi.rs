//! WASI preview 1 on a serializable state of our own.
//!
//! wasmtime-wasi's context cannot be serialized, so the calls a task makes
//! are implemented here on [`WasiState`], which is plain data (serde): the
//! fd table with each file's preopen, relative path, offset and flags, the
//! preopened directories, args, env, the guest's monotonic clock and the
//! positions reached in stdin/stdout/stderr. Host file handles live beside it
//! in [`WasiCtx`] and are reopened from the state on restore. Offsets are
//! ours (every read and write is positional), so the host handle never holds
//! state that the image lacks.
//!
//! Calls that are not implemented return `ENOSYS` (52); see docs/migrator.md
//! for the list.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// WASI errno values used here.
pub mod errno {
    pub const SUCCESS: u16 = 0;
    pub const ACCES: u16 = 2;
    pub const BADF: u16 = 8;
    pub const EXIST: u16 = 20;
    pub const FAULT: u16 = 21;
    pub const INVAL: u16 = 28;
    pub const IO: u16 = 29;
    pub const ISDIR: u16 = 31;
    pub const NOENT: u16 = 44;
    pub const NOSYS: u16 = 52;
    pub const NOTDIR: u16 = 54;
    pub const NOTEMPTY: u16 = 55;
    pub const SPIPE: u16 = 70;
    pub const NOTCAPABLE: u16 = 76;
}
use errno::*;

const FILETYPE_CHAR: u8 = 2;
const FILETYPE_DIR: u8 = 3;
const FILETYPE_REGULAR: u8 = 4;
const FILETYPE_SYMLINK: u8 = 7;
const FDFLAG_APPEND: u16 = 1;
const OFLAG_CREAT: u16 = 1;
const OFLAG_DIRECTORY: u16 = 2;
const OFLAG_EXCL: u16 = 4;
const OFLAG_TRUNC: u16 = 8;
const RIGHT_FD_READ: u64 = 1 << 1;
const RIGHT_FD_WRITE: u64 = 1 << 6;
const RIGHTS_ALL: u64 = (1 << 29) - 1;

type Res<T = ()> = Result<T, u16>;

/// A preopened directory: `--dir HOST::GUEST`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Preopen {
    pub guest: String,
    pub host: PathBuf,
}

/// What an fd refers to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FdKind {
    Stdin,
    Stdout,
    Stderr,
    /// Preopened directory number `preopen` (index into `preopens`).
    Preopen { preopen: usize },
    /// A regular file below preopen `preopen`, at relative path `rel`.
    File { preopen: usize, rel: String, offset: u64, read: bool, write: bool },
    /// A directory below preopen `preopen`.
    Dir { preopen: usize, rel: String },
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FdEntry {
    #[serde(flatten)]
    pub kind: FdKind,
    pub fdflags: u16,
    pub rights_base: u64,
    pub rights_inheriting: u64,
}

/// The serializable WASI state of a task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WasiState {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub preopens: Vec<Preopen>,
    pub fds: BTreeMap<u32, FdEntry>,
    /// Bytes the task has read from stdin / written to stdout and stderr.
    pub stdin_pos: u64,
    pub stdout_pos: u64,
    pub stderr_pos: u64,
    /// The guest's monotonic clock (ns) when the state was captured; after a
    /// restore the clock continues from here, never backwards.
    pub monotonic_ns: u64,
}

impl WasiState {
    pub fn new(args: Vec<String>, env: Vec<String>, preopens: Vec<Preopen>) -> Self {
        let mut fds = BTreeMap::new();
        let stdio = |kind, base| FdEntry { kind, fdflags: 0, rights_base: base, rights_inheriting: 0 };
        // No seek/tell rights on stdio: wasi-libc then treats it as a tty
        // (line-buffered), the same under every engine and after restore.
        fds.insert(0, stdio(FdKind::Stdin, RIGHT_FD_READ));
        fds.insert(1, stdio(FdKind::Stdout, RIGHT_FD_WRITE));
        fds.insert(2, stdio(FdKind::Stderr, RIGHT_FD_WRITE));
        for (i, _) in preopens.iter().enumerate() {
            fds.insert(
                3 + i as u32,
                FdEntry {
                    kind: FdKind::Preopen { preopen: i },
                    fdflags: 0,
                    rights_base: RIGHTS_ALL,
                    rights_inheriting: RIGHTS_ALL,
                },
            );
        }
        WasiState { args, env, preopens, fds, stdin_pos: 0, stdout_pos: 0, stderr_pos: 0, monotonic_ns: 0 }
    }
}

/// Where a task's standard streams go.
pub struct Stdio {
    pub stdin: Box<dyn Read + Send>,
    pub stdout: Box<dyn Write + Send>,
    pub stderr: Box<dyn Write + Send>,
}

impl Stdio {
    /// The process's own stdin/stdout/stderr (foreground tasks).
    pub fn inherit() -> Self {
        Stdio {
            stdin: Box::new(std::io::stdin()),
            stdout: Box::new(std::io::stdout()),
            stderr: Box::new(std::io::stderr()),
        }
    }
}

/// The live context: the state plus host handles.
pub struct WasiCtx {
    pub state: WasiState,
    files: BTreeMap<u32, File>,
    stdio: Stdio,
    mono_base: Instant,
    mono_offset: u64,
    /// Set by `proc_exit`.
    pub exit_code: Option<i32>,
}

/// `proc_exit` unwinds the wasm stack with this error.
#[derive(Debug)]
pub struct ExitStatus(pub i32);
impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit status {}", self.0)
    }
}
impl std::error::Error for ExitStatus {}

impl WasiCtx {
    /// Builds a context from a (fresh or restored) state, opening every file
    /// the state refers to.
    pub fn new(state: WasiState, stdio: Stdio) -> Result<Self, String> {
        for p in &state.preopens {
            if !p.host.is_dir() {
                return Err(format!("preopened directory {} does not exist on this host", p.host.display()));
            }
        }
        let mut files = BTreeMap::new();
        for (fd, e) in &state.fds {
            if let FdKind::Dir { preopen, rel } = &e.kind {
                host_path(&state.preopens, *preopen, rel)
                    .map_err(|_| format!("fd {fd}: directory {rel:?} is not below a preopened directory"))?;
            }
            if let FdKind::File { preopen, rel, read, write, .. } = &e.kind {
                let host = host_path(&state.preopens, *preopen, rel)
                    .map_err(|_| format!("fd {fd}: file {rel:?} is not below a preopened directory"))?;
                let f = OpenOptions::new()
                    .read(*read)
                    .write(*write)
                    .open(&host)
                    .map_err(|err| format!("cannot reopen {} (fd {fd}): {err}", host.display()))?;
                files.insert(*fd, f);
            }
        }
        let mono_offset = state.monotonic_ns;
        Ok(WasiCtx { state, files, stdio, mono_base: Instant::now(), mono_offset, exit_code: None })
    }

    /// The state as it is now, ready to go into an image.
    pub fn snapshot(&mut self) -> WasiState {
        let _ = self.stdio.stdout.flush();
        let _ = self.stdio.stderr.flush();
        let mut s = self.state.clone();
        s.monotonic_ns = self.monotonic_now();
        s
    }

    pub fn flush(&mut self) {
        let _ = self.stdio.stdout.flush();
        let _ = self.stdio.stderr.flush();
    }

    fn monotonic_now(&self) -> u64 {
        self.mono_offset + self.mono_base.elapsed().as_nanos() as u64
    }

    fn entry(&self, fd: u32) -> Res<&FdEntry> {
        self.state.fds.get(&fd).ok_or(BADF)
    }

    fn dir_of(&self, fd: u32) -> Res<(usize, String)> {
        match &self.entry(fd)?.kind {
            FdKind::Preopen { preopen } => Ok((*preopen, String::new())),
            FdKind::Dir { preopen, rel } => Ok((*preopen, rel.clone())),
            _ => Err(NOTDIR),
        }
    }

    /// Resolves `path` (guest bytes) relative to directory fd `fd`, refusing
    /// to leave the preopened directory.
    fn resolve(&self, fd: u32, mem: &[u8], ptr: u32, len: u32) -> Res<(usize, String, PathBuf)> {
        let (preopen, base) = self.dir_of(fd)?;
        let raw = std::str::from_utf8(slice(mem, ptr, len)?).map_err(|_| INVAL)?;
        if raw.starts_with('/') {
            return Err(NOTCAPABLE);
        }
        let mut parts: Vec<&str> = base.split('/').filter(|s| !s.is_empty()).collect();
        for c in raw.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    parts.pop().ok_or(NOTCAPABLE)?;
                }
                c => parts.push(c),
            }
        }
        let rel = parts.join("/");
        let host = host_path(&self.state.preopens, preopen, &rel)?;
        Ok((preopen, rel, host))
    }

    fn alloc_fd(&self) -> u32 {
        (3..).find(|fd| !self.state.fds.contains_key(fd)).unwrap_or(u32::MAX)
    }

    pub fn args_sizes_get(&mut self, mem: &mut [u8], argc: u32, size: u32) -> Res {
        sizes(mem, &self.state.args, argc, size)
    }
    pub fn args_get(&mut self, mem: &mut [u8], argv: u32, buf: u32) -> Res {
        strings(mem, &self.state.args, argv, buf)
    }
    pub fn environ_sizes_get(&mut self, mem: &mut [u8], n: u32, size: u32) -> Res {
        sizes(mem, &self.state.env, n, size)
    }
    pub fn environ_get(&mut self, mem: &mut [u8], env: u32, buf: u32) -> Res {
        strings(mem, &self.state.env, env, buf)
    }

    pub fn clock_res_get(&mut self, mem: &mut [u8], id: u32, out: u32) -> Res {
        if id > 3 {
            return Err(INVAL);
        }
        put_u64(mem, out, 1)
    }

    pub fn clock_time_get(&mut self, mem: &mut [u8], id: u32, out: u32) -> Res {
        let t = match id {
            0 => SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0),
            1..=3 => self.monotonic_now(),
            _ => return Err(INVAL),
        };
        put_u64(mem, out, t)
    }

    pub fn fd_write(&mut self, mem: &mut [u8], fd: u32, iovs: u32, n: u32, out: u32) -> Res {
        let data = gather(mem, iovs, n)?;
        let written = self.write_bytes(fd, &data, None)?;
        put_u32(mem, out, written as u32)
    }

    pub fn fd_pwrite(&mut self, mem: &mut [u8], fd: u32, iovs: u32, n: u32, off: u64, out: u32) -> Res {
        let data = gather(mem, iovs, n)?;
        let written = self.write_bytes(fd, &data, Some(off))?;
        put_u32(mem, out, written as u32)
    }

    fn write_bytes(&mut self, fd: u32, data: &[u8], at: Option<u64>) -> Res<usize> {
        let fdflags = self.entry(fd)?.fdflags;
        let entry = self.state.fds.get_mut(&fd).ok_or(BADF)?;
        match &mut entry.kind {
            FdKind::Stdout | FdKind::Stderr if at.is_some() => Err(SPIPE),
            FdKind::Stdout => {
                self.stdio.stdout.write_all(data).map_err(|_| IO)?;
                let _ = self.stdio.stdout.flush();
                self.state.stdout_pos += data.len() as u64;
                Ok(data.len())
            }
            FdKind::Stderr => {
                self.stdio.stderr.write_all(data).map_err(|_| IO)?;
                let _ = self.stdio.stderr.flush();
                self.state.stderr_pos += data.len() as u64;
                Ok(data.len())
            }
            FdKind::File { offset, write: true, .. } => {
                let f = self.files.get(&fd).ok_or(BADF)?;
                let pos = match at {
                    Some(p) => p,
                    None if fdflags & FDFLAG_APPEND != 0 => f.metadata().map_err(|_| IO)?.len(),
                    None => *offset,
                };
                f.write_all_at(data, pos).map_err(|_| IO)?;
                if at.is_none() {
                    *offset = pos + data.len() as u64;
                }
                Ok(data.len())
            }
            FdKind::Preopen { .. } | FdKind::Dir { .. } => Err(ISDIR),
            _ => Err(BADF),
        }
    }

    pub fn fd_read(&mut self, mem: &mut [u8], fd: u32, iovs: u32, n: u32, out: u32) -> Res {
        self.read_into(mem, fd, iovs, n, None, out)
    }
    pub fn fd_pread(&mut self, mem: &mut [u8], fd: u32, iovs: u32, n: u32, off: u64, out: u32) -> Res {
        self.read_into(mem, fd, iovs, n, Some(off), out)
    }

    fn read_into(&mut self, mem: &mut [u8], fd: u32, iovs: u32, n: u32, at: Option<u64>, out: u32) -> Res {
        let vecs = iovecs(mem, iovs, n)?;
        let total: usize = vecs.iter().map(|v| v.1 as usize).sum();
        let mut buf = vec![0u8; total];
        let entry = self.state.fds.get_mut(&fd).ok_or(BADF)?;
        let got = match &mut entry.kind {
            FdKind::Stdin if at.is_some() => return Err(SPIPE),
            FdKind::Stdin => {
                let got = self.stdio.stdin.read(&mut buf).map_err(|_| IO)?;
                self.state.stdin_pos += got as u64;
                got
            }
            FdKind::File { offset, read: true, .. } => {
                let f = self.files.get(&fd).ok_or(BADF)?;
                let pos = at.unwrap_or(*offset);
                let mut got = 0;
                while got < total {
                    match f.read_at(&mut buf[got..], pos + got as u64) {
                        Ok(0) => break,
                        Ok(k) => got += k,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => return Err(IO),
                    }
                }
                if at.is_none() {
                    *offset = pos + got as u64;
                }
                got
            }
            FdKind::Preopen { .. } | FdKind::Dir { .. } => return Err(ISDIR),
            _ => return Err(BADF),
        };
        let mut done = 0;
        for (ptr, len) in vecs {
            if done >= got {
                break;
            }
            let k = (len as usize).min(got - done);
            slice_mut(mem, ptr, k as u32)?.copy_from_slice(&buf[done..done + k]);
            done += k;
        }
        put_u32(mem, out, got as u32)
    }

    pub fn fd_seek(&mut self, mem: &mut [u8], fd: u32, delta: i64, whence: u32, out: u32) -> Res {
        let len = self.files.get(&fd).map(|f| f.metadata().map(|m| m.len()).unwrap_or(0));
        let entry = self.state.fds.get_mut(&fd).ok_or(BADF)?;
        match &mut entry.kind {
            FdKind::File { offset, .. } => {
                let base = match whence {
                    0 => 0i128,
                    1 => *offset as i128,
                    2 => len.unwrap_or(0) as i128,
                    _ => return Err(INVAL),
                };
                let new = base + delta as i128;
                if new < 0 || new > i64::MAX as i128 {
                    return Err(INVAL);
                }
                *offset = new as u64;
                put_u64(mem, out, new as u64)
            }
            FdKind::Stdin | FdKind::Stdout | FdKind::Stderr => Err(SPIPE),
            _ => Err(BADF),
        }
    }

    pub fn fd_tell(&mut self, mem: &mut [u8], fd: u32, out: u32) -> Res {
        match &self.entry(fd)?.kind {
            FdKind::File { offset, .. } => put_u64(mem, out, *offset),
            FdKind::Stdin | FdKind::Stdout | FdKind::Stderr => Err(SPIPE),
            _ => Err(BADF),
        }
    }

    pub fn fd_close(&mut self, fd: u32) -> Res {
        self.state.fds.remove(&fd).ok_or(BADF)?;
        self.files.remove(&fd);
        Ok(())
    }

    pub fn fd_sync(&mut self, fd: u32) -> Res {
        self.entry(fd)?;
        if let Some(f) = self.files.get(&fd) {
            f.sync_all().map_err(|_| IO)?;
        }
        Ok(())
    }

    pub fn fd_renumber(&mut self, from: u32, to: u32) -> Res {
        let e = self.state.fds.remove(&from).ok_or(BADF)?;
        self.state.fds.insert(to, e);
        self.files.remove(&to);
        if let Some(f) = self.files.remove(&from) {
            self.files.insert(to, f);
        }
        Ok(())
    }

    fn filetype(&self, fd: u32) -> Res<u8> {
        Ok(match &self.entry(fd)?.kind {
            FdKind::Stdin | FdKind::Stdout | FdKind::Stderr => FILETYPE_CHAR,
            FdKind::Preopen { .. } | FdKind::Dir { .. } => FILETYPE_DIR,
            FdKind::File { .. } => FILETYPE_REGULAR,
        })
    }

    pub fn fd_fdstat_get(&mut self, mem: &mut [u8], fd: u32, out: u32) -> Res {
        let ft = self.filetype(fd)?;
        let e = self.entry(fd)?.clone();
        slice_mut(mem, out, 24)?.fill(0);
        put_u8(mem, out, ft)?;
        put_u16(mem, out + 2, e.fdflags)?;
        put_u64(mem, out + 8, e.rights_base)?;
        put_u64(mem, out + 16, e.rights_inheriting)
    }

    pub fn fd_fdstat_set_flags(&mut self, fd: u32, flags: u16) -> Res {
        let e = self.state.fds.get_mut(&fd).ok_or(BADF)?;
        e.fdflags = flags;
        Ok(())
    }

    pub fn fd_filestat_get(&mut self, mem: &mut [u8], fd: u32, out: u32) -> Res {
        let ft = self.filetype(fd)?;
        let meta = match &self.entry(fd)?.kind {
            FdKind::File { .. } => Some(self.files.get(&fd).ok_or(BADF)?.metadata().map_err(|_| IO)?),
            FdKind::Preopen { preopen } => Some(std::fs::metadata(&self.state.preopens[*preopen].host).map_err(|_| IO)?),
            FdKind::Dir { preopen, rel } => {
                Some(std::fs::metadata(host_path(&self.state.preopens, *preopen, rel)?).map_err(|_| IO)?)
            }
            _ => None,
        };
        write_filestat(mem, out, ft, meta.as_ref())
    }

    pub fn fd_filestat_set_size(&mut self, fd: u32, size: u64) -> Res {
        match &self.entry(fd)?.kind {
            FdKind::File { write: true, .. } => self.files.get(&fd).ok_or(BADF)?.set_len(size).map_err(|_| IO),
            _ => Err(BADF),
        }
    }

    pub fn fd_prestat_get(&mut self, mem: &mut [u8], fd: u32, out: u32) -> Res {
        match &self.entry(fd)?.kind {
            FdKind::Preopen { preopen } => {
                let len = self.state.preopens[*preopen].guest.len() as u32;
                put_u32(mem, out, 0)?;
                put_u32(mem, out + 4, len)
            }
            _ => Err(BADF),
        }
    }

    pub fn fd_prestat_dir_name(&mut self, mem: &mut [u8], fd: u32, ptr: u32, len: u32) -> Res {
        match &self.entry(fd)?.kind {
            FdKind::Preopen { preopen } => {
                let name = self.state.preopens[*preopen].guest.as_bytes();
                if (len as usize) < name.len() {
                    return Err(INVAL);
                }
                slice_mut(mem, ptr, name.len() as u32)?.copy_from_slice(name);
                Ok(())
            }
            _ => Err(BADF),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn path_open(
        &mut self,
        mem: &mut [u8],
        dirfd: u32,
        path: u32,
        len: u32,
        oflags: u16,
        rights_base: u64,
        rights_inheriting: u64,
        fdflags: u16,
        out: u32,
    ) -> Res {
        let (preopen, rel, host) = self.resolve(dirfd, mem, path, len)?;
        let is_dir = host.is_dir();
        let entry = if oflags & OFLAG_DIRECTORY != 0 || (is_dir && oflags & OFLAG_CREAT == 0) {
            if !is_dir {
                return Err(if host.exists() { NOTDIR } else { NOENT });
            }
            FdEntry { kind: FdKind::Dir { preopen, rel }, fdflags, rights_base, rights_inheriting }
        } else {
            if is_dir {
                return Err(ISDIR);
            }
            let read = rights_base & RIGHT_FD_READ != 0;
            let write = rights_base & RIGHT_FD_WRITE != 0 || oflags & OFLAG_TRUNC != 0;
            let mut o = OpenOptions::new();
            o.read(read || !write).write(write);
            if oflags & OFLAG_CREAT != 0 {
                if oflags & OFLAG_EXCL != 0 {
                    o.create_new(true);
                } else {
                    o.create(true);
                }
                o.mode(0o644);
            }
            if oflags & OFLAG_TRUNC != 0 {
                o.truncate(true);
            }
            let f = o.open(&host).map_err(|e| io_errno(&e))?;
            let fd = self.alloc_fd();
            self.files.insert(fd, f);
            self.state.fds.insert(
                fd,
                FdEntry {
                    kind: FdKind::File { preopen, rel, offset: 0, read: read || !write, write },
                    fdflags,
                    rights_base,
                    rights_inheriting,
                },
            );
            return put_u32(mem, out, fd);
        };
        let fd = self.alloc_fd();
        self.state.fds.insert(fd, entry);
        put_u32(mem, out, fd)
    }

    pub fn path_filestat_get(&mut self, mem: &mut [u8], dirfd: u32, flags: u32, path: u32, len: u32, out: u32) -> Res {
        let (_, _, host) = self.resolve(dirfd, mem, path, len)?;
        let meta = if flags & 1 != 0 { std::fs::metadata(&host) } else { std::fs::symlink_metadata(&host) }
            .map_err(|e| io_errno(&e))?;
        let ft = if meta.is_dir() {
            FILETYPE_DIR
        } else if meta.file_type().is_symlink() {
            FILETYPE_SYMLINK
        } else {
            FILETYPE_REGULAR
        };
        write_filestat(mem, out, ft, Some(&meta))
    }

    pub fn path_create_directory(&mut self, mem: &mut [u8], dirfd: u32, path: u32, len: u32) -> Res {
        let (_, _, host) = self.resolve(dirfd, mem, path, len)?;
        std::fs::create_dir(&host).map_err(|e| io_errno(&e))
    }

    pub fn path_remove_directory(&mut self, mem: &mut [u8], dirfd: u32, path: u32, len: u32) -> Res {
        let (_, _, host) = self.resolve(dirfd, mem, path, len)?;
        std::fs::remove_dir(&host).map_err(|e| io_errno(&e))
    }

    pub fn path_unlink_file(&mut self, mem: &mut [u8], dirfd: u32, path: u32, len: u32) -> Res {
        let (_, _, host) = self.resolve(dirfd, mem, path, len)?;
        if host.is_dir() {
            return Err(ISDIR);
        }
        std::fs::remove_file(&host).map_err(|e| io_errno(&e))
    }

    #[allow(clippy::too_many_arguments)]
    pub fn path_rename(&mut self, mem: &mut [u8], fd: u32, old: u32, old_len: u32, newfd: u32, new: u32, new_len: u32) -> Res {
        let (_, _, from) = self.resolve(fd, mem, old, old_len)?;
        let (_, _, to) = self.resolve(newfd, mem, new, new_len)?;
        std::fs::rename(&from, &to).map_err(|e| io_errno(&e))
    }

    /// Clock subscriptions sleep; fd subscriptions are reported ready at once.
    pub fn poll_oneoff(&mut self, mem: &mut [u8], input: u32, output: u32, nsubs: u32, out_n: u32) -> Res {
        if nsubs == 0 {
            return Err(INVAL);
        }
        let mut events = Vec::new();
        let mut sleep: Option<(u64, u64)> = None; // (ns, userdata)
        for i in 0..nsubs {
            let s = input + i * 48;
            let userdata = get_u64(mem, s)?;
            match get_u8(mem, s + 8)? {
                0 => {
                    let id = get_u32(mem, s + 16)?;
                    let timeout = get_u64(mem, s + 24)?;
                    let flags = get_u16(mem, s + 40)?;
                    let now = match id {
                        0 => SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0),
                        _ => self.monotonic_now(),
                    };
                    let rel = if flags & 1 != 0 { timeout.saturating_sub(now) } else { timeout };
                    if sleep.is_none_or(|(t, _)| rel < t) {
                        sleep = Some((rel, userdata));
                    }
                }
                tag @ (1 | 2) => events.push((userdata, tag)),
                _ => return Err(INVAL),
            }
        }
        if events.is_empty() {
            if let Some((ns, ud)) = sleep {
                std::thread::sleep(std::time::Duration::from_nanos(ns));
                events.push((ud, 0));
            }
        }
        for (i, (ud, tag)) in events.iter().enumerate() {
            let e = output + i as u32 * 32;
            slice_mut(mem, e, 32)?.fill(0);
            put_u64(mem, e, *ud)?;
            put_u8(mem, e + 10, *tag)?;
            if *tag != 0 {
                put_u64(mem, e + 16, 1)?;
            }
        }
        put_u32(mem, out_n, events.len() as u32)
    }

    pub fn random_get(&mut self, mem: &mut [u8], buf: u32, len: u32) -> Res {
        let dst = slice_mut(mem, buf, len)?;
        File::open("/dev/urandom").and_then(|mut f| f.read_exact(dst)).map_err(|_| IO)
    }
}

fn host_path(preopens: &[Preopen], preopen: usize, rel: &str) -> Res<PathBuf> {
    let p = preopens.get(preopen).ok_or(BADF)?;
    // `rel` is normalized when it comes from `resolve`, but an image's WASI state is
    // untrusted: an absolute path or a `..` step must not leave the preopen.
    if rel.starts_with('/') || rel.split('/').any(|c| c == "..") {
        return Err(NOTCAPABLE);
    }
    Ok(if rel.is_empty() { p.host.clone() } else { p.host.join(rel) })
}

fn io_errno(e: &std::io::Error) -> u16 {
    use std::io::ErrorKind::*;
    match e.kind() {
        NotFound => NOENT,
        PermissionDenied => ACCES,
        AlreadyExists => EXIST,
        NotADirectory => NOTDIR,
        IsADirectory => ISDIR,
        DirectoryNotEmpty => NOTEMPTY,
        InvalidInput => INVAL,
        _ => IO,
    }
}

fn write_filestat(mem: &mut [u8], out: u32, ft: u8, meta: Option<&std::fs::Metadata>) -> Res {
    slice_mut(mem, out, 64)?.fill(0);
    put_u8(mem, out + 16, ft)?;
    if let Some(m) = meta {
        put_u64(mem, out, m.dev())?;
        put_u64(mem, out + 8, m.ino())?;
        put_u64(mem, out + 24, m.nlink())?;
        put_u64(mem, out + 32, m.len())?;
        let ns = |s: i64, n: i64| (s.max(0) as u64) * 1_000_000_000 + n.max(0) as u64;
        put_u64(mem, out + 40, ns(m.atime(), m.atime_nsec()))?;
        put_u64(mem, out + 48, ns(m.mtime(), m.mtime_nsec()))?;
        put_u64(mem, out + 56, ns(m.ctime(), m.ctime_nsec()))?;
    }
    Ok(())
}

fn sizes(mem: &mut [u8], list: &[String], n: u32, size: u32) -> Res {
    put_u32(mem, n, list.len() as u32)?;
    put_u32(mem, size, list.iter().map(|s| s.len() as u32 + 1).sum())
}

fn strings(mem: &mut [u8], list: &[String], ptrs: u32, buf: u32) -> Res {
    let mut at = buf;
    for (i, s) in list.iter().enumerate() {
        put_u32(mem, ptrs + 4 * i as u32, at)?;
        let dst = slice_mut(mem, at, s.len() as u32 + 1)?;
        dst[..s.len()].copy_from_slice(s.as_bytes());
        dst[s.len()] = 0;
        at += s.len() as u32 + 1;
    }
    Ok(())
}

fn iovecs(mem: &[u8], iovs: u32, n: u32) -> Res<Vec<(u32, u32)>> {
    (0..n).map(|i| Ok((get_u32(mem, iovs + 8 * i)?, get_u32(mem, iovs + 8 * i + 4)?))).collect()
}

fn gather(mem: &[u8], iovs: u32, n: u32) -> Res<Vec<u8>> {
    let mut out = Vec::new();
    for (ptr, len) in iovecs(mem, iovs, n)? {
        out.extend_from_slice(slice(mem, ptr, len)?);
    }
    Ok(out)
}

fn slice(mem: &[u8], ptr: u32, len: u32) -> Res<&[u8]> {
    let end = (ptr as usize).checked_add(len as usize).ok_or(FAULT)?;
    mem.get(ptr as usize..end).ok_or(FAULT)
}
fn slice_mut(mem: &mut [u8], ptr: u32, len: u32) -> Res<&mut [u8]> {
    let end = (ptr as usize).checked_add(len as usize).ok_or(FAULT)?;
    mem.get_mut(ptr as usize..end).ok_or(FAULT)
}
fn get_u8(mem: &[u8], p: u32) -> Res<u8> {
    Ok(slice(mem, p, 1)?[0])
}
fn get_u16(mem: &[u8], p: u32) -> Res<u16> {
    Ok(u16::from_le_bytes(slice(mem, p, 2)?.try_into().map_err(|_| FAULT)?))
}
fn get_u32(mem: &[u8], p: u32) -> Res<u32> {
    Ok(u32::from_le_bytes(slice(mem, p, 4)?.try_into().map_err(|_| FAULT)?))
}
fn get_u64(mem: &[u8], p: u32) -> Res<u64> {
    Ok(u64::from_le_bytes(slice(mem, p, 8)?.try_into().map_err(|_| FAULT)?))
}
fn put_u8(mem: &mut [u8], p: u32, v: u8) -> Res {
    slice_mut(mem, p, 1)?[0] = v;
    Ok(())
}
fn put_u16(mem: &mut [u8], p: u32, v: u16) -> Res {
    slice_mut(mem, p, 2)?.copy_from_slice(&v.to_le_bytes());
    Ok(())
}
fn put_u32(mem: &mut [u8], p: u32, v: u32) -> Res {
    slice_mut(mem, p, 4)?.copy_from_slice(&v.to_le_bytes());
    Ok(())
}
fn put_u64(mem: &mut [u8], p: u32, v: u64) -> Res {
    slice_mut(mem, p, 8)?.copy_from_slice(&v.to_le_bytes());
    Ok(())
}

/// The preview 1 calls implemented here; every other
/// `wasi_snapshot_preview1` import a module asks for returns `ENOSYS`.
pub const IMPLEMENTED: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_advise",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_pread",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_pwrite",
    "fd_read",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_open",
    "path_remove_directory",
    "path_rename",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "random_get",
    "sched_yield",
];

/// Store data that carries a WASI context and the task's memory.
pub trait HasWasi: 'static {
    fn wasi(&mut self) -> &mut WasiCtx;
    fn memory(&self) -> Option<wasmtime::Memory>;
}

/// Runs `f` with the guest memory and the context; maps the outcome to an errno.
fn with_mem<T: HasWasi>(
    caller: &mut wasmtime::Caller<'_, T>,
    f: impl FnOnce(&mut [u8], &mut WasiCtx) -> Res,
) -> wasmtime::Result<i32> {
    let Some(mem) = caller.data().memory() else { return Ok(FAULT as i32) };
    let (m, data) = mem.data_and_store_mut(caller);
    Ok(match f(m, data.wasi()) {
        Ok(()) => SUCCESS as i32,
        Err(e) => e as i32,
    })
}

const WASI: &str = "wasi_snapshot_preview1";

/// Defines the implemented calls in `linker` (see [`IMPLEMENTED`]).
pub fn add_to_linker<T: HasWasi>(linker: &mut wasmtime::Linker<T>) -> wasmtime::Result<()> {
    use wasmtime::Caller;
    type C<'a, T> = Caller<'a, T>;
    let u = |x: i32| x as u32;
    linker.func_wrap(WASI, "args_get", move |mut c: C<'_, T>, a: i32, b: i32| with_mem(&mut c, |m, w| w.args_get(m, u(a), u(b))))?;
    linker.func_wrap(WASI, "args_sizes_get", move |mut c: C<'_, T>, a: i32, b: i32| with_mem(&mut c, |m, w| w.args_sizes_get(m, u(a), u(b))))?;
    linker.func_wrap(WASI, "environ_get", move |mut c: C<'_, T>, a: i32, b: i32| with_mem(&mut c, |m, w| w.environ_get(m, u(a), u(b))))?;
    linker.func_wrap(WASI, "environ_sizes_get", move |mut c: C<'_, T>, a: i32, b: i32| with_mem(&mut c, |m, w| w.environ_sizes_get(m, u(a), u(b))))?;
    linker.func_wrap(WASI, "clock_res_get", move |mut c: C<'_, T>, a: i32, b: i32| with_mem(&mut c, |m, w| w.clock_res_get(m, u(a), u(b))))?;
    linker.func_wrap(WASI, "clock_time_get", move |mut c: C<'_, T>, id: i32, _prec: i64, out: i32| with_mem(&mut c, |m, w| w.clock_time_get(m, u(id), u(out))))?;
    linker.func_wrap(WASI, "fd_advise", move |mut c: C<'_, T>, fd: i32, _o: i64, _l: i64, _a: i32| with_mem(&mut c, |_, w| w.entry(u(fd)).map(|_| ())))?;
    linker.func_wrap(WASI, "fd_close", move |mut c: C<'_, T>, fd: i32| with_mem(&mut c, |_, w| w.fd_close(u(fd))))?;
    linker.func_wrap(WASI, "fd_datasync", move |mut c: C<'_, T>, fd: i32| with_mem(&mut c, |_, w| w.fd_sync(u(fd))))?;
    linker.func_wrap(WASI, "fd_sync", move |mut c: C<'_, T>, fd: i32| with_mem(&mut c, |_, w| w.fd_sync(u(fd))))?;
    linker.func_wrap(WASI, "fd_fdstat_get", move |mut c: C<'_, T>, fd: i32, out: i32| with_mem(&mut c, |m, w| w.fd_fdstat_get(m, u(fd), u(out))))?;
    linker.func_wrap(WASI, "fd_fdstat_set_flags", move |mut c: C<'_, T>, fd: i32, fl: i32| with_mem(&mut c, |_, w| w.fd_fdstat_set_flags(u(fd), fl as u16)))?;
    linker.func_wrap(WASI, "fd_filestat_get", move |mut c: C<'_, T>, fd: i32, out: i32| with_mem(&mut c, |m, w| w.fd_filestat_get(m, u(fd), u(out))))?;
    linker.func_wrap(WASI, "fd_filestat_set_size", move |mut c: C<'_, T>, fd: i32, sz: i64| with_mem(&mut c, |_, w| w.fd_filestat_set_size(u(fd), sz as u64)))?;
    linker.func_wrap(WASI, "fd_pread", move |mut c: C<'_, T>, fd: i32, iovs: i32, n: i32, off: i64, out: i32| with_mem(&mut c, |m, w| w.fd_pread(m, u(fd), u(iovs), u(n), off as u64, u(out))))?;
    linker.func_wrap(WASI, "fd_pwrite", move |mut c: C<'_, T>, fd: i32, iovs: i32, n: i32, off: i64, out: i32| with_mem(&mut c, |m, w| w.fd_pwrite(m, u(fd), u(iovs), u(n), off as u64, u(out))))?;
    linker.func_wrap(WASI, "fd_prestat_get", move |mut c: C<'_, T>, fd: i32, out: i32| with_mem(&mut c, |m, w| w.fd_prestat_get(m, u(fd), u(out))))?;
    linker.func_wrap(WASI, "fd_prestat_dir_name", move |mut c: C<'_, T>, fd: i32, p: i32, l: i32| with_mem(&mut c, |m, w| w.fd_prestat_dir_name(m, u(fd), u(p), u(l))))?;
    linker.func_wrap(WASI, "fd_read", move |mut c: C<'_, T>, fd: i32, iovs: i32, n: i32, out: i32| with_mem(&mut c, |m, w| w.fd_read(m, u(fd), u(iovs), u(n), u(out))))?;
    linker.func_wrap(WASI, "fd_write", move |mut c: C<'_, T>, fd: i32, iovs: i32, n: i32, out: i32| with_mem(&mut c, |m, w| w.fd_write(m, u(fd), u(iovs), u(n), u(out))))?;
    linker.func_wrap(WASI, "fd_renumber", move |mut c: C<'_, T>, a: i32, b: i32| with_mem(&mut c, |_, w| w.fd_renumber(u(a), u(b))))?;
    linker.func_wrap(WASI, "fd_seek", move |mut c: C<'_, T>, fd: i32, d: i64, wh: i32, out: i32| with_mem(&mut c, |m, w| w.fd_seek(m, u(fd), d, u(wh), u(out))))?;
    linker.func_wrap(WASI, "fd_tell", move |mut c: C<'_, T>, fd: i32, out: i32| with_mem(&mut c, |m, w| w.fd_tell(m, u(fd), u(out))))?;
    linker.func_wrap(WASI, "path_create_directory", move |mut c: C<'_, T>, fd: i32, p: i32, l: i32| with_mem(&mut c, |m, w| w.path_create_directory(m, u(fd), u(p), u(l))))?;
    linker.func_wrap(WASI, "path_remove_directory", move |mut c: C<'_, T>, fd: i32, p: i32, l: i32| with_mem(&mut c, |m, w| w.path_remove_directory(m, u(fd), u(p), u(l))))?;
    linker.func_wrap(WASI, "path_unlink_file", move |mut c: C<'_, T>, fd: i32, p: i32, l: i32| with_mem(&mut c, |m, w| w.path_unlink_file(m, u(fd), u(p), u(l))))?;
    linker.func_wrap(WASI, "path_filestat_get", move |mut c: C<'_, T>, fd: i32, fl: i32, p: i32, l: i32, out: i32| with_mem(&mut c, |m, w| w.path_filestat_get(m, u(fd), u(fl), u(p), u(l), u(out))))?;
    linker.func_wrap(WASI, "path_rename", move |mut c: C<'_, T>, fd: i32, p: i32, l: i32, nfd: i32, np: i32, nl: i32| with_mem(&mut c, |m, w| w.path_rename(m, u(fd), u(p), u(l), u(nfd), u(np), u(nl))))?;
    linker.func_wrap(
        WASI,
        "path_open",
        move |mut c: C<'_, T>, fd: i32, _dirflags: i32, p: i32, l: i32, oflags: i32, rb: i64, ri: i64, fdflags: i32, out: i32| {
            with_mem(&mut c, |m, w| w.path_open(m, u(fd), u(p), u(l), oflags as u16, rb as u64, ri as u64, fdflags as u16, u(out)))
        },
    )?;
    linker.func_wrap(WASI, "poll_oneoff", move |mut c: C<'_, T>, i: i32, o: i32, n: i32, out: i32| with_mem(&mut c, |m, w| w.poll_oneoff(m, u(i), u(o), u(n), u(out))))?;
    linker.func_wrap(WASI, "random_get", move |mut c: C<'_, T>, p: i32, l: i32| with_mem(&mut c, |m, w| w.random_get(m, u(p), u(l))))?;
    linker.func_wrap(WASI, "sched_yield", move |_c: C<'_, T>| -> wasmtime::Result<i32> {
        std::thread::yield_now();
        Ok(0)
    })?;
    linker.func_wrap(WASI, "proc_exit", move |mut c: C<'_, T>, code: i32| -> wasmtime::Result<()> {
        c.data_mut().wasi().exit_code = Some(code);
        Err(wasmtime::Error::new(ExitStatus(code)))
    })?;
    Ok(())
}

/// Defines every other `wasi_snapshot_preview1` import of `module` as a
/// function returning `ENOSYS`, so modules using calls we do not support
/// still load and get a clean error when they make the call.
pub fn add_enosys_stubs<T: HasWasi>(linker: &mut wasmtime::Linker<T>, module: &wasmtime::Module) -> wasmtime::Result<()> {
    for imp in module.imports() {
        if imp.module() != WASI || IMPLEMENTED.contains(&imp.name()) {
            continue;
        }
        if let wasmtime::ExternType::Func(ty) = imp.ty() {
            let name = imp.name().to_string();
            linker.func_new(WASI, imp.name(), ty.clone(), move |_c, _params, results| {
                log::debug!("unsupported WASI call {name}: ENOSYS");
                for r in results.iter_mut() {
                    *r = wasmtime::Val::I32(NOSYS as i32);
                }
                Ok(())
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_refuses_escape() {
        let dir = tempfile::tempdir().unwrap();
        let st = WasiState::new(vec![], vec![], vec![Preopen { guest: "/d".into(), host: dir.path().into() }]);
        let ctx = WasiCtx::new(st, Stdio::inherit()).unwrap();
        let mem = b"../x a/../b".to_vec();
        assert_eq!(ctx.resolve(3, &mem, 0, 4).unwrap_err(), NOTCAPABLE);
        let (_, rel, host) = ctx.resolve(3, &mem, 5, 6).unwrap();
        assert_eq!(rel, "b");
        assert_eq!(host, dir.path().join("b"));
    }

    #[test]
    fn state_roundtrips_through_json() {
        let st = WasiState::new(vec!["a".into()], vec!["K=V".into()], vec![]);
        let j = serde_json::to_string(&st).unwrap();
        assert_eq!(serde_json::from_str::<WasiState>(&j).unwrap(), st);
    }
}
