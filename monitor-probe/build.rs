//! Builds the C eBPF programs in `../ebpf` with clang and embeds them (see `src/ebpf.rs`).
//!
//! `vmlinux.h` is generated here from the running kernel's BTF (`bpftool btf dump`), never
//! committed. Override the tools with `CLANG=` / `BPFTOOL=`, the BTF with `MONITOR_VMLINUX_BTF=`.
use std::env;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};

const PROGRAMS: &[&str] = &["page_cache", "thermal", "reclaim"];

fn fail(msg: &str) -> ! {
    eprintln!("error: {msg}");
    println!("cargo::warning={msg}");
    exit(1);
}

/// First of `candidates` that exists as a file, else search PATH for `name`.
fn find_tool(var: &str, name: &str, package: &str) -> PathBuf {
    let missing = || -> ! {
        fail(&format!(
            "`{name}` not found (needed to build the eBPF programs in ebpf/): \
             install the Debian package `{package}` (scripts/setup.sh does), or set {var}=/path/to/{name}"
        ))
    };
    if let Ok(p) = env::var(var) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            missing();
        }
        return p;
    }
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    // bpftool lives in /usr/sbin, which is not on every user's PATH.
    dirs.extend(["/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| missing())
}

fn run(cmd: &mut Command, what: &str) -> Vec<u8> {
    let out = cmd
        .output()
        .unwrap_or_else(|e| fail(&format!("{what}: cannot run {:?}: {e}", cmd.get_program())));
    if !out.status.success() {
        fail(&format!(
            "{what} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    out.stdout
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let src = manifest.join("../ebpf");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=../ebpf");
    for var in ["CLANG", "BPFTOOL", "MONITOR_VMLINUX_BTF"] {
        println!("cargo:rerun-if-env-changed={var}");
    }

    let clang = find_tool("CLANG", "clang", "clang");
    let bpftool = find_tool("BPFTOOL", "bpftool", "bpftool");
    if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        fail("/usr/include/bpf/bpf_helpers.h not found: install the Debian package `libbpf-dev`");
    }

    // 1. vmlinux.h from the kernel's BTF: CO-RE relocations make the objects portable anyway.
    let btf = env::var("MONITOR_VMLINUX_BTF").unwrap_or_else(|_| "/sys/kernel/btf/vmlinux".into());
    if !Path::new(&btf).exists() {
        fail(&format!("{btf} not found: the kernel must be built with CONFIG_DEBUG_INFO_BTF=y (or set MONITOR_VMLINUX_BTF)"));
    }
    let header = run(
        Command::new(&bpftool).args(["btf", "dump", "file", &btf, "format", "c"]),
        "bpftool btf dump",
    );
    std::fs::write(out.join("vmlinux.h"), header).unwrap();

    // 2. one object per program file
    for name in PROGRAMS {
        let c = src.join(format!("{name}.bpf.c"));
        let obj = out.join(format!("{name}.bpf.o"));
        run(
            Command::new(&clang)
                .args(["-g", "-O2", "-target", "bpf", "-mcpu=v3", "-D__TARGET_ARCH_x86", "-Wall", "-Werror"])
                .arg("-I")
                .arg(&out)
                .arg("-I")
                .arg(&src)
                .arg("-c")
                .arg(&c)
                .arg("-o")
                .arg(&obj),
            &format!("clang {}", c.display()),
        );
    }
}
