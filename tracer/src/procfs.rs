//! Reading a process through /proc: maps, memory, threads, status.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("no process with pid {pid}")]
    NoSuchProcess { pid: i32 },
    #[error("reading {path}: {source}")]
    Io { path: String, source: io::Error },
}

fn io_err(path: impl Into<String>) -> impl FnOnce(io::Error) -> ProcError {
    let path = path.into();
    move |source| ProcError::Io { path, source }
}

/// One line of /proc/PID/maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    pub offset: u64,
    pub inode: u64,
    /// Path or pseudo-name (`[stack]`, `[vdso]`, `[heap]`), without a ` (deleted)` suffix.
    pub path: Option<String>,
    pub deleted: bool,
}

impl Mapping {
    /// File-backed (inode != 0 and an absolute path).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.path.as_deref().is_some_and(|p| p.starts_with('/'))
    }
    pub fn contains(&self, addr: u64) -> bool {
        (self.start..self.end).contains(&addr)
    }
}

/// Parses the text of /proc/PID/maps.
pub fn parse_maps(text: &str) -> Vec<Mapping> {
    text.lines().filter_map(parse_maps_line).collect()
}

fn parse_maps_line(line: &str) -> Option<Mapping> {
    let mut it = line.splitn(6, ' ');
    let range = it.next()?;
    let perms = it.next()?.as_bytes();
    let offset = u64::from_str_radix(it.next()?, 16).ok()?;
    let _dev = it.next()?;
    let inode = it.next()?.parse().ok()?;
    let rest = it.next().unwrap_or("").trim_start();
    let (s, e) = range.split_once('-')?;
    let (path, deleted) = if rest.is_empty() {
        (None, false)
    } else if let Some(p) = rest.strip_suffix(" (deleted)") {
        (Some(p.to_string()), true)
    } else {
        (Some(rest.to_string()), false)
    };
    if perms.len() < 4 {
        return None;
    }
    Some(Mapping {
        start: u64::from_str_radix(s, 16).ok()?,
        end: u64::from_str_radix(e, 16).ok()?,
        read: perms[0] == b'r',
        write: perms[1] == b'w',
        exec: perms[2] == b'x',
        offset,
        inode,
        path,
        deleted,
    })
}

/// A process seen through /proc.
#[derive(Debug)]
pub struct Proc {
    pub pid: i32,
    root: PathBuf,
}

impl Proc {
    pub fn new(pid: i32) -> Result<Proc, ProcError> {
        if pid <= 0 {
            return Err(ProcError::NoSuchProcess { pid });
        }
        let root = PathBuf::from(format!("/proc/{pid}"));
        if !root.exists() {
            return Err(ProcError::NoSuchProcess { pid });
        }
        Ok(Proc { pid, root })
    }

    fn read_string(&self, name: &str) -> Result<String, ProcError> {
        let p = self.root.join(name);
        std::fs::read_to_string(&p).map_err(|e| self.classify(e, p.display().to_string()))
    }

    fn classify(&self, e: io::Error, path: String) -> ProcError {
        if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH) {
            ProcError::NoSuchProcess { pid: self.pid }
        } else {
            ProcError::Io { path, source: e }
        }
    }

    pub fn maps(&self) -> Result<Vec<Mapping>, ProcError> {
        Ok(parse_maps(&self.read_string("maps")?))
    }

    /// Thread ids (from /proc/PID/task).
    pub fn tids(&self) -> Result<Vec<i32>, ProcError> {
        let dir = self.root.join("task");
        let rd = std::fs::read_dir(&dir).map_err(|e| self.classify(e, dir.display().to_string()))?;
        let mut v: Vec<i32> = rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
        v.sort_unstable();
        Ok(v)
    }

    /// Fields of /proc/PID/status as (key, value) pairs.
    pub fn status(&self) -> Result<Vec<(String, String)>, ProcError> {
        Ok(self
            .read_string("status")?
            .lines()
            .filter_map(|l| l.split_once(':').map(|(k, v)| (k.to_string(), v.trim().to_string())))
            .collect())
    }

    /// The `flags` field of /proc/PID/stat (PF_KTHREAD = 0x0020_0000).
    pub fn stat_flags(&self) -> Result<u64, ProcError> {
        let s = self.read_string("stat")?;
        // comm may contain spaces and parentheses: fields start after the last ')'.
        let rest = s.rsplit_once(')').map(|x| x.1).unwrap_or("");
        Ok(rest.split_whitespace().nth(6).and_then(|f| f.parse().ok()).unwrap_or(0))
    }

    pub fn exe(&self) -> Option<String> {
        std::fs::read_link(self.root.join("exe")).ok().map(|p| p.display().to_string())
    }

    pub fn environ(&self) -> Vec<String> {
        std::fs::read(self.root.join("environ"))
            .map(|b| b.split(|&c| c == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect())
            .unwrap_or_default()
    }

    /// Opens a mapped file through /proc/PID/map_files (works for deleted or replaced
    /// files), falling back to its path.
    pub fn open_mapped(&self, m: &Mapping) -> Result<File, ProcError> {
        let mf = self.root.join(format!("map_files/{:x}-{:x}", m.start, m.end));
        match File::open(&mf) {
            Ok(f) => Ok(f),
            Err(e) => {
                let path = m.path.clone().unwrap_or_default();
                if m.deleted {
                    return Err(ProcError::Io { path: mf.display().to_string(), source: e });
                }
                File::open(&path).map_err(io_err(path))
            }
        }
    }

    pub fn mem(&self) -> Result<ProcMem, ProcError> {
        let p = self.root.join("mem");
        let file = File::open(&p).map_err(|e| self.classify(e, p.display().to_string()))?;
        Ok(ProcMem { file })
    }
}

/// Reads target memory through /proc/PID/mem.
#[derive(Debug)]
pub struct ProcMem {
    file: File,
}

impl ProcMem {
    /// Reads as much of `[addr, addr+buf.len())` as is mapped; returns the byte count.
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> usize {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], addr.wrapping_add(done as u64)) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let text = "55d0c0a00000-55d0c0a02000 r-xp 00001000 fd:01 1234  /usr/bin/cat\n\
                    7f00aa000000-7f00aa021000 rw-p 00000000 00:00 0 \n\
                    7ffd1e5f0000-7ffd1e611000 rw-p 00000000 00:00 0                          [stack]\n\
                    7f00bb000000-7f00bb001000 r-xp 00000000 00:05 99 /tmp/a b (deleted)\n\
                    garbage line\n";
        let m = parse_maps(text);
        assert_eq!(m.len(), 4);
        assert!(m[0].exec && !m[0].write && m[0].is_file());
        assert_eq!(m[0].offset, 0x1000);
        assert_eq!(m[0].path.as_deref(), Some("/usr/bin/cat"));
        assert_eq!(m[1].path, None);
        assert_eq!(m[2].path.as_deref(), Some("[stack]"));
        assert!(!m[2].is_file());
        assert!(m[3].deleted);
        assert_eq!(m[3].path.as_deref(), Some("/tmp/a b"));
    }
}
