//! Checkpoint at many random moments, restore alternating Cranelift and
//! Pulley, compare with an uninterrupted run byte for byte.

use migrator::engine::EngineKind;
use migrator::wasi::Preopen;

use crate::util::*;

fn check(name: &str, a: &[&str], n: usize, max_delay_ms: u64, seed: u64) {
    let want = run_plain(name, a, vec![], EngineKind::Cranelift);
    let c = chain(name, a, vec![], n, max_delay_ms, seed);
    assert!(c.checkpoints >= n.min(3), "{name}: only {} checkpoints happened", c.checkpoints);
    assert!(c.engines_used.contains(&EngineKind::Pulley));
    assert_eq!(String::from_utf8_lossy(&c.stdout), String::from_utf8_lossy(&want), "{name}: output differs after {} checkpoints", c.checkpoints);
}

#[test]
fn fixtures_print_their_expected_output() {
    for (f, e) in [("matmul.wasm", "matmul.stdout"), ("hashchain.wasm", "hashchain.stdout"), ("recursion.wasm", "recursion.stdout")] {
        let name = f.trim_end_matches(".wasm");
        assert_eq!(run_plain(f, &[name], vec![], EngineKind::Cranelift), expected(e), "{f}");
    }
}

#[test]
fn alloc_fill_prints_expected_output() {
    assert_eq!(run_plain("alloc_fill.wasm", &["alloc_fill"], vec![], EngineKind::Cranelift), expected("alloc_fill.stdout"));
}

#[test]
fn pulley_matches_cranelift() {
    let a = ["matmul", "60", "5"];
    assert_eq!(run_plain("matmul.wasm", &a, vec![], EngineKind::Pulley), run_plain("matmul.wasm", &a, vec![], EngineKind::Cranelift));
}

#[test]
fn matmul_random_checkpoints_alternating_engines() {
    check("matmul.wasm", &["matmul", "120", "12"], 10, 25, 0x1234);
}

#[test]
fn hashchain_random_checkpoints_alternating_engines() {
    check("hashchain.wasm", &["hashchain", "12000"], 10, 8, 0x777);
}

#[test]
fn recursion_random_checkpoints_alternating_engines() {
    // Stops land at any depth of a 20000-deep recursion.
    check("recursion.wasm", &["recursion", "20000", "300"], 10, 6, 0xbeef);
}

#[test]
fn alloc_fill_256mib_random_checkpoints_alternating_engines() {
    check("alloc_fill.wasm", &["alloc_fill", "256", "1"], 6, 60, 0x4242);
}

#[test]
fn fileio_random_checkpoints_alternating_engines() {
    // Reads input.txt and appends to out.txt through a preopened directory;
    // open files, offsets and append mode move with the image.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(root().join("fixtures/wasm/fileio-input.txt"), dir.path().join("input.txt")).unwrap();
    let pre = vec![Preopen { guest: "/data".into(), host: dir.path().into() }];
    let a = ["fileio", "/data/input.txt", "/data/out.txt", "20000"];
    let c = chain("fileio.wasm", &a, pre, 10, 40, 0x5151);
    assert!(c.checkpoints >= 3, "only {} checkpoints", c.checkpoints);
    assert_eq!(c.stdout, expected("fileio.stdout"));
    let out = std::fs::read(dir.path().join("out.txt")).unwrap();
    assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&expected("fileio.out")));
}

#[test]
fn wasi_state_moves_args_env_clock_and_file_offsets() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("probe.txt"), "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ").unwrap();
    let pre = || vec![Preopen { guest: "/data".into(), host: dir.path().into() }];
    let env = vec!["MIGRATOR_PROBE=hello".to_string()];
    let a = ["wasi_probe.wasm", "40", "x", "y z"];
    let want = run_plain_env("wasi_probe.wasm", &a, pre(), env.clone(), EngineKind::Cranelift);
    assert!(String::from_utf8_lossy(&want).ends_with("monotonic ok\n"));
    let c = chain_env("wasi_probe.wasm", &a, pre(), env, 10, 15, 0x99);
    assert!(c.checkpoints >= 5, "only {} checkpoints", c.checkpoints);
    assert_eq!(String::from_utf8_lossy(&c.stdout), String::from_utf8_lossy(&want));
}

#[test]
fn wasi_probe_prints_expected_output() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("probe.txt"), "abcdefghij").unwrap();
    let pre = vec![Preopen { guest: "/data".into(), host: dir.path().into() }];
    let out = run_plain_env("wasi_probe.wasm", &["wasi_probe.wasm", "3", "a", "b"], pre, vec!["MIGRATOR_PROBE=hello".into()], EngineKind::Pulley);
    assert_eq!(out, expected("wasi_probe.stdout"));
}

#[test]
fn alloc_fill_random_data_random_checkpoints() {
    // Incompressible memory: chunks are stored as raw zstd blocks.
    check("alloc_fill.wasm", &["alloc_fill", "64", "1", "random"], 4, 40, 0x3131);
}
