//! Checkpoint images: a documented, versioned, checksummed, engine-independent
//! format (see docs/migrator.md, "Image format").
//!
//! ```text
//! magic        8   b"WASMCKPT"
//! version      u32 (1)
//! module_hash  32  SHA-256 of the original module
//! meta_len     u32, meta: JSON (ImageMeta: name, globals, WASI state, ...)
//! pages_total  u32 linear memory size in 64 KiB pages
//! chunk_pages  u32 pages per chunk (64)
//! n_chunks     u32, then per chunk (chunk i covers pages i*chunk_pages..):
//!     n_present u32, page offsets within the chunk [u16; n_present],
//!     zlen u32, zstd frame of the present pages' bytes, in order
//! stack_len    u32, asyncify stack data
//! crc32        u32 over every byte before it
//! ```
//! All integers little-endian. Pages that are entirely zero are not stored.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

use crate::error::ImageError;
use crate::wasi::WasiState;

pub const MAGIC: &[u8; 8] = b"WASMCKPT";
pub const VERSION: u32 = 1;
pub const PAGE: usize = 65536;
pub const CHUNK_PAGES: usize = 64;

/// The value of one exported mutable global, as raw bits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GlobalValue {
    pub name: String,
    /// "i32", "i64", "f32" or "f64".
    pub ty: String,
    pub bits: u64,
}

/// Everything in the image except memory and stack data.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageMeta {
    pub name: String,
    pub priority: i32,
    /// Path of the module when the image was taken (a hint for restore).
    pub module_path: String,
    /// Engine the image was taken under (informational only).
    pub taken_under: String,
    pub created_unix_ms: u64,
    /// How many checkpoints this task has been through (this one included).
    pub generation: u32,
    pub globals: Vec<GlobalValue>,
    /// The asyncify buffer in linear memory: start and length in bytes.
    pub asyncify_region: (u32, u32),
    pub wasi: WasiState,
}

/// A buffer an image was read into: a `Vec`, or pages read straight from a file.
pub type Shared = std::sync::Arc<dyn AsRef<[u8]> + Send + Sync>;

/// Bytes shared with the buffer an image was read from (no copy per chunk).
#[derive(Clone)]
pub struct Bytes {
    buf: Shared,
    range: std::ops::Range<usize>,
}
impl Bytes {
    pub fn new(v: Vec<u8>) -> Self {
        let range = 0..v.len();
        Bytes { buf: std::sync::Arc::new(v), range }
    }
}
impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &(*self.buf).as_ref()[self.range.clone()]
    }
}
impl PartialEq for Bytes {
    fn eq(&self, o: &Self) -> bool {
        **self == **o
    }
}
impl std::fmt::Debug for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.len())
    }
}

/// One compressed chunk of memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Offsets (in pages) within the chunk of the pages stored.
    pub present: Vec<u16>,
    /// zstd frame of the present pages, concatenated.
    pub data: Bytes,
}

/// Threads for memory-bandwidth-bound work (compressing, copying, hashing):
/// one per core, at most 8.
pub(crate) fn workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).clamp(1, 8)
}

/// CRC-32 of `buf`, large buffers in parallel slices combined.
fn crc32_parallel(buf: &[u8]) -> u32 {
    const SLICE: usize = 8 << 20;
    let threads = workers();
    if buf.len() < 2 * SLICE || threads == 1 {
        return crc32fast::hash(buf);
    }
    let parts: Vec<crc32fast::Hasher> = std::thread::scope(|s| {
        let hs: Vec<_> = buf
            .chunks(buf.len().div_ceil(threads))
            .map(|part| {
                s.spawn(move || {
                    let mut h = crc32fast::Hasher::new();
                    h.update(part);
                    h
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or_else(|_| crc32fast::Hasher::new_with_initial(1))).collect()
    });
    let mut all = crc32fast::Hasher::new();
    for p in &parts {
        all.combine(p);
    }
    all.finalize()
}

/// One chunk's record: page offsets, then its zstd frame.
fn write_chunk(w: &mut impl Write, present: &[u16], data: &[u8]) -> Result<(), ImageError> {
    w.write_all(&(present.len() as u32).to_le_bytes())?;
    let offs: Vec<u8> = present.iter().flat_map(|p| p.to_le_bytes()).collect();
    w.write_all(&offs)?;
    w.write_all(&(data.len() as u32).to_le_bytes())?;
    w.write_all(data)?;
    Ok(())
}

/// Compresses one chunk of linear memory at a time (one per thread).
struct ChunkCompressor {
    cx: Option<zstd::bulk::Compressor<'static>>,
    scratch: Vec<u8>,
}

impl ChunkCompressor {
    fn new(level: i32) -> Self {
        ChunkCompressor { cx: zstd::bulk::Compressor::new(level).ok(), scratch: Vec::new() }
    }

    /// Appends chunk `ci` of `mem` (its non-zero pages outside `skip`) to
    /// `buf` as one zstd frame; returns the offsets of the pages stored.
    fn compress(&mut self, mem: &[u8], ci: usize, skip: &std::ops::Range<usize>, buf: &mut Vec<u8>) -> Result<Vec<u16>, ImageError> {
        let pages_total = mem.len() / PAGE;
        let present: Vec<u16> = (0..CHUNK_PAGES)
            .map(|off| (off, ci * CHUNK_PAGES + off))
            .take_while(|&(_, p)| p < pages_total)
            .filter(|&(_, p)| !skip.contains(&p) && !is_zero(&mem[p * PAGE..(p + 1) * PAGE]))
            .map(|(off, _)| off as u16)
            .collect();
        let src: &[u8] = match contiguous(&present) {
            _ if present.is_empty() => return Ok(present),
            Some(first) => {
                let p0 = ci * CHUNK_PAGES + first;
                &mem[p0 * PAGE..(p0 + present.len()) * PAGE]
            }
            None => {
                self.scratch.clear();
                for off in &present {
                    let p = ci * CHUNK_PAGES + *off as usize;
                    self.scratch.extend_from_slice(&mem[p * PAGE..(p + 1) * PAGE]);
                }
                &self.scratch[..]
            }
        };
        if incompressible(src, self.cx.as_mut()) {
            // Random-looking data: a zstd frame of raw blocks (a plain copy)
            // instead of a futile compression.
            write_raw_frame(buf, src);
            return Ok(present);
        }
        let cx = self.cx.as_mut().ok_or_else(|| ImageError::Corrupt("zstd compressor unavailable".into()))?;
        buf.reserve(zstd::zstd_safe::compress_bound(src.len()));
        // Appends at the end without zero-filling the buffer first.
        let at = buf.len();
        let mut cur = std::io::Cursor::new(&mut *buf);
        cur.set_position(at as u64);
        cx.compress_to_buffer(src, &mut cur).map_err(|e| ImageError::Corrupt(format!("zstd compression of linear memory failed: {e}")))?;
        Ok(present)
    }
}

/// `Some(first)` when `present` is a run of consecutive pages.
fn contiguous(present: &[u16]) -> Option<usize> {
    let first = *present.first()? as usize;
    present.iter().enumerate().all(|(i, &p)| p as usize == first + i).then_some(first)
}

/// A checkpoint image in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    /// SHA-256 (32 bytes) of the original module.
    pub module_hash: [u8; 32],
    pub meta: ImageMeta,
    pub pages_total: u32,
    pub chunks: Vec<Chunk>,
    /// Asyncify stack data (the unwound wasm call stack).
    pub stack: Vec<u8>,
}

struct CrcWriter<W> {
    inner: W,
    crc: crc32fast::Hasher,
    written: u64,
}
impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Image {
    pub fn module_hash_hex(&self) -> String {
        hex::encode(self.module_hash)
    }

    /// Bytes of memory stored (uncompressed), i.e. non-zero pages.
    pub fn stored_pages(&self) -> usize {
        self.chunks.iter().map(|c| c.present.len()).sum()
    }

    /// Writes the image; returns the number of bytes written.
    pub fn write_to(&self, w: impl Write) -> Result<u64, ImageError> {
        let mut w = CrcWriter { inner: w, crc: crc32fast::Hasher::new(), written: 0 };
        self.write_head(&mut w, self.chunks.len())?;
        for c in &self.chunks {
            write_chunk(&mut w, &c.present, &c.data)?;
        }
        self.write_tail(w)
    }

    /// Everything before the memory chunks.
    fn write_head(&self, w: &mut impl Write, n_chunks: usize) -> Result<(), ImageError> {
        w.write_all(MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        w.write_all(&self.module_hash)?;
        let meta = serde_json::to_vec(&self.meta).map_err(|e| ImageError::Corrupt(e.to_string()))?;
        w.write_all(&(meta.len() as u32).to_le_bytes())?;
        w.write_all(&meta)?;
        w.write_all(&self.pages_total.to_le_bytes())?;
        w.write_all(&(CHUNK_PAGES as u32).to_le_bytes())?;
        w.write_all(&(n_chunks as u32).to_le_bytes())?;
        Ok(())
    }

    /// The asyncify stack and the checksum over everything before it.
    fn write_tail<W: Write>(&self, mut w: CrcWriter<W>) -> Result<u64, ImageError> {
        w.write_all(&(self.stack.len() as u32).to_le_bytes())?;
        w.write_all(&self.stack)?;
        let crc = w.crc.clone().finalize();
        w.inner.write_all(&crc.to_le_bytes())?;
        w.flush()?;
        Ok(w.written + 4)
    }

    /// Reads and checks an image: magic, version, then the checksum over
    /// everything, and only then the contents.
    pub fn read_from(mut r: impl Read) -> Result<Image, ImageError> {
        let mut buf = Vec::new();
        r.read_to_end(&mut buf)?;
        Self::from_vec(buf)
    }

    pub fn from_bytes(buf: &[u8]) -> Result<Image, ImageError> {
        Self::from_vec(buf.to_vec())
    }

    /// Parses an image, sharing `buf` with the memory chunks.
    pub fn from_vec(buf: Vec<u8>) -> Result<Image, ImageError> {
        Self::from_shared(std::sync::Arc::new(buf))
    }

    /// [`Image::from_vec`] for any shared buffer.
    pub fn from_shared(shared: Shared) -> Result<Image, ImageError> {
        let buf: &[u8] = (*shared).as_ref();
        if buf.len() < 8 || &buf[..8] != MAGIC {
            return Err(ImageError::BadMagic);
        }
        if buf.len() < 12 + 32 + 4 {
            return Err(ImageError::Corrupt("truncated header".into()));
        }
        let version = u32::from_le_bytes(buf[8..12].try_into().unwrap_or_default());
        if version != VERSION {
            return Err(ImageError::Version { found: version, supported: VERSION });
        }
        let (body, tail) = buf.split_at(buf.len() - 4);
        let stored = u32::from_le_bytes(tail.try_into().unwrap_or_default());
        let computed = crc32_parallel(body);
        if stored != computed {
            return Err(ImageError::Checksum { stored, computed });
        }
        let mut c = Cursor { buf: body, pos: 12 };
        let mut module_hash = [0u8; 32];
        module_hash.copy_from_slice(c.take(32)?);
        let meta_len = c.u32()? as usize;
        let meta: ImageMeta = serde_json::from_slice(c.take(meta_len)?)
            .map_err(|e| ImageError::Corrupt(format!("metadata: {e}")))?;
        let pages_total = c.u32()?;
        // wasm32 memory holds at most 65536 pages (4 GiB); refused before anything is sized
        // from it (a tiny image claiming 2^32 pages would otherwise reserve gigabytes).
        if pages_total > 65536 {
            return Err(ImageError::Corrupt(format!("memory of {pages_total} pages exceeds the 4 GiB wasm32 limit")));
        }
        let chunk_pages = c.u32()? as usize;
        if chunk_pages != CHUNK_PAGES {
            return Err(ImageError::Corrupt(format!("chunk size {chunk_pages}")));
        }
        let n_chunks = c.u32()? as usize;
        if n_chunks != (pages_total as usize).div_ceil(CHUNK_PAGES) {
            return Err(ImageError::Corrupt("chunk count does not match memory size".into()));
        }
        let mut chunks = Vec::with_capacity(n_chunks);
        for _ in 0..n_chunks {
            let n = c.u32()? as usize;
            if n > CHUNK_PAGES {
                return Err(ImageError::Corrupt("chunk page count".into()));
            }
            let present = c
                .take(n * 2)?
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect::<Vec<_>>();
            if present.iter().any(|&p| p as usize >= CHUNK_PAGES) {
                return Err(ImageError::Corrupt("page offset".into()));
            }
            let zlen = c.u32()? as usize;
            let start = c.pos;
            c.take(zlen)?;
            chunks.push(Chunk { present, data: Bytes { buf: shared.clone(), range: start..start + zlen } });
        }
        let slen = c.u32()? as usize;
        let stack = c.take(slen)?.to_vec();
        if c.pos != body.len() {
            return Err(ImageError::Corrupt("trailing bytes".into()));
        }
        Ok(Image { module_hash, meta, pages_total, chunks, stack })
    }

    /// Compresses linear memory `mem`, skipping zero pages and the pages in
    /// `skip` (the asyncify region), in parallel over the available cores.
    pub fn compress_memory(mem: &[u8], skip: std::ops::Range<usize>, level: i32) -> Result<(u32, Vec<Chunk>), ImageError> {
        let pages_total = mem.len() / PAGE;
        let n_chunks = pages_total.div_ceil(CHUNK_PAGES);
        let threads = workers();
        let mut out: Vec<Option<Result<Chunk, ImageError>>> = (0..n_chunks).map(|_| None).collect();
        let per = n_chunks.div_ceil(threads).max(1);
        std::thread::scope(|s| {
            for (t, slots) in out.chunks_mut(per).enumerate() {
                let skip = skip.clone();
                s.spawn(move || {
                    // One output buffer per thread, on huge pages; chunks share it.
                    let bound = zstd::zstd_safe::compress_bound(CHUNK_PAGES * PAGE);
                    let mut buf = crate::sys::huge_with_capacity(bound * slots.len());
                    let mut z = ChunkCompressor::new(level);
                    let mut done = Vec::with_capacity(slots.len());
                    for k in 0..slots.len() {
                        let at = buf.len();
                        done.push(z.compress(mem, t * per + k, &skip, &mut buf).map(|present| (present, at..buf.len())));
                    }
                    let shared = std::sync::Arc::new(buf);
                    for (slot, r) in slots.iter_mut().zip(done) {
                        *slot = Some(r.map(|(present, range)| Chunk { present, data: Bytes { buf: shared.clone(), range } }));
                    }
                });
            }
        });
        let chunks = out.into_iter().map(|c| c.unwrap_or_else(|| Err(ImageError::Corrupt("compression worker failed".into())))).collect::<Result<_, _>>()?;
        Ok((pages_total as u32, chunks))
    }

    /// Writes this image (as [`Task::capture_state`](crate::task::Task::capture_state)
    /// made it: no memory stored) with linear memory `mem` compressed into it
    /// on the way: worker threads compress chunks while this thread writes
    /// the finished ones in order, so writing overlaps compression. The file
    /// is the same as `compress_memory` followed by [`Image::write_to`].
    /// Returns the bytes written and the number of pages stored.
    pub fn write_with_memory(&self, mem: &[u8], skip: std::ops::Range<usize>, level: i32, w: impl Write) -> Result<(u64, usize), ImageError> {
        let pages_total = mem.len() / PAGE;
        if pages_total != self.pages_total as usize || self.chunks.iter().any(|c| !c.present.is_empty()) {
            return Err(ImageError::Corrupt("write_with_memory: the image must be a state-only capture of this memory".into()));
        }
        let n_chunks = pages_total.div_ceil(CHUNK_PAGES);
        let threads = workers();
        let mut w = CrcWriter { inner: w, crc: crc32fast::Hasher::new(), written: 0 };
        self.write_head(&mut w, n_chunks)?;
        let mut stored = 0;
        std::thread::scope(|s| -> Result<(), ImageError> {
            let (tx, rx) = std::sync::mpsc::channel::<(usize, Result<(Vec<u16>, Vec<u8>), ImageError>)>();
            for t in 0..threads.min(n_chunks) {
                let (tx, skip) = (tx.clone(), skip.clone());
                s.spawn(move || {
                    let mut z = ChunkCompressor::new(level);
                    // Interleaved, so chunk 0, 1, 2... are ready roughly in order.
                    for ci in (t..n_chunks).step_by(threads) {
                        let mut buf = crate::sys::huge_with_capacity(zstd::zstd_safe::compress_bound(CHUNK_PAGES * PAGE));
                        let r = z.compress(mem, ci, &skip, &mut buf).map(|present| (present, buf));
                        if tx.send((ci, r)).is_err() {
                            return; // the writer gave up
                        }
                    }
                });
            }
            drop(tx);
            let mut pending = std::collections::BTreeMap::new();
            for next in 0..n_chunks {
                let (present, data) = loop {
                    if let Some(c) = pending.remove(&next) {
                        break c;
                    }
                    let (ci, r) = rx.recv().map_err(|_| ImageError::Corrupt("compression worker failed".into()))?;
                    pending.insert(ci, r?);
                };
                write_chunk(&mut w, &present, &data)?;
                stored += present.len();
            }
            Ok(())
        })?;
        Ok((self.write_tail(w)?, stored))
    }
    /// Writes the stored pages into `mem` (already `pages_total` pages long
    /// and zero wherever the image has no page), in parallel.
    pub fn decompress_into(&self, mem: &mut [u8]) -> Result<(), ImageError> {
        if mem.len() < self.pages_total as usize * PAGE {
            return Err(ImageError::Corrupt("memory smaller than image".into()));
        }
        let threads = workers();
        let per = self.chunks.len().div_ceil(threads).max(1);
        let mut regions: Vec<&mut [u8]> = mem[..self.pages_total as usize * PAGE].chunks_mut(CHUNK_PAGES * PAGE).collect();
        let results: Vec<Result<(), ImageError>> = std::thread::scope(|s| {
            let mut handles = Vec::new();
            for (regs, chunks) in regions.chunks_mut(per).zip(self.chunks.chunks(per)) {
                handles.push(s.spawn(move || -> Result<(), ImageError> {
                    let mut scratch = Vec::new();
                    for (region, chunk) in regs.iter_mut().zip(chunks) {
                        if chunk.present.is_empty() {
                            continue;
                        }
                        let want = chunk.present.len() * PAGE;
                        let mut dec = zstd::bulk::Decompressor::new().map_err(ImageError::Io)?;
                        if let Some(first) = contiguous(&chunk.present) {
                            // Straight into linear memory.
                            let dst = region
                                .get_mut(first * PAGE..first * PAGE + want)
                                .ok_or_else(|| ImageError::Corrupt("page beyond memory".into()))?;
                            crate::sys::populate_write(dst);
                            let n = dec
                                .decompress_to_buffer(&chunk.data[..], dst)
                                .map_err(|e| ImageError::Corrupt(format!("memory chunk: {e}")))?;
                            if n != want {
                                return Err(ImageError::Corrupt("memory chunk size".into()));
                            }
                            continue;
                        }
                        scratch.clear();
                        scratch.reserve(want);
                        scratch = dec
                            .decompress(&chunk.data[..], want)
                            .map_err(|e| ImageError::Corrupt(format!("memory chunk: {e}")))?;
                        if scratch.len() != want {
                            return Err(ImageError::Corrupt("memory chunk size".into()));
                        }
                        for (i, off) in chunk.present.iter().enumerate() {
                            let o = *off as usize * PAGE;
                            if o + PAGE > region.len() {
                                return Err(ImageError::Corrupt("page beyond memory".into()));
                            }
                            region[o..o + PAGE].copy_from_slice(&scratch[i * PAGE..(i + 1) * PAGE]);
                        }
                    }
                    Ok(())
                }));
            }
            handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(ImageError::Corrupt("worker panicked".into())))).collect()
        });
        results.into_iter().collect()
    }
}

/// Samples three 16 KiB windows of `src`; true when zstd cannot shrink
/// them by even 5%.
fn incompressible(src: &[u8], cx: Option<&mut zstd::bulk::Compressor<'static>>) -> bool {
    const W: usize = 16 << 10;
    let Some(cx) = cx else { return false };
    if src.len() < 4 * W {
        return false;
    }
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(W));
    [0, src.len() / 2, src.len() - W].iter().all(|&o| match cx.compress_to_buffer(&src[o..o + W], &mut out) {
        Ok(n) => n * 20 > W * 19,
        Err(_) => false,
    })
}

/// Appends a zstd frame (RFC 8878) made of raw blocks holding `src`:
/// single-segment, 4-byte content size, no checksum. Any zstd decoder reads
/// it; decoding is a copy.
fn write_raw_frame(buf: &mut Vec<u8>, src: &[u8]) {
    const MAX_BLOCK: usize = 128 << 10;
    buf.extend_from_slice(&0xFD2F_B528u32.to_le_bytes());
    buf.push(0b1010_0000); // FCS field 4 bytes, single segment
    buf.extend_from_slice(&(src.len() as u32).to_le_bytes());
    let mut blocks = src.chunks(MAX_BLOCK).peekable();
    while let Some(b) = blocks.next() {
        let last = blocks.peek().is_none() as u32;
        let header = last | ((b.len() as u32) << 3); // block type 0 = raw
        buf.extend_from_slice(&header.to_le_bytes()[..3]);
        buf.extend_from_slice(b);
    }
}

fn is_zero(page: &[u8]) -> bool {
    // Fold 8 words at a time, stop at the first non-zero block.
    let blocks = page.chunks_exact(64);
    let rest = blocks.remainder();
    blocks
        .into_iter()
        .all(|b| b.chunks_exact(8).fold(0u64, |acc, w| acc | u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]])) == 0)
        && rest.iter().all(|&x| x == 0)
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}
impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ImageError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| ImageError::Corrupt("truncated".into()))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, ImageError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Image {
        let mut mem = vec![0u8; 130 * PAGE];
        mem[5] = 1;
        mem[70 * PAGE + 3] = 9;
        mem[129 * PAGE..].fill(7);
        let (pages_total, chunks) = Image::compress_memory(&mem, 100..110, 1).unwrap();
        Image {
            module_hash: [3; 32],
            meta: ImageMeta {
                name: "t".into(),
                priority: 0,
                module_path: "m.wasm".into(),
                taken_under: "cranelift".into(),
                created_unix_ms: 0,
                generation: 1,
                globals: vec![GlobalValue { name: "mig:g0".into(), ty: "i32".into(), bits: 5 }],
                asyncify_region: (100 * PAGE as u32, 10 * PAGE as u32),
                wasi: WasiState::new(vec!["a".into()], vec![], vec![]),
            },
            pages_total,
            chunks,
            stack: vec![1, 2, 3],
        }
    }

    #[test]
    fn roundtrip_and_zero_pages_skipped() {
        let img = sample();
        assert_eq!(img.stored_pages(), 3);
        let mut bytes = Vec::new();
        img.write_to(&mut bytes).unwrap();
        let back = Image::read_from(&bytes[..]).unwrap();
        assert_eq!(back, img);
        let mut mem = vec![0u8; 130 * PAGE];
        back.decompress_into(&mut mem).unwrap();
        assert_eq!(mem[5], 1);
        assert_eq!(mem[70 * PAGE + 3], 9);
        assert!(mem[129 * PAGE..].iter().all(|&b| b == 7));
    }

    #[test]
    fn random_pages_roundtrip_as_raw_frames() {
        let mut mem = vec![0u8; 200 * PAGE];
        let mut x = 0x2545F4914F6CDD1Du64;
        for b in mem[PAGE..150 * PAGE].iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 32) as u8;
        }
        mem[170 * PAGE..171 * PAGE].fill(3);
        let (pages_total, chunks) = Image::compress_memory(&mem, 0..0, 1).unwrap();
        let stored: usize = chunks.iter().map(|c| c.data.len()).sum();
        assert!(stored < 150 * PAGE + 150 * PAGE / 100, "raw frames stay within 1% of the data: {stored}");
        let img = Image { pages_total, chunks, ..sample() };
        let mut out = vec![0u8; 200 * PAGE];
        img.decompress_into(&mut out).unwrap();
        assert!(out == mem);
        let raw = sample_frame(&mem[PAGE..2 * PAGE]);
        assert_eq!(zstd::bulk::decompress(&raw, PAGE).unwrap(), &mem[PAGE..2 * PAGE]);
    }

    #[test]
    fn streamed_write_equals_capture_then_write() {
        // Zero, compressible, random and skipped pages across several chunks.
        let mut mem = vec![0u8; (3 * CHUNK_PAGES + 7) * PAGE];
        let mut x = 0x9E3779B97F4A7C15u64;
        for b in mem[10 * PAGE..80 * PAGE].iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 32) as u8;
        }
        mem[90 * PAGE..95 * PAGE].fill(4);
        mem[150 * PAGE + 1] = 1;
        mem[3 * CHUNK_PAGES * PAGE + 5] = 2;
        let skip = 60..70;
        let (pages_total, chunks) = Image::compress_memory(&mem, skip.clone(), 1).unwrap();
        let whole = Image { pages_total, chunks, ..sample() };
        let mut a = Vec::new();
        whole.write_to(&mut a).unwrap();
        let empty = (0..pages_total as usize).step_by(CHUNK_PAGES).map(|_| Chunk { present: vec![], data: Bytes::new(vec![]) }).collect();
        let state = Image { pages_total, chunks: empty, ..sample() };
        let mut b = Vec::new();
        let (n, stored) = state.write_with_memory(&mem, skip, 1, &mut b).unwrap();
        assert_eq!(n as usize, b.len());
        assert_eq!(stored, whole.stored_pages());
        assert!(a == b, "streamed image differs");
        // A state image of another memory size is refused.
        assert!(state.write_with_memory(&mem[..PAGE], 0..0, 1, &mut Vec::new()).is_err());
    }

    #[test]
    fn large_image_file_reads_back_equal() {
        // Above the size read by parallel positioned reads, and CRC-checked in parallel.
        let mut mem = vec![0u8; 200 * PAGE];
        let mut x = 0x2545F4914F6CDD1Du64;
        for b in mem[..190 * PAGE].iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = (x >> 32) as u8;
        }
        let (pages_total, chunks) = Image::compress_memory(&mem, 0..0, 1).unwrap();
        let img = Image { pages_total, chunks, ..sample() };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.img");
        let n = crate::task::write_image_file(&path, &img).unwrap();
        assert!(n > 8 << 20, "{n}");
        let back = crate::task::read_image_file(&path).unwrap();
        assert_eq!(back, img);
        // A flipped byte deep in the file is caught by the (parallel) checksum.
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.len() * 3 / 4;
        bytes[at] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(crate::task::read_image_file(&path), Err(ImageError::Checksum { .. })));
    }

    fn sample_frame(src: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        write_raw_frame(&mut v, src);
        v
    }

    #[test]
    fn corruption_is_refused() {
        let mut bytes = Vec::new();
        sample().write_to(&mut bytes).unwrap();
        let mut bad = bytes.clone();
        let mid = bad.len() / 2;
        bad[mid] ^= 0x40;
        assert!(matches!(Image::from_bytes(&bad), Err(ImageError::Checksum { .. })));
        let mut v = bytes.clone();
        v[8] = 9;
        assert!(matches!(Image::from_bytes(&v), Err(ImageError::Version { found: 9, .. })));
        assert!(matches!(Image::from_bytes(b"hello world"), Err(ImageError::BadMagic)));
        assert!(Image::from_bytes(&bytes[..bytes.len() - 10]).is_err());
    }
}
