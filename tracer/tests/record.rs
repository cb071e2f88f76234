//! Integration tests of `tracer record` (the ground-truth oracle), `tracer audit`
//! (record ⊆ path ⊆ full) and Python-aware path tracking, on real processes:
//! fixtures/build/isa (scripts/build-fixtures.sh) and fixtures/python with the venv that
//! fixtures/python/build.sh makes (numpy from PyPI). Needs root (ptrace).

use serde::Deserialize;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

#[derive(Debug, Deserialize)]
struct FeatureSet {
    subject: serde_json::Value,
    features: Vec<Feature>,
    stats: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct Feature {
    name: String,
    class: String,
    evidence: Vec<Evidence>,
}

#[derive(Debug, Deserialize)]
struct Evidence {
    object: String,
    symbol: String,
    insn: String,
}

impl FeatureSet {
    fn has(&self, n: &str) -> bool {
        self.features.iter().any(|f| f.name == n)
    }
    fn names(&self) -> Vec<&str> {
        self.features.iter().map(|f| f.name.as_str()).collect()
    }
}

#[derive(Debug, Deserialize)]
struct Audit {
    misses: Vec<String>,
    counts: Counts,
    python: serde_json::Value,
    rows: Vec<Row>,
}

#[derive(Debug, Deserialize)]
struct Counts {
    record: usize,
    path: usize,
    full: usize,
}

#[derive(Debug, Deserialize)]
struct Row {
    name: String,
    status: String,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn isa(name: &str) -> PathBuf {
    let p = root().join("fixtures/build/isa").join(name);
    assert!(p.exists(), "{} missing: run scripts/build-fixtures.sh", p.display());
    p
}

fn venv_python() -> PathBuf {
    let p = root().join("fixtures/build/python/venv/bin/python3");
    assert!(p.exists(), "{} missing: run fixtures/python/build.sh (scripts/build-fixtures.sh)", p.display());
    p
}

/// A running process, killed on drop; started and waited for until it prints "ready".
struct Target {
    child: Child,
    ready: String,
}

impl Target {
    fn start(mut cmd: Command) -> Target {
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().expect("start target");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("read ready line");
        assert!(line.starts_with("ready"), "target printed {line:?}");
        child.stdout = Some(out.into_inner());
        Target { child, ready: line.trim().to_string() }
    }
    fn isa(name: &str, env: &[(&str, &str)]) -> Target {
        let mut cmd = Command::new(isa(name));
        cmd.envs(env.iter().copied());
        Target::start(cmd)
    }
    fn python(script: &str, args: &[&str]) -> Target {
        let mut cmd = Command::new(venv_python());
        cmd.arg(root().join("fixtures/python").join(script)).args(args);
        Target::start(cmd)
    }
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tracer(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tracer")).args(args).output().expect("run tracer")
}

fn record(pid: i32, extra: &[&str]) -> FeatureSet {
    let p = pid.to_string();
    let mut args = vec!["record", "--pid", &p, "--json"];
    args.extend_from_slice(extra);
    let out = tracer(&args);
    assert!(out.status.success(), "tracer record failed: {}", String::from_utf8_lossy(&out.stderr));
    let fs: FeatureSet = serde_json::from_slice(&out.stdout).expect("feature-set JSON");
    assert_eq!(fs.subject["mode"], "record");
    assert_not_stopped(pid);
    fs
}

fn trace(pid: i32, mode: &str) -> FeatureSet {
    let out = tracer(&["--pid", &pid.to_string(), "--mode", mode, "--json"]);
    assert!(out.status.success(), "tracer failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("feature-set JSON")
}

fn audit(pid: i32, extra: &[&str]) -> Audit {
    let p = pid.to_string();
    let mut args = vec!["audit", "--pid", &p, "--json"];
    args.extend_from_slice(extra);
    let out = tracer(&args);
    assert!(out.status.code() == Some(0) || out.status.code() == Some(1), "tracer audit failed: {}", String::from_utf8_lossy(&out.stderr));
    let a: Audit = serde_json::from_slice(&out.stdout).expect("audit JSON");
    assert_eq!(out.status.code() == Some(0), a.misses.is_empty());
    assert_not_stopped(pid);
    a
}

/// The process and every thread must be running/sleeping and untraced.
fn assert_not_stopped(pid: i32) {
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir").flatten() {
        let s = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let st = s.lines().find(|l| l.starts_with("State:")).unwrap_or("");
        let tr = s.lines().find(|l| l.starts_with("TracerPid:")).unwrap_or("");
        assert!(!st.contains("t (") && !st.contains("T ("), "thread {:?} of {pid} left stopped: {st}", t.file_name());
        assert!(tr.ends_with("\t0"), "thread {:?} of {pid} still traced: {tr}", t.file_name());
    }
}

fn host_has(flag: &str) -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| l.split_whitespace().any(|f| f == flag))
}

fn assert_subset(rec: &FeatureSet, path: &FeatureSet, what: &str) {
    let missed: Vec<&str> = rec.names().into_iter().filter(|n| !path.has(n)).collect();
    assert!(missed.is_empty(), "{what}: executed but not found by path mode: {missed:?} (record {:?}, path {:?})", rec.names(), path.names());
}

mod record {
    use super::*;

    /// fnptr_table calls `table[which & avx2]`: with `which` set to 1 in its memory, the
    /// AVX2 function runs exactly when the CPU has AVX2; the dead AES-NI code never does.
    #[test]
    fn observes_what_runs_and_nothing_else() {
        let t = Target::isa("fnptr_table", &[]);
        let nm = Command::new("nm").arg(isa("fnptr_table")).output().expect("nm");
        let which = String::from_utf8_lossy(&nm.stdout)
            .lines()
            .find(|l| l.ends_with(" which"))
            .and_then(|l| u64::from_str_radix(l.split_whitespace().next()?, 16).ok())
            .expect("symbol `which` in fnptr_table");
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut mem = std::fs::OpenOptions::new().write(true).open(format!("/proc/{}/mem", t.pid())).expect("open mem");
            mem.seek(SeekFrom::Start(which)).expect("seek");
            mem.write_all(&1i32.to_le_bytes()).expect("poke `which`");
        }
        let rec = record(t.pid(), &["--duration", "1.5"]);
        assert_eq!(rec.has("avx2"), host_has("avx2"), "record: {:?}", rec.names());
        if host_has("avx2") {
            let e = &rec.features.iter().find(|f| f.name == "avx2").expect("avx2").evidence[0];
            assert_eq!(e.symbol, "f_avx2");
            assert!(e.insn.starts_with("vpaddd ymm"), "{e:?}");
            assert!(e.object.ends_with("fnptr_table"));
        }
        assert!(!rec.has("aes"), "record saw dead AES-NI code: {:?}", rec.names());
        let r = &rec.stats["record"];
        assert!(r["stops"].as_u64().unwrap_or(0) > 10, "{r}");
        assert_subset(&rec, &trace(t.pid(), "path"), "fnptr_table");
    }

    #[test]
    fn record_is_contained_in_path_on_every_fixture() {
        let cases: &[(&str, &[(&str, &str)], &[&str])] = &[
            ("dead_avx2", &[], &[]),
            ("dispatch", &[], &[]),
            ("sha_thread", &[], &["sha_ni"]),
            ("strings", &[("LD_BIND_NOW", "1")], &[]),
            ("jit", &[], &["pclmulqdq"]),
            ("threads8", &[], &[]),
        ];
        for (name, env, must) in cases {
            let t = Target::isa(name, env);
            let rec = record(t.pid(), &["--duration", "1"]);
            for m in *must {
                assert!(rec.has(m), "{name}: record did not see {m}: {:?}", rec.names());
            }
            assert_subset(&rec, &trace(t.pid(), "path"), name);
            // And sampling is a lower bound of the same thing.
            let s = record(t.pid(), &["--duration", "0.5", "--sample", "500"]);
            assert_subset(&s, &trace(t.pid(), "path"), name);
        }
    }

    #[test]
    fn new_threads_are_followed() {
        // threads8's workers already run; the recorder must see all 8 threads.
        let t = Target::isa("threads8", &[]);
        let rec = record(t.pid(), &["--duration", "1"]);
        assert!(rec.stats["record"]["threads_seen"].as_u64().unwrap_or(0) >= 8, "{}", rec.stats);
    }

    /// Recording must not change what the process computes.
    #[test]
    fn output_is_identical_to_an_untraced_run() {
        let script = root().join("fixtures/python/hash_work.py");
        let n = "3000";
        let plain = Command::new("/usr/bin/python3").arg(&script).arg(n).output().expect("untraced run");
        assert!(plain.status.success());
        for mode in [&["--duration", "1"][..], &["--duration", "1", "--sample", "1000"][..], &["--duration", "1", "--block"][..]] {
            let mut cmd = Command::new("/usr/bin/python3");
            cmd.arg(&script).arg(n);
            let mut t = Target::start(cmd);
            let _ = record(t.pid(), mode);
            let status = t.child.wait().expect("wait");
            let mut rest = String::new();
            t.child.stdout.take().expect("stdout").read_to_string(&mut rest).expect("read");
            assert!(status.success(), "{mode:?}: target died: {status:?}");
            assert_eq!(format!("{}\n{rest}", t.ready), String::from_utf8_lossy(&plain.stdout), "{mode:?}");
        }
    }

    #[test]
    fn bad_input_is_one_line_exit_2() {
        let out = tracer(&["record", "--pid", "999999999", "--duration", "1"]);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        let out = tracer(&["record", "--pid", "1", "--duration", "-1"]);
        assert_eq!(out.status.code(), Some(2));
    }
}

mod python {
    use super::*;

    #[test]
    fn numpy_workload_is_sound_and_more_precise_than_full() {
        let t = Target::python("numpy_work.py", &[]);
        assert!(t.ready.starts_with("ready 2.") || t.ready.starts_with("ready 1."), "{}", t.ready);
        let step = audit(t.pid(), &["--duration", "2"]);
        let sample = audit(t.pid(), &["--duration", "3", "--sample", "1000"]);
        for a in [&step, &sample] {
            assert!(a.misses.is_empty(), "numpy: executed features path mode missed: {:?}", a.misses);
            assert!(a.counts.record > 0);
            assert!(a.counts.path < a.counts.full, "no precision gain: path {} full {}", a.counts.path, a.counts.full);
            assert!(a.rows.iter().all(|r| r.status != "path-not-full"), "{:?}", a.rows.iter().filter(|r| r.status != "ok").map(|r| &r.name).collect::<Vec<_>>());
        }
        // Roots came from Python, named module.function → symbol.
        let py = &step.python;
        assert!(py["interpreter"].as_str().unwrap_or("").contains("interpreter"), "{py}");
        assert!(py["roots"].as_u64().unwrap_or(0) > 0, "{py}");
        // The imported modules came from the live interpreter (sys.modules).
        assert!(py["sys_modules"].as_u64().unwrap_or(0) > 50, "{}", py["sys_modules"]);
        assert_eq!(py["names_from"], "script + sys.modules sources");
        assert!(py["ufuncs"]["rooted"].as_u64().unwrap_or(0) > 0, "{}", py["ufuncs"]);
        let list = py["root_list"].as_array().expect("root_list");
        assert!(list.iter().any(|r| r.as_str().is_some_and(|s| s.starts_with("Python: numpy._core._multiarray_umath.") && s.contains(" → "))), "{list:?}");
        // Extension modules the script never imports have no roots: numpy 2 does not
        // load numpy.random or numpy.fft unless used.
        let mods = py["extension_modules"].as_array().expect("extension_modules");
        assert!(!mods.iter().any(|m| m["module"].as_str().is_some_and(|s| s.contains("random") || s.contains("fft"))), "{mods:?}");
    }

    #[test]
    fn hashlib_zlib_workload_is_sound_and_uses_no_unimported_extension() {
        let mut cmd = Command::new("/usr/bin/python3");
        cmd.arg(root().join("fixtures/python/hash_work.py"));
        let t = Target::start(cmd);
        let step = audit(t.pid(), &["--duration", "2"]);
        let sample = audit(t.pid(), &["--duration", "2", "--sample", "1000"]);
        for a in [&step, &sample] {
            assert!(a.misses.is_empty(), "hash_work: executed features path mode missed: {:?}", a.misses);
            assert!(a.counts.path <= a.counts.full);
        }
        let path = trace(t.pid(), "path");
        // Only modules the script imports: _hashlib (OpenSSL) is there, numpy is not.
        let mods: Vec<String> = path.stats["python"]["extension_modules"]
            .as_array()
            .map(|v| v.iter().filter_map(|m| m["module"].as_str().map(String::from)).collect())
            .unwrap_or_default();
        assert!(mods.iter().any(|m| m == "_hashlib"), "{mods:?}");
        assert!(mods.iter().all(|m| !m.starts_with("numpy")), "{mods:?}");
        for f in &path.features {
            for e in &f.evidence {
                assert!(!e.object.contains("numpy"), "{} evidence in {}", f.name, e.object);
            }
        }
        let _ = path.features.iter().map(|f| &f.class).count();
    }
}
