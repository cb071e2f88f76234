//! Fuzzing with generated inputs (issue 10, part 1): the tracer's parsers and decoders must
//! never panic and never allocate without bound, whatever bytes they are given.
//!
//! Targets (one `#[test]` each):
//! - `elf_parse`: `ElfInfo::parse` on mutated and truncated real ELF files (`/usr/bin/ls`, libc,
//!   the dynamic loader, `fixtures/build/isa/*`), with header/section/segment fields set to
//!   hostile values (`2^63` lengths, offsets past the end, huge counts); every parsed object is
//!   queried (`bias_for`, `symbolize`, `is_function_start`) and some go through
//!   `Image::from_files` + `analysis::full_scan` + `trace::entries` (what `tracer scan` does).
//! - `decode_random`: random and prefix-biased byte buffers through iced-x86 +
//!   `features::classify` / `Tally::record`, and a real ELF whose code sections are replaced by
//!   random bytes through `Image::from_files` + `full_scan`.
//! - `featureset_json` / `catalog_json`: mutated feature sets and catalogs (byte edits and
//!   structural edits: wrong types, huge numbers, deleted keys, long arrays) through the loaders
//!   `tracer check` uses, and the compatibility verdict.
//! - `cli_corrupt_inputs`: the real `tracer scan` / `tracer check` binaries on corrupted files
//!   under `ulimit -v` (1 GiB): exit 0/1/2, one line on stderr, never "panicked".
//!
//! Budget: `FUZZ_SECS` seconds per target (default 3) and at most `FUZZ_CASES` cases (default
//! unbounded); `FUZZ_SEED` reproduces a run (each case `i` uses seed `FUZZ_SEED + i`).
//! Each target prints one line `RELIABILITY fuzz <target> cases=N secs=S failures=F
//! max_alloc=BYTES` (the largest single allocation
//! of the run, the generator's own inputs included), read by `scripts/reliability.sh`.
//!
//! An allocation larger than `FUZZ_ALLOC_LIMIT` bytes (default 512 MiB) is refused by the
//! test's global allocator: the process aborts with the target and case to reproduce.

use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::{Guard, Rng};
use tracer::elf::ElfInfo;

// Allocation guard and generator: testkit (shared with migrator's fuzz tests).
#[global_allocator]
static GLOBAL: Guard = Guard;

// ---------------------------------------------------------------------------------------------
// Generator

/// Byte-level mutation: bit flips, interesting integers at random or given offsets, range
/// zeroing, splices and truncation.
fn mutate(rng: &mut Rng, data: &mut Vec<u8>, fields: &[(usize, usize)]) {
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        if data.is_empty() {
            data.push(rng.next() as u8);
        }
        let len = data.len();
        match rng.below(8) {
            0 => {
                let i = rng.below(len);
                data[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(len);
                data[i] = rng.next() as u8;
            }
            2 | 3 if !fields.is_empty() => {
                // A structural field (offset, width) set to a hostile value.
                let (off, w) = fields[rng.below(fields.len())];
                let v = rng.interesting(len).to_le_bytes();
                if off + w <= len {
                    data[off..off + w].copy_from_slice(&v[..w]);
                }
            }
            4 => {
                let w = [1, 2, 4, 8][rng.below(4)];
                let off = rng.below(len.saturating_sub(w).max(1));
                let v = rng.interesting(len).to_le_bytes();
                if off + w <= len {
                    data[off..off + w].copy_from_slice(&v[..w]);
                }
            }
            5 => {
                let a = rng.below(len);
                let n = rng.below(4096).min(len - a);
                data[a..a + n].fill(if rng.chance(2) { 0 } else { 0xff });
            }
            6 => {
                let a = rng.below(len);
                let b = rng.below(len);
                let n = rng.below(256).min(len - a).min(len - b);
                let chunk = data[a..a + n].to_vec();
                data[b..b + n].copy_from_slice(&chunk);
            }
            _ => {
                // Truncation (a short read, a truncated mapping).
                let keep = if rng.chance(2) { rng.below(len) } else { len - rng.below(len.min(4096)) };
                data.truncate(keep);
            }
        }
    }
}

/// (offset, width) of the ELF64 header, program-header and section-header fields that hold
/// offsets, sizes, counts and indices.
fn elf_fields(data: &[u8]) -> Vec<(usize, usize)> {
    let mut f = vec![(24, 8), (32, 8), (40, 8), (52, 2), (54, 2), (56, 2), (58, 2), (60, 2), (62, 2)];
    if data.len() < 64 || &data[..4] != b"\x7fELF" {
        return f;
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phnum) = (u64_at(32), u16_at(56));
    let (shoff, shnum) = (u64_at(40), u16_at(60));
    for i in 0..phnum.min(64) {
        let b = phoff.saturating_add(i * 56);
        for (o, w) in [(4, 4), (8, 8), (16, 8), (32, 8), (40, 8), (48, 8)] {
            if b.saturating_add(o + w) <= data.len() {
                f.push((b + o, w));
            }
        }
    }
    for i in 0..shnum.min(256) {
        let b = shoff.saturating_add(i * 64);
        for (o, w) in [(0, 4), (4, 4), (8, 8), (16, 8), (24, 8), (32, 8), (40, 4), (44, 4), (56, 8)] {
            if b.saturating_add(o + w) <= data.len() {
                f.push((b + o, w));
            }
        }
    }
    f
}

// ---------------------------------------------------------------------------------------------
// Harness

/// One target: generated cases within the `FUZZ_*` budget (testkit), then its RELIABILITY line.
fn run(target: &str, case: impl FnMut(&mut Rng)) {
    testkit::fuzz(case).report(target, "");
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Real ELF files to mutate: small fixtures first, then system binaries and libraries.
fn elf_corpus() -> Vec<(String, Vec<u8>)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join("fixtures/build/isa"))
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    paths.sort();
    for p in ["/usr/bin/ls", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2", "/usr/bin/true"] {
        paths.push(PathBuf::from(p));
    }
    let corpus: Vec<_> = paths
        .into_iter()
        .filter_map(|p| std::fs::read(&p).ok().filter(|b| b.starts_with(b"\x7fELF")).map(|b| (p.display().to_string(), b)))
        .collect();
    assert!(corpus.len() >= 3, "need real ELF files to mutate (run scripts/build-fixtures.sh)");
    corpus
}

fn exercise(info: &ElfInfo, rng: &mut Rng) {
    for _ in 0..8 {
        let a = rng.interesting(0x1000).wrapping_add(rng.next() % 0x10_0000);
        let _ = info.bias_for(a, rng.interesting(0x1000));
        let _ = info.symbolize(a);
        let _ = info.is_function_start(a);
    }
    for l in info.loads.iter().take(4) {
        let _ = info.bias_for(0x5555_0000_0000, l.offset);
    }
}

/// `tracer scan`'s library path: image from files on disk, full scan, report entries.
fn scan_file(bytes: &[u8], dir: &Path, name: &str) {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    if let Ok(img) = tracer::image::Image::from_files(std::slice::from_ref(&p)) {
        let t = tracer::analysis::full_scan(&img, 2);
        let _ = tracer::trace::entries(&img, &t);
        let _ = img.code_bytes();
        for r in img.regions.iter().take(16) {
            let _ = img.symbolize(r.start);
            let _ = img.object_name(r.start);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Targets

#[test]
fn elf_parse() {
    let corpus = elf_corpus();
    let fields: Vec<_> = corpus.iter().map(|(_, b)| elf_fields(b)).collect();
    let dir = tempfile::tempdir().unwrap();
    let mut scanned = 0u64;
    run("elf_parse", |rng| {
        let i = rng.below(corpus.len());
        let (_, orig) = &corpus[i];
        let mut data = orig.clone();
        mutate(rng, &mut data, &fields[i]);
        if let Ok(info) = ElfInfo::parse(&data) {
            exercise(&info, rng);
        }
        // Scanning is the expensive part: every small object, one large object in 16.
        if data.len() < 256 << 10 || rng.chance(16) {
            scan_file(&data, dir.path(), "elf");
            scanned += 1;
        }
    });
    println!("RELIABILITY note elf_parse scanned={scanned}");
}

#[test]
fn decode_random() {
    let corpus = elf_corpus();
    let dir = tempfile::tempdir().unwrap();
    run("decode_random", |rng| {
        // 1. Random buffers, biased to the escape and prefix bytes of SSE/AVX/AVX-512/AMX.
        const HOT: &[u8] = &[0x0f, 0x38, 0x3a, 0x62, 0xc4, 0xc5, 0x8f, 0x66, 0xf2, 0xf3, 0x48, 0x4c, 0xf0, 0x26, 0x2e, 0x3e];
        let n = 1 + rng.below(8192);
        let buf: Vec<u8> =
            (0..n).map(|_| if rng.chance(3) { HOT[rng.below(HOT.len())] } else { rng.next() as u8 }).collect();
        let mut dec = iced_x86::Decoder::with_ip(64, &buf, rng.next(), iced_x86::DecoderOptions::NONE);
        let mut t = tracer::analysis::Tally::default();
        let mut insn = iced_x86::Instruction::default();
        while dec.can_decode() {
            dec.decode_out(&mut insn);
            if !insn.is_invalid() {
                t.record(&insn);
                for f in tracer::features::classify(&insn) {
                    let _ = (f.feature.name, f.class.as_str());
                }
            }
        }
        // 2. One in four: a real ELF whose code sections hold random bytes, through the scan.
        if rng.chance(4) {
            let small: Vec<_> = corpus.iter().filter(|(_, b)| b.len() < 512 << 10).collect();
            let (_, orig) = small[rng.below(small.len())];
            let mut data = orig.clone();
            if let Ok(info) = ElfInfo::parse(&data) {
                for s in &info.exec_sections {
                    let (o, e) = (s.offset as usize, (s.offset + s.size) as usize);
                    if let Some(code) = data.get_mut(o..e) {
                        for b in code {
                            *b = if rng.chance(3) { HOT[rng.below(HOT.len())] } else { rng.next() as u8 };
                        }
                    }
                }
            }
            scan_file(&data, dir.path(), "code");
        }
    });
}

/// A random JSON value of any type, including the values that break naive readers.
fn hostile_json(rng: &mut Rng, depth: usize) -> serde_json::Value {
    use serde_json::{json, Value};
    match rng.below(if depth > 3 { 9 } else { 12 }) {
        0 => Value::Null,
        1 => json!(rng.chance(2)),
        2 => json!(rng.interesting(100)),
        3 => json!(-(rng.below(1 << 20) as i64) - 1),
        4 => json!(f64::from_bits(rng.next()).is_finite().then(|| f64::from_bits(rng.next())).unwrap_or(1e308)),
        5 => json!(""),
        6 => json!("x".repeat(rng.below(70_000))),
        7 => json!(["avx2", "sse", "avx512f", "faults", "hint", "silent", "ebx", "zmm_hi256", "0x2e7", "\u{0}", "é"][rng.below(11)]),
        8 => json!(format!("{:#x}", rng.next())),
        9 => Value::Array((0..rng.below(6)).map(|_| hostile_json(rng, depth + 1)).collect()),
        10 => Value::Object((0..rng.below(4)).map(|i| (format!("k{i}"), hostile_json(rng, depth + 1))).collect()),
        _ => json!({"name": "avx2", "class": "faults", "xcr0": [hostile_json(rng, depth + 1)], "cpuid": hostile_json(rng, depth + 1)}),
    }
}

/// Replaces, deletes or multiplies one node of a JSON document (found by a random walk).
fn mutate_json(rng: &mut Rng, v: &mut serde_json::Value, depth: usize) {
    use serde_json::Value;
    let descend = depth < 6 && rng.below(3) != 0;
    match v {
        Value::Array(a) if descend && !a.is_empty() => {
            let i = rng.below(a.len());
            return mutate_json(rng, &mut a[i], depth + 1);
        }
        Value::Object(o) if descend && !o.is_empty() => {
            let k = o.keys().nth(rng.below(o.len())).cloned().unwrap();
            return mutate_json(rng, o.get_mut(&k).unwrap(), depth + 1);
        }
        _ => {}
    }
    match (rng.below(4), &mut *v) {
        (0, Value::Object(o)) if !o.is_empty() => {
            let k = o.keys().nth(rng.below(o.len())).cloned().unwrap();
            o.remove(&k);
        }
        (1, Value::Array(a)) if !a.is_empty() => {
            // Many copies of one element (a large but honest input).
            let e = a[rng.below(a.len())].clone();
            let n = rng.below(2000);
            a.extend(std::iter::repeat_n(e, n));
        }
        _ => *v = hostile_json(rng, 0),
    }
}

fn json_corpus(filter: impl Fn(&str) -> bool) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root().join("tracer/tests/fixtures_check"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter(|t| filter(t))
        .collect();
    v.sort();
    v
}

fn mutated_text(rng: &mut Rng, seed: &str) -> String {
    if rng.chance(3) {
        let mut b = seed.as_bytes().to_vec();
        mutate(rng, &mut b, &[]);
        String::from_utf8_lossy(&b).into_owned()
    } else {
        let mut v: serde_json::Value = serde_json::from_str(seed).unwrap_or(serde_json::Value::Null);
        for _ in 0..1 + rng.below(3) {
            mutate_json(rng, &mut v, 0);
        }
        // Repeated structural edits can grow a value past the allocation guard's limit: then
        // the generator, not the code under test, would be what allocates without bound.
        to_text_bounded(&v, 64 << 20).unwrap_or_else(|| seed.to_string())
    }
}

/// `v` as JSON text, or None once it would exceed `max` bytes (serialization stops there).
fn to_text_bounded(v: &serde_json::Value, max: usize) -> Option<String> {
    struct Bounded(Vec<u8>, usize);
    impl std::io::Write for Bounded {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            if self.0.len() + b.len() > self.1 {
                return Err(std::io::Error::other("generated text too large"));
            }
            self.0.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut w = Bounded(Vec::new(), max);
    serde_json::to_writer(&mut w, v).ok()?;
    String::from_utf8(w.0).ok()
}

#[test]
fn featureset_json() {
    use tracer::check::{host_platform, verdict, Workload};
    use tracer::report::FeatureSet;
    let corpus = json_corpus(|t| t.contains("featureset/1"));
    assert!(corpus.len() >= 5);
    let p = Path::new("fuzz.json");
    let base_host = host_platform(
        &serde_json::from_str(&std::fs::read_to_string(root().join("tracer/tests/fixtures_check/host-skylake.json")).unwrap())
            .unwrap(),
        p,
    )
    .unwrap();
    run("featureset_json", |rng| {
        let k = rng.below(corpus.len());
        let text = mutated_text(rng, &corpus[k]);
        let Ok(set) = serde_json::from_str::<FeatureSet>(&text) else { return };
        let host = host_platform(&set, p).ok();
        if let Ok(w) = Workload::from_set(set.clone(), p) {
            let _ = (w.required_names(), w.xcr0());
            let v = verdict(&w, host.as_ref().unwrap_or(&base_host));
            for m in &v.missing {
                let _ = m.to_string();
            }
            let _ = w.ignoring(&["avx2".into()]);
        }
        let mut out = Vec::new();
        let _ = set.write_json(&mut out);
    });
}

#[test]
fn catalog_json() {
    use tracer::catalog::Catalog;
    use tracer::check::{verdict, Workload};
    let mut corpus = json_corpus(|t| t.contains("\"instances\""));
    corpus.push(std::fs::read_to_string(root().join("tracer/data/aws-catalog.json")).unwrap());
    let w = Workload::load(&root().join("tracer/tests/fixtures_check/redis-avx2.json")).unwrap();
    run("catalog_json", |rng| {
        // The shipped catalog is large: mutate it one time in eight.
        let seed = if rng.chance(8) { &corpus[corpus.len() - 1] } else { &corpus[rng.below(corpus.len() - 1)] };
        let text = mutated_text(rng, seed);
        if let Ok(c) = Catalog::parse(&text, Path::new("fuzz-catalog.json")) {
            let _ = c.groups();
            for i in c.instances.iter().take(64) {
                let _ = verdict(&w, i);
            }
        }
    });
}

/// Runs the real binary under a 1 GiB address-space limit.
fn tracer_cli(args: &[&std::ffi::OsStr]) -> (i32, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 1048576; exec \"$@\"")
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_tracer"))
        .args(args)
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn cli_corrupt_inputs() {
    let corpus: Vec<_> = elf_corpus().into_iter().filter(|(_, b)| b.len() < 256 << 10).collect();
    let fields: Vec<_> = corpus.iter().map(|(_, b)| elf_fields(b)).collect();
    let json = json_corpus(|t| t.contains("featureset/1") && t.contains("\"workload\""));
    let dir = tempfile::tempdir().unwrap();
    let (elf, wl) = (dir.path().join("corrupt"), dir.path().join("w.json"));
    let host = root().join("tracer/tests/fixtures_check/host-skylake.json");
    run("cli_corrupt_inputs", |rng| {
        let (code, err, what) = if rng.chance(2) {
            let i = rng.below(corpus.len());
            let mut data = corpus[i].1.clone();
            mutate(rng, &mut data, &fields[i]);
            std::fs::write(&elf, &data).unwrap();
            let (c, e) = tracer_cli(&["scan".as_ref(), elf.as_os_str()]);
            (c, e, "scan")
        } else {
            let k = rng.below(json.len());
            std::fs::write(&wl, mutated_text(rng, &json[k])).unwrap();
            let (c, e) = tracer_cli(&["check".as_ref(), "--workload".as_ref(), wl.as_os_str(), "--dest".as_ref(), host.as_os_str()]);
            (c, e, "check")
        };
        assert!(!err.contains("panicked"), "tracer {what} panicked: {err}");
        assert!(matches!(code, 0..=2), "tracer {what}: exit {code} (killed? out of memory?): {err}");
        if code == 2 {
            assert_eq!(err.trim_end().lines().count(), 1, "tracer {what}: error is not one line: {err}");
        }
    });
}
