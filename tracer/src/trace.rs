//! `tracer --pid`: attach, release, analyze, report.

use crate::analysis::{self, PathOptions, Root};
use crate::attach::{self, AttachError};
use crate::features::{self, Class};
use crate::image::{CachedMem, Image};
use crate::procfs::{Proc, ProcError};
use crate::report::{Evidence, FeatureEntry, FeatureSet, SCHEMA};
use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
use serde_json::json;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    #[default]
    Path,
    Full,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Path => "path",
            Mode::Full => "full",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub mode: Mode,
    /// Bytes of each thread's stack copied while it is stopped.
    pub stack_bytes: usize,
    /// Threads used for decoding in full mode.
    pub threads: usize,
    pub path: PathOptions,
    pub extra_roots: Vec<Root>,
    /// Features whose evidence gets a reachability chain (`--explain`).
    pub explain: Vec<String>,
    /// Python-aware roots for CPython processes (python.rs).
    pub python: PythonMode,
}

/// Whether path mode reads a CPython process's method tables for roots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PythonMode {
    /// When the target embeds CPython (libpython or a static interpreter).
    #[default]
    Auto,
    Off,
}

impl PythonMode {
    pub fn parse(s: &str) -> anyhow::Result<PythonMode> {
        match s {
            "auto" => Ok(PythonMode::Auto),
            "off" => Ok(PythonMode::Off),
            _ => anyhow::bail!("--python takes auto or off, not {s:?}"),
        }
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Path,
            stack_bytes: attach::DEFAULT_STACK_BYTES,
            threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(4),
            path: PathOptions::default(),
            extra_roots: Vec::new(),
            explain: Vec::new(),
            python: PythonMode::Auto,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error("process {pid} replaced its program (exec) while being traced: run tracer again")]
    Execd { pid: i32 },
}

impl From<ProcError> for TraceError {
    fn from(e: ProcError) -> Self {
        TraceError::Attach(AttachError::Proc(e))
    }
}

/// Traces a live process and returns its workload feature set.
pub fn trace_pid(pid: i32, opts: &Options) -> Result<FeatureSet, TraceError> {
    let t0 = Instant::now();
    let proc = Proc::new(pid)?;
    attach::precheck(&proc)?;
    let exe = proc.exe();
    let mem = attach::open_mem(&proc)?;
    let maps = proc.maps()?;
    let snapshot = attach::capture(&proc, &maps, &mem, opts.stack_bytes)?;
    if snapshot.threads.iter().any(|t| t.regs.cs == 0x23) {
        return Err(AttachError::Compat32 { pid }.into());
    }
    if proc.exe() != exe {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() || proc.exe().is_none() {
            return Err(TraceError::Attach(AttachError::Exited { pid }));
        }
        return Err(TraceError::Execd { pid });
    }
    let mem = CachedMem::new(mem);
    let image = Image::load(&proc, &maps, &mem);
    let mut warnings = image.warnings.clone();
    if image.objects.iter().all(|o| !o.is_main) {
        warnings.push("the executable's code was not found among the mappings".into());
    } else if image.objects.iter().any(|o| o.is_main && !o.info.has_symtab) {
        warnings.push("the executable is stripped: `main` and local functions have no symbols (roots come from the entry point, code references and data)".into());
    }
    let mut roots = opts.extra_roots.clone();
    let mut python_report = None;
    let (tally, path_stats, explainer) = match opts.mode {
        Mode::Full => (analysis::full_scan(&image, opts.threads), None, None),
        Mode::Path => {
            let mut popts = opts.path.clone();
            popts.explain |= !opts.explain.is_empty();
            if opts.python == PythonMode::Auto {
                if let Some(py) = crate::python::analyze(pid, &image, &mem, &|a, b| mem.read_bulk(a, b), &maps) {
                    roots.extend(py.roots);
                    popts.skip_data_words.extend(py.skip_words);
                    popts.skip_export_roots.extend(py.skip_exports);
                    python_report = Some(py.report);
                }
            }
            let r = analysis::path_track(&image, &snapshot.threads, &mem, &roots, &popts);
            warnings.extend(r.warnings);
            (r.tally, Some(r.stats), Some(r.explain))
        }
    };
    let env = proc.environ();
    let bind_now_env = env.iter().any(|e| e.strip_prefix("LD_BIND_NOW=").is_some_and(|v| !v.is_empty()));
    let bind_now = bind_now_env
        || image.objects.iter().any(|o| o.is_main && o.info.bind_now)
        || path_stats.as_ref().is_some_and(|s| s.lazy_slots == 0);
    let mut features = entries(&image, &tally);
    if let Some(ex) = &explainer {
        for f in features.iter_mut().filter(|f| opts.explain.iter().any(|n| n == &f.name || n == "all")) {
            for e in f.evidence.iter_mut() {
                let addr = u64::from_str_radix(e.addr.trim_start_matches("0x"), 16).unwrap_or(0);
                e.path = ex.chain(addr, 48).into_iter().map(|(start, src)| describe_step(&image, &roots, start, src)).collect();
            }
        }
    }
    let mut stats = json!({
        "pause_us": snapshot.pause_us,
        "attach_us": snapshot.attach_us,
        "analysis_ms": t0.elapsed().as_millis() as u64,
        "bytes_decoded": tally.bytes_decoded,
        "instructions": tally.instructions,
        "code_bytes_mapped": image.code_bytes(),
    });
    if let Some(s) = &path_stats {
        stats["path"] = serde_json::to_value(s).unwrap_or_default();
    }
    if let Some(py) = python_report {
        stats["python"] = py;
    }
    Ok(FeatureSet {
        schema: SCHEMA.into(),
        kind: "workload".into(),
        arch: "x86_64".into(),
        subject: json!({
            "pid": pid,
            "exe": exe,
            "mode": opts.mode.as_str(),
            "threads": snapshot.threads.len(),
            "bind_now": bind_now,
        }),
        features,
        warnings,
        stats,
    })
}

/// Feature entries with evidence rendered (instruction text, object, symbol+offset).
pub fn entries(image: &Image, tally: &analysis::Tally) -> Vec<FeatureEntry> {
    let mut out: Vec<FeatureEntry> = tally
        .features
        .iter()
        .map(|(&id, acc)| {
            let f = features::get(id);
            let mut e = FeatureEntry::canonical(f, acc.class);
            e.count = Some(acc.count);
            e.evidence = acc.evidence.iter().map(|&a| evidence(image, a)).collect();
            e
        })
        .collect();
    out.sort_by(|a, b| a.class.cmp(&b.class).then(a.name.cmp(&b.name)));
    out
}

fn evidence(image: &Image, addr: u64) -> Evidence {
    let mut insn_text = String::new();
    if let Some(r) = image.region_of(addr) {
        let region = &image.regions[r];
        let off = (addr - region.start) as usize;
        let mut d = Decoder::with_ip(64, &region.bytes()[off..], addr, DecoderOptions::NONE);
        let i = d.decode();
        let mut f = IntelFormatter::new();
        f.options_mut().set_space_after_operand_separator(false);
        f.format(&i, &mut insn_text);
    }
    Evidence {
        addr: format!("{addr:#x}"),
        object: image.object_name(addr),
        symbol: image.symbolize(addr).unwrap_or_default(),
        insn: insn_text,
        path: Vec::new(),
    }
}

fn place(image: &Image, addr: u64) -> String {
    let obj = image.object_name(addr);
    let obj = obj.rsplit('/').next().unwrap_or("");
    match image.symbolize(addr) {
        Some(s) => format!("{s} ({obj})"),
        None => format!("{addr:#x} ({obj})"),
    }
}

fn describe_step(image: &Image, roots: &[Root], start: u64, src: analysis::Src) -> String {
    use analysis::{RootKind, Src};
    let why = match src {
        Src::Code(from) => format!("from {}", place(image, from)),
        Src::Data(word) => {
            let obj = image
                .objects
                .iter()
                .find(|o| o.info.loads.iter().any(|l| (l.vaddr.wrapping_add(o.bias)..l.vaddr.wrapping_add(o.bias).wrapping_add(l.memsz)).contains(&word)))
                .map(|o| o.path.rsplit('/').next().unwrap_or("").to_string())
                .unwrap_or_default();
            format!("pointer in data at {word:#x} ({obj})")
        }
        Src::Root(k) => match k {
            RootKind::ThreadPc(t) => format!("root: program counter of thread {t}"),
            RootKind::Stack(t) => format!("root: return address or code pointer on the stack of thread {t}"),
            RootKind::Entry => "root: entry point / main".to_string(),
            RootKind::InitArray => "root: init/fini array".to_string(),
            RootKind::Dlopen => "root: exported function of a dlopen'ed object".to_string(),
            RootKind::Given(i) => format!("root: {}", roots.get(i).map(|r| r.why.as_str()).unwrap_or("given")),
            RootKind::Extra => "root".to_string(),
        },
    };
    format!("{} <- {why}", place(image, start))
}

/// Renders the human summary.
pub fn write_human(fs: &FeatureSet, mut w: impl std::io::Write) -> std::io::Result<()> {
    let s = &fs.subject;
    writeln!(
        w,
        "pid {} ({}), {} threads, mode {}, paused {} µs, analysis {} ms, {} KiB decoded",
        s["pid"],
        s["exe"].as_str().unwrap_or("?"),
        s["threads"],
        s["mode"].as_str().unwrap_or("?"),
        fs.stats["pause_us"],
        fs.stats["analysis_ms"],
        fs.stats["bytes_decoded"].as_u64().unwrap_or(0) / 1024
    )?;
    let baseline: Vec<&FeatureEntry> =
        fs.features.iter().filter(|e| features::by_name(&e.name).is_some_and(|f| f.baseline) && e.class != Class::Hint).collect();
    let required: Vec<&FeatureEntry> =
        fs.features.iter().filter(|e| e.class.is_required() && !baseline.iter().any(|b| b.name == e.name)).collect();
    let hints: Vec<&FeatureEntry> = fs.features.iter().filter(|e| e.class == Class::Hint).collect();
    let line = |w: &mut dyn std::io::Write, e: &FeatureEntry| -> std::io::Result<()> {
        let ev = e.evidence.first();
        let obj = ev.map(|v| v.object.rsplit('/').next().unwrap_or("")).unwrap_or("");
        writeln!(
            w,
            "  {:<18} {:<7} {:>7}  {:<36} {} ({})",
            e.name,
            e.class.as_str(),
            e.count.unwrap_or(0),
            ev.map(|v| v.insn.as_str()).unwrap_or(""),
            ev.map(|v| if v.symbol.is_empty() { v.addr.as_str() } else { v.symbol.as_str() }).unwrap_or(""),
            obj
        )
    };
    writeln!(w, "Required features ({}): a destination must have these", required.len())?;
    writeln!(w, "  {:<18} {:<7} {:>7}  {:<36} {}", "feature", "class", "count", "example", "where")?;
    for e in &required {
        line(&mut w, e)?;
    }
    if !hints.is_empty() {
        writeln!(w, "Hints ({}): execute as no-ops without the feature, never required", hints.len())?;
        for e in &hints {
            line(&mut w, e)?;
        }
    }
    if !baseline.is_empty() {
        let names: Vec<&str> = baseline.iter().map(|e| e.name.as_str()).collect();
        writeln!(w, "x86-64 baseline (every x86-64 CPU): {}", names.join(" "))?;
    }
    for e in fs.features.iter().filter(|e| e.evidence.iter().any(|v| !v.path.is_empty())) {
        writeln!(w, "Why {} is reachable:", e.name)?;
        for v in e.evidence.iter().filter(|v| !v.path.is_empty()) {
            writeln!(w, "  {} at {}", v.insn, if v.symbol.is_empty() { &v.addr } else { &v.symbol })?;
            for step in &v.path {
                writeln!(w, "    {step}")?;
            }
        }
    }
    for warn in &fs.warnings {
        writeln!(w, "warning: {warn}")?;
    }
    Ok(())
}
