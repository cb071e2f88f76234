//! Read-only file mappings (the one `unsafe` memmap2 call).

use memmap2::Mmap;
use std::fs::File;

/// Maps a whole file read-only.
pub fn map_readonly(f: &File) -> std::io::Result<Mmap> {
    // SAFETY: the mapping is private and read-only; the files mapped are executables and
    // shared libraries that another process could truncate while we read them, which
    // would raise SIGBUS. The tracer accepts that risk for a short-lived analysis.
    unsafe { Mmap::map(f) }
}
