//! Integration tests: the real `tracer` binary against real fixture processes
//! (fixtures/isa, built by scripts/build-fixtures.sh). Needs root (ptrace).

use serde::Deserialize;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Deserialize)]
struct FeatureSet {
    schema: String,
    kind: String,
    arch: String,
    subject: Subject,
    features: Vec<Feature>,
    warnings: Vec<String>,
    stats: Stats,
}

#[derive(Debug, Deserialize)]
struct Subject {
    pid: i32,
    exe: String,
    mode: String,
    threads: usize,
    bind_now: bool,
}

#[derive(Debug, Deserialize)]
struct Feature {
    name: String,
    class: String,
    count: u64,
    evidence: Vec<Evidence>,
}

#[derive(Debug, Deserialize)]
struct Evidence {
    addr: String,
    object: String,
    symbol: String,
    insn: String,
}

#[derive(Debug, Deserialize)]
struct Stats {
    pause_us: u64,
    bytes_decoded: u64,
    #[serde(default)]
    path: serde_json::Value,
}

impl FeatureSet {
    fn has(&self, name: &str) -> bool {
        self.features.iter().any(|f| f.name == name)
    }
    fn get(&self, name: &str) -> &Feature {
        self.features.iter().find(|f| f.name == name).unwrap_or_else(|| panic!("feature {name} missing: {}", self.names()))
    }
    fn names(&self) -> String {
        self.features.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(" ")
    }
    /// Names of the faults/silent features.
    fn required(&self) -> Vec<&str> {
        self.features.iter().filter(|f| f.class != "hint").map(|f| f.name.as_str()).collect()
    }
}

fn fixture(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/build/isa").join(name);
    assert!(p.exists(), "{} missing: run scripts/build-fixtures.sh", p.display());
    p
}

/// A running fixture, killed on drop. Started and waited for until it prints "ready".
struct Target {
    child: Child,
    ready_line: String,
}

impl Target {
    fn start(name: &str, env: &[(&str, &str)]) -> Target {
        let mut cmd = Command::new(fixture(name));
        cmd.stdout(Stdio::piped()).stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start fixture");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("read ready line");
        assert!(line.starts_with("ready"), "{name} printed {line:?}");
        Target { child, ready_line: line.trim().to_string() }
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

fn tracer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tracer"))
}

fn trace(pid: i32, mode: &str) -> FeatureSet {
    let out = tracer().args(["--pid", &pid.to_string(), "--mode", mode, "--json"]).output().expect("run tracer");
    assert!(out.status.success(), "tracer failed: {}", String::from_utf8_lossy(&out.stderr));
    let fs: FeatureSet = serde_json::from_slice(&out.stdout).expect("feature-set JSON");
    assert_eq!(fs.schema, "featureset/1");
    assert_eq!(fs.kind, "workload");
    assert_eq!(fs.arch, "x86_64");
    assert_eq!(fs.subject.pid, pid);
    assert_eq!(fs.subject.mode, mode);
    assert!(fs.stats.bytes_decoded > 0);
    assert_not_stopped(pid);
    fs
}

/// State from /proc/PID/status: the process must be running/sleeping and untraced.
fn assert_not_stopped(pid: i32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let state = status.lines().find(|l| l.starts_with("State:")).unwrap_or("");
    let tracer = status.lines().find(|l| l.starts_with("TracerPid:")).unwrap_or("");
    assert!(!state.contains("T (") && !state.contains("t ("), "pid {pid} left stopped: {state}");
    assert!(tracer.ends_with("\t0"), "pid {pid} still traced: {tracer}");
    // Every thread too.
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task dir").flatten() {
        let s = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let st = s.lines().find(|l| l.starts_with("State:")).unwrap_or("");
        assert!(!st.contains("t (") && !st.contains("T ("), "thread {:?} left stopped: {st}", t.file_name());
    }
}

fn host_has(flag: &str) -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("flags"))
        .is_some_and(|l| l.split_whitespace().any(|f| f == flag))
}

mod reachability {
    use super::*;

    #[test]
    fn dead_avx2_code_is_not_reported_in_path_mode() {
        let t = Target::start("dead_avx2", &[]);
        let path = trace(t.pid(), "path");
        assert!(!path.has("avx2"), "path mode reported unreachable AVX2: {}", path.names());
        let full = trace(t.pid(), "full");
        let avx2 = full.get("avx2");
        assert_eq!(avx2.evidence[0].symbol, "dead_avx2");
        assert!(avx2.evidence[0].addr.starts_with("0x4"), "non-PIE address: {:?}", avx2.evidence[0]);
        assert!(avx2.evidence[0].insn.starts_with("vpaddd ymm"), "{:?}", avx2.evidence[0]);
    }

    #[test]
    fn function_pointer_table_is_followed() {
        let t = Target::start("fnptr_table", &[]);
        let path = trace(t.pid(), "path");
        assert_eq!(path.get("avx2").evidence[0].symbol, "f_avx2");
        assert_eq!(path.get("avx2").class, "faults");
        assert!(!path.has("aes"), "dead AES-NI reported: {}", path.names());
        assert!(trace(t.pid(), "full").has("aes"));
    }

    #[test]
    fn worker_thread_reached_via_pthread_create() {
        let t = Target::start("sha_thread", &[]);
        let path = trace(t.pid(), "path");
        assert_eq!(path.subject.threads, 2);
        let sha = path.get("sha_ni");
        assert_eq!(sha.evidence[0].symbol.split('+').next(), Some("worker"));
        assert!(sha.evidence[0].insn.starts_with("sha256rnds2"));
        assert!(sha.evidence[0].object.ends_with("sha_thread"));
        assert!(!path.has("aes"), "dead AES-NI reported: {}", path.names());
        assert!(trace(t.pid(), "full").has("aes"));
    }

    #[test]
    fn stripped_binary_still_reaches_worker() {
        let t = Target::start("sha_thread.stripped", &[]);
        let path = trace(t.pid(), "path");
        assert!(path.has("sha_ni"), "{}", path.names());
        assert!(!path.has("aes"));
        assert!(path.warnings.iter().any(|w| w.contains("stripped")), "{:?}", path.warnings);
    }

    #[test]
    fn ifunc_dispatch_reports_only_the_selected_variant() {
        // Forced to the AVX2 variant: same answer on every machine.
        let t = Target::start("dispatch", &[("FORCE_AVX2", "1")]);
        assert_eq!(t.ready_line, "ready avx2");
        let path = trace(t.pid(), "path");
        assert_eq!(path.get("avx2").evidence[0].symbol, "kernel_avx2");
        assert!(!path.has("avx512f"), "unselected AVX-512 variant reported: {}", path.names());
        let full = trace(t.pid(), "full");
        assert!(full.has("avx2") && full.has("avx512f"));
        drop(t);
        // Unforced: whatever this CPU selects.
        let t = Target::start("dispatch", &[]);
        let path = trace(t.pid(), "path");
        if t.ready_line == "ready avx512" {
            assert!(host_has("avx512f"));
            assert_eq!(path.get("avx512f").evidence[0].symbol, "kernel_avx512");
            assert!(!path.has("avx2"), "{}", path.names());
        } else {
            assert!(path.has("avx2") && !path.has("avx512f"), "{}", path.names());
        }
    }

    #[test]
    fn jump_tables_absolute_and_pc_relative() {
        for name in ["switch_table", "switch_table_pie"] {
            let t = Target::start(name, &[]);
            let path = trace(t.pid(), "path");
            let aes = path.get("aes");
            assert!(aes.evidence[0].symbol.starts_with("step"), "{name}: {:?}", aes.evidence);
            assert!(!path.has("sha_ni"), "{name}: dead SHA-NI reported: {}", path.names());
            assert!(trace(t.pid(), "full").has("sha_ni"));
        }
    }

    #[test]
    fn jit_region_is_decoded() {
        let t = Target::start("jit", &[]);
        let path = trace(t.pid(), "path");
        let p = path.get("pclmulqdq");
        assert!(p.evidence.iter().any(|e| e.object.starts_with("[anon")), "{:?}", p.evidence);
        assert!(path.warnings.iter().any(|w| w.contains("JIT")), "{:?}", path.warnings);
    }

    #[test]
    fn glibc_string_functions_under_bind_now() {
        // Force glibc's AVX2 string functions (same on every AVX2 machine).
        let tun = ("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX512F,-AVX512VL");
        let t = Target::start("strings", &[("LD_BIND_NOW", "1"), tun]);
        let forced = trace(t.pid(), "path");
        assert!(forced.subject.bind_now);
        assert!(forced.warnings.iter().all(|w| !w.contains("lazy binding")), "{:?}", forced.warnings);
        assert!(host_has("avx2"));
        let avx2 = forced.get("avx2");
        assert!(avx2.count > 100, "glibc's AVX2 string functions not reached: {avx2:?}");
        // With AVX-512 masked for glibc nothing reachable uses it: ld.so loads the address
        // of its AVX-512 lazy-binding trampoline and replaces it (a dead code reference).
        let avx512f = forced.features.iter().find(|f| f.name == "avx512f");
        assert!(avx512f.is_none(), "{avx512f:?}");
        drop(t);
        if host_has("avx512bw") && host_has("avx512vl") {
            // Unforced, glibc picks its EVEX variants: many AVX512BW instructions become
            // reachable that the forced run does not reach.
            let t = Target::start("strings", &[("LD_BIND_NOW", "1")]);
            let evex = trace(t.pid(), "path");
            let n_evex = evex.get("avx512bw").count;
            let n_forced = forced.features.iter().find(|f| f.name == "avx512bw").map(|f| f.count).unwrap_or(0);
            assert!(n_forced * 10 < n_evex, "avx512bw: {n_forced} forced vs {n_evex} unforced");
        }
    }

    #[test]
    fn lazy_binding_is_resolved_from_symbol_tables() {
        let t = Target::start("strings", &[]);
        let path = trace(t.pid(), "path");
        assert!(!path.subject.bind_now);
        assert!(path.warnings.iter().any(|w| w.contains("lazy binding")), "{:?}", path.warnings);
        assert!(path.has("avx2") || path.has("avx512f"), "{}", path.names());
    }

    #[test]
    fn glibc_lock_elision_follows_the_live_switch() {
        // glibc's __lll_*_elision functions (XBEGIN/XEND) run only when
        // __pthread_force_elision is set (glibc.elision.enable=1 on an RTM CPU). The
        // pruning needs libc's local symbols: its debug file (Debian libc6-dbg).
        let t = Target::start("strings", &[("LD_BIND_NOW", "1")]);
        let off = trace(t.pid(), "path");
        drop(t);
        let pruned = off.warnings.iter().any(|w| w.contains("lock elision"));
        if Path::new("/usr/share/doc/libc6-dbg").exists() {
            assert!(pruned, "{:?}", off.warnings);
            assert!(!off.has("rtm"), "elision code reported while disabled: {:?}", off.features.iter().find(|f| f.name == "rtm"));
        }
        if host_has("rtm") && pruned {
            let on = ("GLIBC_TUNABLES", "glibc.elision.enable=1");
            let t = Target::start("strings", &[("LD_BIND_NOW", "1"), on]);
            let on = trace(t.pid(), "path");
            assert!(on.warnings.iter().all(|w| !w.contains("lock elision")), "{:?}", on.warnings);
            let rtm = on.get("rtm");
            assert!(rtm.evidence.iter().any(|e| e.symbol.contains("_elision")), "{rtm:?}");
        }
    }

    #[test]
    fn lazy_binding_trampoline_not_chosen_is_not_a_root() {
        // ld.so picks the trampoline for lazily bound objects with `lea xsave; lea xsavec;
        // cmovne; mov [got+16]; jmp`: the candidate not picked stays in a register the
        // jump's target overwrites unread. With XSAVEC hidden from glibc it is xsavec's.
        if !host_has("xsavec") {
            return;
        }
        let t = Target::start("strings", &[]);
        let plain = trace(t.pid(), "path");
        drop(t);
        assert!(plain.get("xsavec").evidence.iter().any(|e| e.symbol.contains("_dl_runtime_resolve_xsavec")), "{}", plain.names());
        let t = Target::start("strings", &[("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-XSAVEC")]);
        let masked = trace(t.pid(), "path");
        drop(t);
        assert!(!masked.has("xsavec"), "{:?}", masked.features.iter().find(|f| f.name == "xsavec"));
        assert!(masked.has("xsave"), "{}", masked.names());
        let chosen = masked.features.iter().flat_map(|f| &f.evidence).find(|e| e.symbol.contains("resolve_xsavec"));
        assert!(chosen.is_none(), "{chosen:?}");
    }

    #[test]
    fn lazy_ifunc_slots_resolve_to_the_variant_the_resolver_selects() {
        // Debian's python3 right after startup has hundreds of unbound PLT slots, a few
        // of them IFUNCs (memcpy, __memcpy_chk, libm's tan, ...). Each is resolved to the
        // one variant its resolver returns here, so the lazy trace needs nothing the
        // LD_BIND_NOW trace (the GOT filled by the dynamic linker) does not.
        let run = |env: &[(&str, &str)]| {
            let mut cmd = Command::new("/usr/bin/python3");
            cmd.args(["-c", "import json, time\nprint('ready', flush=True)\nwhile True:\n    json.dumps({'a': [1, 2.5]}); time.sleep(0.01)"]);
            cmd.stdout(Stdio::piped()).stderr(Stdio::null()).envs(env.iter().copied());
            let mut child = cmd.spawn().expect("python3");
            let mut line = String::new();
            BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("ready line");
            assert!(line.starts_with("ready"), "{line:?}");
            let fs = trace(child.id() as i32, "path");
            let _ = child.kill();
            let _ = child.wait();
            fs
        };
        let lazy = run(&[]);
        let now = run(&[("LD_BIND_NOW", "1")]);
        let n = |k: &str| lazy.stats.path[k].as_u64().unwrap_or(0);
        assert!(n("lazy_slots") > 0, "{:?}", lazy.stats.path);
        assert!(n("lazy_ifuncs_bound") + n("lazy_ifuncs_evaluated") > 0, "{:?}", lazy.stats.path);
        let extra: Vec<&str> = lazy.required().into_iter().filter(|f| !now.required().contains(f)).collect();
        assert!(extra.is_empty(), "lazy trace needs {extra:?} beyond LD_BIND_NOW's {:?}", now.required());
    }

    #[test]
    fn openssl_dispatch_follows_the_live_capability_vector() {
        // python3's _hashlib loads libcrypto (stripped: OPENSSL_ia32cap_P has no symbol).
        // Its dispatch reaches XOP (AMD Bulldozer) and SHA-NI code; only what this CPU's
        // capability vector selects is reported.
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/python/hash_work.py");
        let mut child = Command::new("/usr/bin/python3").arg(&script).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("ready line");
        assert!(line.starts_with("ready"), "{line:?}");
        let pid = child.id() as i32;
        let fs = trace(pid, "path");
        let _ = child.kill();
        let _ = child.wait();
        assert!(fs.features.iter().any(|f| f.evidence.iter().any(|e| e.object.contains("libcrypto"))), "{}", fs.names());
        for amd_only in ["xop", "3dnow", "fma4"] {
            if !host_has(amd_only) {
                assert!(!fs.has(amd_only), "{amd_only}: {:?}", fs.features.iter().find(|f| f.name == amd_only));
            }
        }
        if host_has("sha_ni") {
            assert!(fs.get("sha_ni").evidence.iter().any(|e| e.object.contains("libcrypto")), "{}", fs.names());
        }
    }

    #[test]
    fn openssl_eligibility_called_as_a_function_is_decided() {
        // OpenSSL's RSAZ AVX512-IFMA path is behind `if (ossl_rsaz_avx512ifma_eligible())`:
        // a call to a leaf that loads the cap word, masks, compares and cmoves. Masking
        // IFMA in the cap vector (OPENSSL_ia32cap) must make the path unreachable.
        if !host_has("avx512ifma") {
            return;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/python/hash_work.py");
        let traced = |mask: Option<&str>| {
            let mut cmd = Command::new("/usr/bin/python3");
            cmd.arg(&script).stdout(Stdio::piped()).stderr(Stdio::null());
            if let Some(m) = mask {
                cmd.env("OPENSSL_ia32cap", m);
            }
            let mut child = cmd.spawn().expect("python3");
            let mut line = String::new();
            BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("ready line");
            let fs = trace(child.id() as i32, "path");
            let _ = child.kill();
            let _ = child.wait();
            fs
        };
        let plain = traced(None);
        assert!(plain.get("avx512ifma").evidence.iter().any(|e| e.object.contains("libcrypto")), "{}", plain.names());
        let masked = traced(Some(":~0x200000"));
        assert!(!masked.has("avx512ifma"), "{:?}", masked.features.iter().find(|f| f.name == "avx512ifma"));
        assert!(masked.has("aes"), "the rest of libcrypto stays: {}", masked.names());
        // Masking AVX512F/DQ/CD/BW/VL, ADX, RDSEED, IFMA, SHA, VBMI, GFNI, VAES, VPCLMULQDQ:
        // bn_mul_mont's `mov r11d,[cap]; cmp; jne L` … `L: and r11d,80100h; cmp; je mulx`
        // (the state carried into a forward target) and poly1305's `and r10d,r11d; test
        // r10d,1<<16` with r11d unknown (the clear bits of r10d) are decided too.
        let broad = traced(Some("~0x0:~0x702f02f0000"));
        for f in ["adx", "sha_ni", "avx512ifma"] {
            assert!(!broad.has(f), "{f}: {:?}", broad.features.iter().find(|x| x.name == f));
        }
        for f in ["avx512f", "avx512dq", "avx512bw", "avx512vl"] {
            if broad.has(f) {
                assert!(!broad.get(f).evidence.iter().any(|e| e.object.contains("libcrypto")), "{f}: {:?}", broad.get(f).evidence);
            }
        }
    }

    #[test]
    fn libgcrypt_counts_only_once_it_has_detected_the_cpu() {
        // libgcrypt picks its AES-NI/VAES/SHA-NI/AVX2 code from `hw_features`, filled on
        // the first API call. Loaded but never called (redis-server via libsystemd): that
        // choice will be made on whatever host it runs on then, so nothing of it counts.
        // Initialised: its CPU-specific code counts as usual.
        let traced = |init: bool| {
            let code = format!(
                "import ctypes, time\ng = ctypes.CDLL('libgcrypt.so.20')\nif {}:\n    g.gcry_check_version(None)\nprint('ready', flush=True)\ntime.sleep(60)",
                if init { "True" } else { "False" }
            );
            let mut child = Command::new("/usr/bin/python3").args(["-c", &code]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().expect("python3");
            let mut line = String::new();
            BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("ready line");
            assert!(line.starts_with("ready"), "{line:?}");
            let out = tracer().args(["--pid", &child.id().to_string(), "--json"]).output().unwrap();
            let _ = child.kill();
            let _ = child.wait();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let fs: FeatureSet = serde_json::from_slice(&out.stdout).unwrap();
            let warnings = fs.warnings.join("\n");
            (fs, warnings)
        };
        let from_gcrypt = |fs: &FeatureSet| -> Vec<String> {
            fs.features.iter().filter(|f| f.evidence.iter().any(|e| e.object.contains("libgcrypt"))).map(|f| f.name.clone()).collect()
        };
        let (cold, warn) = traced(false);
        assert!(from_gcrypt(&cold).is_empty(), "{:?}", from_gcrypt(&cold));
        assert!(warn.contains("libgcrypt") && warn.contains("hardware features not detected yet"), "{warn}");
        let (warm, warn) = traced(true);
        assert!(!warn.contains("not detected yet"), "{warn}");
        if host_has("aes") {
            assert!(from_gcrypt(&warm).iter().any(|f| f == "aes"), "{:?}", from_gcrypt(&warm));
        }
    }

    #[test]
    fn evidence_explains_reachability() {
        let t = Target::start("fnptr_table", &[]);
        let out = tracer().args(["--pid", &t.pid().to_string(), "--explain", "avx2"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Why avx2 is reachable"), "{text}");
        assert!(text.contains("pointer in data"), "{text}");
    }

    #[test]
    fn human_output_names_features_and_evidence() {
        let t = Target::start("sha_thread", &[]);
        let out = tracer().args(["--pid", &t.pid().to_string()]).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| l.trim_start().starts_with("sha_ni")).unwrap_or_else(|| panic!("{text}"));
        assert!(line.contains("faults") && line.contains("sha256rnds2") && line.contains("worker"), "{line}");
        assert!(text.contains("Hints"), "{text}");
    }

    #[test]
    fn output_file() {
        let t = Target::start("dead_avx2", &[]);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("w.json");
        let st = tracer().args(["--pid", &t.pid().to_string(), "--json", "-o"]).arg(&f).status().unwrap();
        assert!(st.success());
        let fs: FeatureSet = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        assert_eq!(fs.subject.exe, fixture("dead_avx2").canonicalize().unwrap().display().to_string());
    }
}

mod bad_input {
    use super::*;

    fn fails_with(args: &[&str], needle: &str) {
        let out = tracer().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }

    #[test]
    fn nonexistent_pid() {
        fails_with(&["--pid", "999999999"], "no process with pid 999999999");
        fails_with(&["--pid", "0"], "no process");
        fails_with(&["--pid", "-5"], "no process");
    }

    #[test]
    fn not_a_number() {
        let out = tracer().args(["--pid", "abc"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2));
    }

    #[test]
    fn kernel_thread() {
        fails_with(&["--pid", "2"], "kernel thread");
    }

    #[test]
    fn zombie() {
        // sh forks a child that exits at once, then execs a sleeper that never reaps it.
        let mut c = Command::new("sh").args(["-c", "true & exec sleep 30"]).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let zombie = loop {
            let kids = std::fs::read_to_string(format!("/proc/{}/task/{}/children", c.id(), c.id())).unwrap_or_default();
            if let Some(z) = kids.split_whitespace().next() {
                let st = std::fs::read_to_string(format!("/proc/{z}/status")).unwrap_or_default();
                if st.contains("State:\tZ") {
                    break z.to_string();
                }
            }
            assert!(Instant::now() < deadline, "no zombie appeared");
            std::thread::sleep(Duration::from_millis(20));
        };
        fails_with(&["--pid", &zombie], "zombie");
        let _ = c.kill();
        let _ = c.wait();
    }

    #[test]
    fn thirty_two_bit_process() {
        let t = Target::start_plain("spin32");
        fails_with(&["--pid", &t.pid().to_string()], "32-bit");
        assert_not_stopped(t.pid());
    }

    #[test]
    fn permission_denied_says_how_to_fix() {
        let t = Target::start("dead_avx2", &[]);
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"])
            .arg(env!("CARGO_BIN_EXE_tracer"))
            .args(["--pid", &t.pid().to_string()])
            .output()
            .expect("setpriv (util-linux)");
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("CAP_SYS_PTRACE") && err.contains("root"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert_not_stopped(t.pid());
    }

    #[test]
    fn process_exiting_mid_trace() {
        // A short-lived process: tracing it either succeeds or fails cleanly, never panics.
        for _ in 0..20 {
            let mut c = Command::new("sh").args(["-c", "i=0; while [ $i -lt 200 ]; do i=$((i+1)); done"]).spawn().unwrap();
            let out = tracer().args(["--pid", &c.id().to_string(), "--json"]).output().unwrap();
            let _ = c.wait();
            let code = out.status.code();
            assert!(code == Some(0) || code == Some(2), "{out:?}");
            assert!(!String::from_utf8_lossy(&out.stderr).contains("panicked"));
        }
    }
}

impl Target {
    /// For fixtures that print nothing (spin32): give it a moment to start.
    fn start_plain(name: &str) -> Target {
        let child = Command::new(fixture(name)).stdout(Stdio::null()).spawn().expect("start");
        std::thread::sleep(Duration::from_millis(100));
        Target { child, ready_line: String::new() }
    }
}

mod safety {
    use super::*;
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    /// Reads the fixture's progress: total CPU ticks of the process (it spins).
    fn cpu_ticks(pid: i32) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let rest = s.rsplit_once(')').unwrap().1;
        let f: Vec<&str> = rest.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    #[test]
    fn pause_is_reported_and_all_threads_seized() {
        let t = Target::start("threads8", &[]);
        let fs = trace(t.pid(), "path");
        assert_eq!(fs.subject.threads, 8);
        assert!(fs.stats.pause_us > 0 && fs.stats.pause_us < 1_000_000, "{}", fs.stats.pause_us);
    }

    #[test]
    fn sigkill_of_tracer_mid_attach_leaves_target_running() {
        let t = Target::start("threads8", &[]);
        for i in 0..30u64 {
            let mut c = tracer().args(["--pid", &t.pid().to_string(), "--json"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
            // Spread the kill over the attach window (a few hundred µs to a few ms in).
            std::thread::sleep(Duration::from_micros(200 + i * 150));
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
            let _ = c.wait();
            // The kernel detaches a dead tracer's tracees; give it a moment.
            std::thread::sleep(Duration::from_millis(5));
            assert_not_stopped(t.pid());
        }
        let before = cpu_ticks(t.pid());
        std::thread::sleep(Duration::from_millis(300));
        assert!(cpu_ticks(t.pid()) > before, "target stopped making progress");
    }

    #[test]
    fn sigint_and_sigterm_detach_first() {
        let t = Target::start("threads8", &[]);
        for (i, sig) in [Signal::SIGINT, Signal::SIGTERM].into_iter().cycle().take(20).enumerate() {
            let mut c = tracer().args(["--pid", &t.pid().to_string(), "--json"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
            std::thread::sleep(Duration::from_micros(300 + i as u64 * 200));
            let _ = kill(Pid::from_raw(c.id() as i32), sig);
            let _ = c.wait();
            assert_not_stopped(t.pid());
        }
        let before = cpu_ticks(t.pid());
        std::thread::sleep(Duration::from_millis(300));
        assert!(cpu_ticks(t.pid()) > before);
    }

    #[test]
    fn repeated_traces_leave_target_unharmed() {
        let t = Target::start("fnptr_table", &[]);
        let first = trace(t.pid(), "path");
        for _ in 0..20 {
            let again = trace(t.pid(), "path");
            assert_eq!(again.names(), first.names());
        }
    }
}
