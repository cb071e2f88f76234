//! Fuzzing with generated inputs (issue 10, parts 1 and 5): checkpoint images are accepted from
//! disk and from the network, so a corrupt or hostile image must be refused with an error:
//! no panic, no allocation sized by a length field, and no file opened outside the task's
//! preopened directories on restore.
//!
//! - `image_parse`: a real image (hashchain, stopped mid-run, with a preopened directory) is
//!   mutated (bit flips, hostile integers in the header, length and count fields, truncation)
//!   and, in three cases out of four, its CRC is fixed up so the content parser is reached.
//!   Every image that parses is decompressed and restored (`Task::restore`).
//! - `restore_refuses_path_escape`: images whose WASI state names a file or directory outside
//!   its preopen (`../x`, `/etc/passwd`, `a/../../x`) are refused on restore.
//! - `net_frames`: byte streams of valid handover frames (messages, module/image/pages data),
//!   mutated (length fields 0, 2^31, 2^32-1, limit ± 1, bad checksums, wrong kinds, hostile
//!   page counts, truncation, splices) or random, read over loopback TCP by `Framed` (as after
//!   and before authentication); every frame read goes through `serde_json::from_slice::<Msg>`
//!   or `protocol::decode_pages`, as the destination does.
//!
//! Budget: `FUZZ_SECS` (default 3), `FUZZ_CASES`, `FUZZ_SEED` as in tracer/tests/fuzz.rs; one
//! `RELIABILITY fuzz ...` line per target for scripts/reliability.sh.

use std::path::{Path, PathBuf};
use std::time::Duration;

use migrator::bench::sink_stdio;
use migrator::engine::{self, EngineKind, LoadedModule};
use migrator::image::PAGE;
use migrator::net::frame::{FrameError, Framed, KIND_DATA, KIND_MSG, MAX_FRAME, PRE_AUTH_LIMIT};
use migrator::net::protocol::{decode_pages, encode_pages, Msg, STREAM_CODE, STREAM_IMAGE, STREAM_MODULE, STREAM_PAGES};
use migrator::wasi::{FdEntry, FdKind, Preopen};
use migrator::{Image, RunOutcome, Task, TaskOptions};
use testkit::{Guard, Rng};

// ---------------------------------------------------------------------------------------------
// Allocation guard (a single allocation above the limit is refused; the process aborts with
// the case seed) and generator: testkit. Linear memory is mmap'ed by wasmtime, not allocated here.
#[global_allocator]
static GLOBAL: Guard = Guard;

// ---------------------------------------------------------------------------------------------
// Fixtures (same cache directory as tests/util.rs, so modules compile once)

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn load(name: &str) -> LoadedModule {
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        let st = std::process::Command::new(root().join("fixtures/wasm/build.sh")).status().expect("run fixtures/wasm/build.sh");
        assert!(st.success(), "fixtures/wasm/build.sh failed");
        std::env::set_var("MIGRATOR_CACHE_DIR", PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("migrator-cache"));
    });
    let path = root().join("fixtures/build/wasm").join(name);
    let kind = EngineKind::Pulley;
    let eng = engine::new_engine(kind).expect("engine");
    engine::load_module(&path, &eng, kind).expect("load module")
}

/// A real image: hashchain stopped mid-run, with `dir` preopened as /data.
fn real_image(lm: &LoadedModule, dir: &Path) -> Vec<u8> {
    let (stdio, _out) = sink_stdio();
    let opts = TaskOptions {
        name: "fuzz".into(),
        args: vec!["hashchain.wasm".into(), "100000000".into()],
        preopens: vec![Preopen { guest: "/data".into(), host: dir.into() }],
        ..Default::default()
    };
    let mut task = Task::new(lm, opts, stdio).unwrap();
    let h = task.handle();
    let outcome = std::thread::scope(|s| {
        let w = std::thread::Builder::new()
            .stack_size(engine::TASK_THREAD_STACK)
            .spawn_scoped(s, || task.run())
            .unwrap();
        std::thread::sleep(Duration::from_millis(100));
        h.request_stop();
        w.join().unwrap().unwrap()
    });
    assert!(matches!(outcome, RunOutcome::Stopped), "hashchain finished before the stop");
    let img = task.capture().unwrap();
    let mut buf = Vec::new();
    img.write_to(&mut buf).unwrap();
    buf
}

/// Offsets of the image's integer fields (meta_len, pages_total, chunk_pages, n_chunks, each
/// chunk's n_present and zlen, stack_len).
fn image_fields(b: &[u8]) -> Vec<usize> {
    let u32_at = |o: usize| b.get(o..o + 4).map(|s| u32::from_le_bytes(s.try_into().unwrap()) as usize);
    let mut f = vec![44];
    let Some(meta_len) = u32_at(44) else { return f };
    let mut o = 48 + meta_len;
    f.extend([o, o + 4, o + 8]);
    let n = u32_at(o + 8).unwrap_or(0);
    o += 12;
    for _ in 0..n {
        let Some(np) = u32_at(o) else { return f };
        f.push(o);
        o += 4 + 2 * np;
        let Some(z) = u32_at(o) else { return f };
        f.push(o);
        o += 4 + z;
    }
    f.push(o);
    f
}

fn fix_crc(b: &mut [u8]) {
    if b.len() >= 52 {
        let n = b.len() - 4;
        let c = crc32fast::hash(&b[..n]);
        b[n..].copy_from_slice(&c.to_le_bytes());
    }
}

fn mutate(rng: &mut Rng, data: &mut Vec<u8>, fields: &[usize]) {
    for _ in 0..1 + rng.below(3) {
        let len = data.len();
        if len == 0 {
            return;
        }
        match rng.below(7) {
            0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 | 2 => {
                let o = fields[rng.below(fields.len())];
                let v = rng.interesting32(len).to_le_bytes();
                if o + 4 <= len {
                    data[o..o + 4].copy_from_slice(&v);
                }
            }
            3 => {
                // A consistent pair: huge memory with the matching chunk count (what a
                // hostile peer would send), so only a size check can stop it.
                let pages = rng.interesting32(len).max(1);
                if fields.len() >= 4 && fields[3] + 4 <= len {
                    data[fields[1]..fields[1] + 4].copy_from_slice(&pages.to_le_bytes());
                    let n = (pages as u64).div_ceil(64) as u32;
                    data[fields[3]..fields[3] + 4].copy_from_slice(&n.to_le_bytes());
                }
            }
            4 => {
                // Inside the metadata JSON (names, globals, WASI state).
                let meta_len = data.get(44..48).map(|b| u32::from_le_bytes(b.try_into().unwrap())).unwrap_or(0);
                let end = (48 + meta_len as usize).min(len);
                if end > 48 {
                    let i = 48 + rng.below(end - 48);
                    data[i] = b"{}[]\":,0123456789-e.nul/"[rng.below(24)];
                }
            }
            5 => {
                let i = rng.below(len);
                data[i] = rng.next() as u8;
            }
            _ => {
                let keep = len - rng.below(len.min(256) + 1).min(len);
                data.truncate(if rng.chance(4) { rng.below(len) } else { keep });
            }
        }
    }
}

#[test]
fn image_parse() {
    let lm = load("hashchain.wasm");
    let dir = tempfile::tempdir().unwrap();
    let orig = real_image(&lm, dir.path());
    let fields = image_fields(&orig);
    Image::from_bytes(&orig).expect("the unmutated image parses");
    let (mut parsed, mut restored) = (0u64, 0u64);
    testkit::fuzz(|rng| {
        let mut data = orig.clone();
        mutate(rng, &mut data, &fields);
        if !rng.chance(4) {
            fix_crc(&mut data);
        }
        let Ok(img) = Image::from_bytes(&data) else { return };
        parsed += 1;
        // Decompress into a buffer of the claimed size only when it is sane (a restore
        // maps it through wasmtime, limited to 4 GiB).
        if (img.pages_total as usize) <= 4096 {
            let mut mem = vec![0u8; img.pages_total as usize * PAGE];
            let _ = img.decompress_into(&mut mem);
        }
        let (stdio, _out) = sink_stdio();
        restored += Task::restore(&lm, &img, stdio, None).is_ok() as u64;
    })
    .report("image_parse", &format!(" parsed={parsed} restored={restored}"));
}

/// Re-encodes `img` with one extra fd in its WASI state.
fn with_fd(img: &Image, fd: u32, kind: FdKind) -> Image {
    let mut bytes = Vec::new();
    img.write_to(&mut bytes).unwrap();
    let mut img = Image::from_bytes(&bytes).unwrap();
    img.meta.wasi.fds.insert(fd, FdEntry { kind, fdflags: 0, rights_base: u64::MAX, rights_inheriting: u64::MAX });
    img
}

#[test]
fn restore_refuses_path_escape() {
    let lm = load("hashchain.wasm");
    let top = tempfile::tempdir().unwrap();
    let data = top.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("inside.txt"), b"ok").unwrap();
    std::fs::write(top.path().join("secret.txt"), b"secret").unwrap();
    let img = Image::from_bytes(&real_image(&lm, &data)).unwrap();
    let file = |rel: &str| FdKind::File { preopen: 0, rel: rel.into(), offset: 0, read: true, write: false };

    // Control: a file below the preopen is reopened.
    let (stdio, _o) = sink_stdio();
    Task::restore(&lm, &with_fd(&img, 9, file("inside.txt")), stdio, None).expect("a file inside the preopen restores");

    let secret = top.path().join("secret.txt");
    let escapes = [
        "../secret.txt".to_string(),
        "a/../../secret.txt".into(),
        "./../secret.txt".into(),
        secret.display().to_string(),
        "/etc/passwd".into(),
        "inside.txt/../../secret.txt".into(),
    ];
    let mut tried = 0;
    for rel in &escapes {
        for kind in [file(rel), FdKind::Dir { preopen: 0, rel: rel.clone() }] {
            let (stdio, _o) = sink_stdio();
            let r = Task::restore(&lm, &with_fd(&img, 9, kind.clone()), stdio, None);
            tried += 1;
            assert!(r.is_err(), "restore accepted {kind:?} outside the preopened directory");
        }
    }
    println!("RELIABILITY security path_escape cases={tried} failures=0");
}

// ---------------------------------------------------------------------------------------------
// Network frames

/// Messages as the peers send them (JSON text, so the samples do not depend on the Rust types).
const MSGS: &[&str] = &[
    r#"{"type":"hello","version":1,"nonce":"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"}"#,
    r#"{"type":"challenge","nonce":"abcd","proof":"0011"}"#,
    r#"{"type":"auth","proof":"ffee"}"#,
    r#"{"type":"welcome","host":{"hostname":"b","arch":"x86_64","engine":"pulley","compat":{"pulley":"ab12"},"image_version":1,"features":{"schema":"featureset/1","features":[{"name":"avx2"}]},"features_error":null}}"#,
    r#"{"type":"offer","id":"m-1","name":"t","priority":0,"module_hash":"aa","module_len":123,"code":"portable","code_len":0,"live":true,"memory_bytes":1048576}"#,
    r#"{"type":"accept"}"#,
    r#"{"type":"refuse","reason":"no"}"#,
    r#"{"type":"module_done"}"#,
    r#"{"type":"ready","load_ms":1.5,"code":"precompiled"}"#,
    r#"{"type":"round_done","round":2,"pages":17}"#,
    r#"{"type":"state_done","live":false,"image_bytes":4096}"#,
    r#"{"type":"restored","restore_us":100}"#,
    r#"{"type":"commit"}"#,
    r#"{"type":"started","start_us":5}"#,
    r#"{"type":"abort","reason":"x"}"#,
    r#"{"type":"status","id":"m-1"}"#,
    r#"{"type":"status_reply","id":"m-1","state":"started"}"#,
    r#"{"type":"error","message":"e"}"#,
];

/// One frame as `Framed::send_raw` writes it.
fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![kind];
    body.extend_from_slice(payload);
    let mut f = ((body.len()) as u32).to_le_bytes().to_vec();
    f.extend_from_slice(&body);
    f.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    f
}

/// A valid stream of 1-6 frames; returns the bytes and each frame's offset.
fn frame_stream(rng: &mut Rng) -> (Vec<u8>, Vec<usize>) {
    let (mut out, mut offs) = (Vec::new(), Vec::new());
    for _ in 0..1 + rng.below(6) {
        offs.push(out.len());
        let f = match rng.below(4) {
            0 | 1 => frame(KIND_MSG, MSGS[rng.below(MSGS.len())].as_bytes()),
            2 => {
                // Pages: a few pages, mostly zeros with some random bytes (compresses like real memory).
                let n = rng.below(4);
                let idx: Vec<u32> = (0..n).map(|_| rng.below(70000) as u32).collect();
                let mut data = vec![0u8; n * PAGE];
                for _ in 0..rng.below(64) {
                    let i = rng.below(data.len().max(1));
                    if let Some(b) = data.get_mut(i) {
                        *b = rng.next() as u8;
                    }
                }
                let mut p = vec![STREAM_PAGES];
                p.extend(encode_pages(&idx, &data, 1).unwrap());
                frame(KIND_DATA, &p)
            }
            _ => {
                let stream = [STREAM_MODULE, STREAM_CODE, STREAM_IMAGE][rng.below(3)];
                let mut p = vec![stream];
                let n = if rng.chance(50) { MAX_FRAME - 2 } else { rng.below(3000) };
                p.extend((0..n).map(|i| i as u8));
                frame(KIND_DATA, &p)
            }
        };
        out.extend(f);
    }
    (out, offs)
}

fn mutate_frames(rng: &mut Rng, data: &mut Vec<u8>, offs: &[usize], limit: usize) {
    for _ in 0..1 + rng.below(3) {
        let len = data.len();
        if len == 0 {
            return;
        }
        let o = offs[rng.below(offs.len())];
        let flen = data.get(o..o + 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()) as usize).unwrap_or(0);
        // Whether to recompute this frame's CRC afterwards (so the content decoders are reached).
        let mut fix = rng.below(4) != 0;
        match rng.below(9) {
            0 | 1 => {
                // The length field: 0, 2^31, 2^32-1, the limit ± 1, near the real length, ...
                let v = match rng.below(4) {
                    0 => [0, 1, 0x8000_0000, 0xffff_ffff][rng.below(4)],
                    1 => (limit as u32).wrapping_add(rng.below(3) as u32).wrapping_sub(1),
                    _ => rng.interesting32(flen),
                };
                if o + 4 <= len {
                    data[o..o + 4].copy_from_slice(&v.to_le_bytes());
                }
                fix = false;
            }
            2 => {
                // A wrong kind.
                if o + 4 < len {
                    data[o + 4] = [0, 3, 255, KIND_MSG, KIND_DATA][rng.below(5)];
                }
            }
            3 => {
                // Pages header: hostile page count, or page indices.
                if data.get(o + 5) == Some(&STREAM_PAGES) && o + 10 <= len {
                    let at = if rng.chance(2) { o + 6 } else { (o + 10 + 4 * rng.below(4)).min(len - 4) };
                    let v = [0u32, 1, 64, 65, 66, 4096, 0x8000_0000, 0xffff_ffff, rng.next() as u32][rng.below(9)];
                    data[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
            4 => {
                // Inside a payload (JSON syntax characters, digits, ...).
                let end = (o + 5 + flen.min(4096)).min(len);
                if end > o + 5 {
                    let i = o + 5 + rng.below(end - o - 5);
                    const SYN: &[u8] = b"{}[]\":,0123456789-e.nul\\tfa";
                    data[i] = SYN[rng.below(SYN.len())];
                }
            }
            5 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
                fix = false;
            }
            6 => {
                // Splice: a frame repeated, or bytes from elsewhere.
                let a = rng.below(len);
                let b = (a + rng.below(64)).min(len);
                let chunk = data[a..b].to_vec();
                let at = rng.below(len);
                data.splice(at..at, chunk);
                fix = false;
            }
            7 => {
                // Checksum only.
                if o + 8 + flen <= len {
                    data[o + 4 + flen] ^= 0x5a;
                }
                fix = false;
            }
            _ => {
                data.truncate(rng.below(len));
                fix = false;
            }
        }
        if fix && o + 8 + flen <= data.len() && flen > 0 {
            let c = crc32fast::hash(&data[o + 4..o + 4 + flen]);
            data[o + 4 + flen..o + 8 + flen].copy_from_slice(&c.to_le_bytes());
        }
    }
}

#[derive(Default)]
struct FrameStats {
    frames: u64,
    msgs: u64,
    pages: u64,
    refused: u64,
}

/// Sends `bytes` over loopback TCP and reads them with `Framed` at `limit`, decoding every frame
/// as the destination does. Returns the frames read (kind, payload).
fn read_frames(l: &std::net::TcpListener, bytes: &[u8], limit: usize, typed: bool, st: &mut FrameStats) -> Vec<(u8, Vec<u8>)> {
    use std::io::Write;
    let mut tx = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (rx, _) = l.accept().unwrap();
    std::thread::scope(|s| {
        s.spawn(move || {
            // The reader may stop early (refused frame): a broken pipe here is expected.
            let _ = tx.write_all(bytes);
            let _ = tx.shutdown(std::net::Shutdown::Write);
        });
        // Owned by this closure, so an early return or a panic closes it and unblocks the writer.
        let mut c = Framed::new(rx).unwrap();
        c.limit = limit;
        c.set_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut got = Vec::new();
        loop {
            if typed {
                // `Framed::recv`: the reader of every handshake step.
                match c.recv::<Msg>() {
                    Ok(_) => st.msgs += 1,
                    Err(FrameError::Closed) => break,
                    Err(FrameError::Io(e)) => panic!("read failed (hang or I/O error): {e}"),
                    Err(_) => {
                        st.refused += 1;
                        break;
                    }
                }
                continue;
            }
            let (kind, p) = match c.recv_raw() {
                Ok(x) => x,
                Err(FrameError::Closed) => break,
                Err(FrameError::Io(e)) => panic!("read failed (hang or I/O error): {e}"),
                Err(FrameError::Oversized { len, limit: l }) => {
                    assert!(len > l, "frame of {len} bytes refused as oversized under the limit {l}");
                    st.refused += 1;
                    break;
                }
                Err(_) => {
                    st.refused += 1;
                    break;
                }
            };
            st.frames += 1;
            assert!(p.len() < limit, "frame of {} bytes accepted over the limit {limit}", p.len() + 1);
            match (kind, p.first()) {
                (KIND_MSG, _) => st.msgs += serde_json::from_slice::<Msg>(&p).is_ok() as u64,
                (KIND_DATA, Some(&STREAM_PAGES)) => {
                    if let Ok((idx, data)) = decode_pages(&p[1..], PAGE, MAX_FRAME / PAGE + 1) {
                        assert_eq!(data.len(), idx.len() * PAGE, "decode_pages: data does not match the page count");
                        st.pages += idx.len() as u64;
                    }
                }
                _ => {}
            }
            got.push((kind, p));
        }
        got
    })
}

#[test]
fn net_frames() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // Control: an unmutated stream reads back frame for frame, and every sample message parses.
    let mut rng = Rng(7);
    let (clean, offs) = frame_stream(&mut rng);
    let mut st = FrameStats::default();
    assert_eq!(read_frames(&l, &clean, MAX_FRAME, false, &mut st).len(), offs.len(), "a valid stream did not read back");
    for m in MSGS {
        serde_json::from_str::<Msg>(m).unwrap_or_else(|e| panic!("sample message {m} does not parse: {e}"));
    }
    let mut st = FrameStats::default();
    let out = testkit::fuzz(|rng| {
        let limit = if rng.chance(3) { PRE_AUTH_LIMIT } else { MAX_FRAME };
        let bytes = if rng.chance(10) {
            (0..rng.below(9000)).map(|_| rng.next() as u8).collect()
        } else {
            let (mut b, offs) = frame_stream(rng);
            mutate_frames(rng, &mut b, &offs, limit);
            b
        };
        // Pages also straight into the decoder, with hostile counts and any page size.
        let mut pages = bytes.clone();
        pages.truncate(rng.below(pages.len() + 1));
        if pages.len() >= 4 && rng.chance(2) {
            let v = rng.interesting32(pages.len());
            pages[..4].copy_from_slice(&v.to_le_bytes());
        }
        let _ = decode_pages(&pages, [1, 4096, PAGE][rng.below(3)], [0, 1, MAX_FRAME / PAGE + 1][rng.below(3)]);
        read_frames(&l, &bytes, limit, rng.chance(4), &mut st);
    });
    out.report("net_frames", &format!(" frames={} msgs={} pages={} refused={}", st.frames, st.msgs, st.pages, st.refused));
}
