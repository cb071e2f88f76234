//! The only `unsafe` in the crate.

use std::path::Path;

/// The kernel's page size on x86-64.
const OS_PAGE: usize = 4096;

/// Loads compiled code from our own cache directory.
pub fn deserialize_cached(engine: &wasmtime::Engine, path: &Path) -> wasmtime::Result<wasmtime::Module> {
    // SAFETY: `Module::deserialize_file` trusts the file to be code that
    // wasmtime itself produced. The file lives in migrator's private cache
    // directory, was written there by `Module::serialize` under a name keyed by
    // the instrumented module's hash and the engine's compatibility hash, and
    // wasmtime still checks its header (version, target, config) and refuses a
    // mismatch, in which case the caller recompiles.
    unsafe { wasmtime::Module::deserialize_file(engine, path) }
}

/// Asks the kernel to back `buf` with transparent huge pages (the host's
/// THP mode is usually `madvise`): filling a fresh 64 MiB buffer then takes
/// 32 faults instead of 16384. Purely advisory; errors are ignored.
pub fn advise_hugepages(buf: &mut [u8]) {
    if !thp_wanted() {
        return;
    }
    // SAFETY: the range is `buf`, which we borrow mutably, so it is mapped and
    // ours; MADV_HUGEPAGE only changes how the kernel backs the pages, never
    // their contents or protection.
    unsafe { advise_whole_pages(buf.as_mut_ptr() as usize, buf.len(), libc::MADV_HUGEPAGE) }
}

/// `madvise(advice)` on the whole 4 KiB pages inside `[start, start + len)`
/// (a range smaller than one page is left alone). Errors are ignored: every
/// use is advisory.
///
/// # Safety
/// `[start, start + len)` must lie inside one allocation this process owns,
/// and `advice` must not change what Rust code can observe of its contents
/// (e.g. MADV_HUGEPAGE, MADV_POPULATE_WRITE).
unsafe fn advise_whole_pages(start: usize, len: usize, advice: libc::c_int) {
    let aligned = start.next_multiple_of(OS_PAGE);
    let end = (start + len) / OS_PAGE * OS_PAGE;
    if end > aligned {
        // SAFETY: [aligned, end) lies inside the caller's range (see # Safety).
        unsafe {
            libc::madvise(aligned as *mut libc::c_void, end - aligned, advice);
        }
    }
}

/// An empty buffer with room for `len` bytes, backed by huge pages where possible.
pub fn huge_with_capacity(len: usize) -> Vec<u8> {
    let mut v: Vec<u8> = Vec::with_capacity(len);
    if !thp_wanted() {
        return v;
    }
    // SAFETY: the range is the allocation `v` owns (its capacity), which is
    // mapped; MADV_HUGEPAGE is advisory and does not touch the (uninitialised)
    // contents.
    unsafe { advise_whole_pages(v.as_mut_ptr() as usize, v.capacity(), libc::MADV_HUGEPAGE) }
    v
}

/// `MIGRATOR_THP=1` turns the huge-page advice on. Off by default: with the
/// usual `defrag=madvise` setting a fault may stall in direct compaction on
/// a busy host, which cost more than it saved in our measurements.
fn thp_wanted() -> bool {
    std::env::var_os("MIGRATOR_THP").is_some_and(|v| v == "1")
}

/// CPU time consumed by the calling thread (robust against other load on
/// the host, unlike wall time).
pub fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return std::time::Duration::ZERO;
    }
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Pre-faults `buf` for writing in one system call (`MADV_POPULATE_WRITE`,
/// Linux 5.14+): much cheaper than taking one page fault per 4 KiB while
/// filling fresh memory. Advisory; errors (older kernels) are ignored.
pub fn populate_write(buf: &mut [u8]) {
    if !populate_wanted() {
        return;
    }
    // SAFETY: the range is `buf`, which we borrow mutably, so it is mapped
    // writable memory of ours; populating only faults pages in and never
    // changes their contents.
    unsafe { advise_whole_pages(buf.as_mut_ptr() as usize, buf.len(), libc::MADV_POPULATE_WRITE) }
}

/// `MIGRATOR_POPULATE=0` turns pre-faulting off.
fn populate_wanted() -> bool {
    !std::env::var_os("MIGRATOR_POPULATE").is_some_and(|v| v == "0")
}

/// [`populate_write`] for the spare capacity of `v` (before reading into it).
pub fn populate_spare(v: &mut Vec<u8>) {
    if !populate_wanted() {
        return;
    }
    let spare = v.spare_capacity_mut();
    // SAFETY: the range is the spare capacity of `v`, which we borrow
    // mutably: allocated, writable, ours. Populating faults the pages in
    // (zero-filled by the kernel) and reads or writes no Rust value.
    unsafe { advise_whole_pages(spare.as_mut_ptr() as usize, spare.len(), libc::MADV_POPULATE_WRITE) }
}

/// A zero-filled anonymous private mapping whose pages can later be *moved*
/// (page-table entries, no copy) onto a task's linear memory: the
/// destination of a live migration fills one with pre-copied pages while the
/// task still runs on the source, so restoring does not copy them again.
pub struct PageBuf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: a PageBuf exclusively owns its mapping (like a Vec<u8>).
unsafe impl Send for PageBuf {}
unsafe impl Sync for PageBuf {}


impl PageBuf {
    /// `len` bytes (rounded up to whole pages), faulted in now rather than
    /// while the task is stopped.
    pub fn new(len: usize) -> std::io::Result<PageBuf> {
        let mut b = Self::unpopulated(len)?;
        populate_write(b.as_mut_slice());
        Ok(b)
    }

    /// Like [`PageBuf::new`], but pages are faulted in (zero) on first touch.
    pub fn unpopulated(len: usize) -> std::io::Result<PageBuf> {
        let len = len.max(1).next_multiple_of(OS_PAGE);
        // SAFETY: a fresh anonymous mapping at an address the kernel picks;
        // it aliases nothing.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let mut b = PageBuf { ptr: p.cast(), len };
        advise_hugepages(b.as_mut_slice());
        Ok(b)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: [ptr, ptr + len) is our readable mapping for as long as self lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the borrow exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    /// Grows to at least `len` bytes (new pages zero), moving the mapping if needed.
    pub fn grow(&mut self, len: usize) -> std::io::Result<()> {
        let len = len.next_multiple_of(OS_PAGE);
        if len <= self.len {
            return Ok(());
        }
        // SAFETY: [ptr, ptr + self.len) is exactly our mapping; MREMAP_MAYMOVE
        // lets the kernel pick a new address, which we take over.
        let p = unsafe { libc::mremap(self.ptr.cast(), self.len, len, libc::MREMAP_MAYMOVE) };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        self.ptr = p.cast();
        self.len = len;
        Ok(())
    }

    /// Moves the first `min(len, dst.len())` bytes (whole pages) onto `dst`,
    /// which then reads exactly as this buffer did; returns the number of
    /// bytes moved. Nothing is copied: the kernel moves the page-table
    /// entries and unmaps what `dst` had there. `dst` must start on a page
    /// boundary and be a private writable mapping that nothing else expects
    /// to keep (a task's linear memory right after instantiation); a moved
    /// length that is not a whole number of pages is left to the caller.
    pub fn move_onto(mut self, dst: &mut [u8]) -> std::io::Result<usize> {
        if !(dst.as_ptr() as usize).is_multiple_of(OS_PAGE) {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "destination is not page-aligned"));
        }
        let n = self.len.min(dst.len()) / OS_PAGE * OS_PAGE;
        if n == 0 {
            return Ok(0);
        }
        // SAFETY: the source range is the start of our own mapping; the
        // destination range is `dst`, which we borrow mutably (no Rust
        // reference can observe the swap) and which the caller guarantees
        // is a private writable mapping it is fine to replace. The ranges do
        // not overlap (two distinct mappings). Afterwards `dst` reads as our
        // bytes did, with the same protection.
        let p = unsafe {
            libc::mremap(self.ptr.cast(), n, n, libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED, dst.as_mut_ptr().cast::<libc::c_void>())
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // What is left of our mapping (if anything) is unmapped by Drop.
        // SAFETY: stays within (or one past the end of) our original range.
        self.ptr = unsafe { self.ptr.add(n) };
        self.len -= n;
        Ok(n)
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: [ptr, ptr + len) is the part of the mapping still ours.
            unsafe {
                libc::munmap(self.ptr.cast(), self.len);
            }
        }
    }
}

/// Which pages of a range were written since the last look, from the kernel
/// rather than by comparing memory: userfaultfd write-protection in
/// asynchronous mode (a write just clears the page's protection, no fault is
/// delivered) read and re-armed in one step by the `PAGEMAP_SCAN` ioctl
/// (Linux 6.7+). Live migration uses it so that neither a pre-copy round nor
/// the final stop compares all of memory. [`WriteTracker::new`] fails (and the
/// caller falls back to comparing) where the kernel or the mapping does not
/// support it.
pub struct WriteTracker {
    uffd: std::os::fd::OwnedFd,
    pagemap: std::fs::File,
    start: u64,
    len: u64,
}

mod uffd {
    pub const UFFD_USER_MODE_ONLY: libc::c_int = 1;
    pub const UFFD_API: u64 = 0xAA;
    pub const FEATURE_WP_HUGETLBFS_SHMEM: u64 = 1 << 12;
    pub const FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
    pub const FEATURE_WP_ASYNC: u64 = 1 << 15;
    pub const REGISTER_MODE_WP: u64 = 1 << 1;
    pub const WRITEPROTECT_MODE_WP: u64 = 1 << 0;
    // _IOWR(0xAA, nr, size)
    pub const UFFDIO_API: libc::c_ulong = 0xC018_AA3F;
    pub const UFFDIO_REGISTER: libc::c_ulong = 0xC020_AA00;
    pub const UFFDIO_WRITEPROTECT: libc::c_ulong = 0xC018_AA06;
    // _IOWR('f', 16, struct pm_scan_arg)
    pub const PAGEMAP_SCAN: libc::c_ulong = 0xC060_6610;
    pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
    pub const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;
    pub const PAGE_IS_WRITTEN: u64 = 1 << 1;

    #[repr(C)]
    pub struct Api {
        pub api: u64,
        pub features: u64,
        pub ioctls: u64,
    }
    #[repr(C)]
    pub struct Range {
        pub start: u64,
        pub len: u64,
    }
    #[repr(C)]
    pub struct Register {
        pub range: Range,
        pub mode: u64,
        pub ioctls: u64,
    }
    #[repr(C)]
    pub struct WriteProtect {
        pub range: Range,
        pub mode: u64,
    }
    #[repr(C)]
    pub struct PmScanArg {
        pub size: u64,
        pub flags: u64,
        pub start: u64,
        pub end: u64,
        pub walk_end: u64,
        pub vec: u64,
        pub vec_len: u64,
        pub max_pages: u64,
        pub category_inverted: u64,
        pub category_mask: u64,
        pub category_anyof_mask: u64,
        pub return_mask: u64,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    pub struct PageRegion {
        pub start: u64,
        pub end: u64,
        pub categories: u64,
    }
}

fn ioctl_ok(r: libc::c_int) -> std::io::Result<libc::c_int> {
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl WriteTracker {
    /// Starts tracking writes to `mem` (all of it counts as clean from now on).
    /// `mem` must stay mapped at the same place while the tracker lives; the
    /// tracker never reads or writes it, it only asks the kernel about it.
    pub fn new(mem: &[u8]) -> std::io::Result<WriteTracker> {
        use std::os::fd::FromRawFd;
        let (start, len) = (mem.as_ptr() as u64, mem.len() as u64);
        if !start.is_multiple_of(OS_PAGE as u64) || !len.is_multiple_of(OS_PAGE as u64) || len == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "range not page-aligned"));
        }
        // SAFETY: plain syscall; user-mode-only needs no privilege and the
        // returned descriptor is owned right away.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK | uffd::UFFD_USER_MODE_ONLY) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nobody else owns.
        let uffd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as libc::c_int) };
        let raw = std::os::fd::AsRawFd::as_raw_fd(&uffd);
        let mut api = uffd::Api {
            api: uffd::UFFD_API,
            features: uffd::FEATURE_WP_ASYNC | uffd::FEATURE_WP_UNPOPULATED | uffd::FEATURE_WP_HUGETLBFS_SHMEM,
            ioctls: 0,
        };
        // SAFETY: the ioctls get pointers to live, correctly laid out
        // (#[repr(C)], sizes encoded in the request numbers) structs of ours.
        // Registering write-protection in async mode changes no memory
        // contents and delivers no faults: a write to a protected page simply
        // proceeds and marks the page written.
        unsafe {
            ioctl_ok(libc::ioctl(raw, uffd::UFFDIO_API, &mut api))?;
            let mut reg = uffd::Register { range: uffd::Range { start, len }, mode: uffd::REGISTER_MODE_WP, ioctls: 0 };
            ioctl_ok(libc::ioctl(raw, uffd::UFFDIO_REGISTER, &mut reg))?;
            let mut wp = uffd::WriteProtect { range: uffd::Range { start, len }, mode: uffd::WRITEPROTECT_MODE_WP };
            ioctl_ok(libc::ioctl(raw, uffd::UFFDIO_WRITEPROTECT, &mut wp))?;
        }
        let pagemap = std::fs::File::open("/proc/self/pagemap")?;
        let mut t = WriteTracker { uffd, pagemap, start, len };
        // Probe once (nothing written yet): fails here if PAGEMAP_SCAN is missing.
        t.written()?;
        Ok(t)
    }

    /// Whether this tracker covers exactly `mem`.
    pub fn covers(&self, mem: &[u8]) -> bool {
        mem.as_ptr() as u64 == self.start && mem.len() as u64 == self.len
    }

    /// Byte ranges (offsets into the tracked range) written since the last
    /// call (or since [`WriteTracker::new`]); they are protected again, so
    /// the next call reports only later writes.
    pub fn written(&mut self) -> std::io::Result<Vec<std::ops::Range<usize>>> {
        let _ = &self.uffd; // registration lives as long as the descriptor
        let mut out = Vec::new();
        let mut regions = vec![uffd::PageRegion::default(); 512];
        let mut from = self.start;
        let end = self.start + self.len;
        while from < end {
            let mut arg = uffd::PmScanArg {
                size: std::mem::size_of::<uffd::PmScanArg>() as u64,
                flags: uffd::PM_SCAN_WP_MATCHING | uffd::PM_SCAN_CHECK_WPASYNC,
                start: from,
                end,
                walk_end: 0,
                vec: regions.as_mut_ptr() as u64,
                vec_len: regions.len() as u64,
                max_pages: 0,
                category_inverted: 0,
                category_mask: uffd::PAGE_IS_WRITTEN,
                category_anyof_mask: 0,
                return_mask: uffd::PAGE_IS_WRITTEN,
            };
            // SAFETY: `arg` is a live #[repr(C)] struct whose `vec` points at
            // `regions.len()` writable PageRegion slots of ours; the kernel
            // writes at most that many and returns how many.
            let n = unsafe { ioctl_ok(libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&self.pagemap), uffd::PAGEMAP_SCAN, &mut arg))? } as usize;
            for r in &regions[..n.min(regions.len())] {
                out.push((r.start - self.start) as usize..(r.end - self.start) as usize);
            }
            if arg.walk_end <= from {
                break;
            }
            from = arg.walk_end;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_tracker_reports_written_pages_once() {
        let mut b = PageBuf::new(64 * OS_PAGE).unwrap();
        b.as_mut_slice()[..].fill(1);
        let mut t = WriteTracker::new(b.as_slice()).expect("userfaultfd async write-protect + PAGEMAP_SCAN (Linux 6.7+)");
        assert!(t.covers(b.as_slice()));
        assert_eq!(t.written().unwrap(), vec![]);
        b.as_mut_slice()[3 * OS_PAGE + 7] = 2;
        b.as_mut_slice()[40 * OS_PAGE] = 2;
        b.as_mut_slice()[41 * OS_PAGE + 100] = 2;
        let pages: Vec<usize> = t.written().unwrap().into_iter().flat_map(|r| (r.start / OS_PAGE)..r.end.div_ceil(OS_PAGE)).collect();
        assert_eq!(pages, vec![3, 40, 41]);
        assert_eq!(t.written().unwrap(), vec![], "reported twice");
        b.as_mut_slice()[3 * OS_PAGE] = 5;
        assert_eq!(t.written().unwrap(), vec![3 * OS_PAGE..4 * OS_PAGE]);
    }
}
