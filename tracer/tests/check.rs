//! `tracer check` / `eval` / `k8s` / `catalog` against synthetic feature sets with known
//! answers (tests/fixtures_check/*.json; README.md there says what each one is).

use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tracer::catalog::{self, Catalog, Platform, Vendor};
use tracer::check::{self, Workload};
use tracer::features::{self, XState};
use tracer::k8s;
use tracer::policy::{self, Policy};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures_check").join(name)
}

fn tracer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tracer")).args(args).output().expect("run tracer")
}

fn workload(name: &str) -> Workload {
    Workload::load(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn host(name: &str) -> Platform {
    check::load_host(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A platform with exactly these (non-baseline) features; XCR0 derived from them.
fn platform(name: &str, vendor: Vendor, feats: &[&str]) -> Platform {
    let mut bits: catalog::FeatureBits =
        feats.iter().map(|n| features::by_name(n).unwrap_or_else(|| panic!("{n}"))).collect();
    for f in features::TABLE.iter().filter(|f| f.baseline) {
        bits.insert(f.id());
    }
    let xcr0 = catalog::xcr0_from_features(&bits);
    let size = catalog::xsave_size(vendor, &xcr0);
    Platform {
        name: name.into(),
        cpu_model: name.into(),
        microarchitecture: String::new(),
        vendor,
        features: bits,
        xcr0,
        xsave_size: size,
        xsave_size_max: size,
    }
}

mod check_dest {
    use super::*;

    #[derive(Deserialize)]
    struct Outcome {
        compatible: bool,
        required: Vec<String>,
        destinations: Vec<Dest>,
    }
    #[derive(Deserialize)]
    struct Dest {
        compatible: bool,
        #[serde(default)]
        missing: Vec<Missing>,
    }
    #[derive(Deserialize)]
    struct Missing {
        feature: String,
        class: String,
        xstate: Option<String>,
        evidence: Option<serde_json::Value>,
    }

    #[test]
    fn host_missing_exactly_one_feature_is_refused_naming_it() {
        let w = workload("python3-avx2.json");
        assert!(check::compatible(&w, &host("host-skylake.json")));
        let m = check::missing(&w, &host("host-no-bmi2.json"));
        assert_eq!(m.len(), 1, "{m:?}");
        assert_eq!(m[0].feature, "bmi2");

        let out = tracer(&["check", "--workload", fixture("python3-avx2.json").to_str().unwrap(), "--dest",
            fixture("host-no-bmi2.json").to_str().unwrap(), "--json"]);
        assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
        let o: Outcome = serde_json::from_slice(&out.stdout).expect("check JSON");
        assert!(!o.compatible && !o.destinations[0].compatible);
        let names: Vec<_> = o.destinations[0].missing.iter().map(|m| m.feature.as_str()).collect();
        assert_eq!(names, ["bmi2"]);
        assert_eq!(o.destinations[0].missing[0].class, "faults");
        assert!(o.required.contains(&"bmi2".to_string()));

        let human = tracer(&["check", "--workload", fixture("python3-avx2.json").to_str().unwrap(), "--dest",
            fixture("host-no-bmi2.json").to_str().unwrap()]);
        assert_eq!(human.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&human.stdout).contains("missing bmi2"));
    }

    #[test]
    fn compatible_host_exits_zero() {
        let out = tracer(&["check", "--workload", fixture("python3-avx512.json").to_str().unwrap(), "--dest",
            fixture("host-skylake.json").to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    }

    #[test]
    fn hint_only_features_never_refuse() {
        let w = workload("hint-only.json");
        assert!(w.required.iter().all(|r| r.feature.baseline), "only sse2 is required");
        assert_eq!(w.hints.len(), 4);
        let bare = host("host-bare.json");
        for h in ["ibt", "3dnowprefetch", "cldemote"] {
            assert!(!bare.features.has_name(h), "{h} must be absent from the bare host");
        }
        assert!(check::compatible(&w, &bare));
        let out = tracer(&["check", "--workload", fixture("hint-only.json").to_str().unwrap(), "--dest",
            fixture("host-bare.json").to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0));
    }

    #[test]
    fn feature_with_disabled_register_state_is_missing() {
        // CPUID says AVX-512, XCR0 = 0x7: the OS left opmask/ZMM state off.
        let zmm_off = host("host-zmm-off.json");
        assert!(zmm_off.features.has_name("avx512f"));
        assert!(!zmm_off.has_xstate(XState::Opmask));
        let m = check::missing(&workload("python3-avx512.json"), &zmm_off);
        let names: Vec<_> = m.iter().map(|m| m.feature).collect();
        assert_eq!(names, ["avx512f", "avx512vl", "avx512bw"]);
        assert!(m.iter().all(|m| m.xstate == Some(XState::Opmask)));
        // The one evidence instruction travels with the missing feature.
        assert!(m[1].evidence.as_ref().is_some_and(|e| e.insn.starts_with("vmovdqu64 ymm16")));
        // AVX2 code still runs there.
        assert!(check::compatible(&workload("python3-avx2.json"), &zmm_off));
    }

    #[test]
    fn missing_feature_json_carries_evidence() {
        let out = tracer(&["check", "--workload", fixture("python3-avx512.json").to_str().unwrap(), "--dest",
            fixture("host-zmm-off.json").to_str().unwrap(), "--json"]);
        assert_eq!(out.status.code(), Some(1));
        let o: Outcome = serde_json::from_slice(&out.stdout).unwrap();
        let vl = o.destinations[0].missing.iter().find(|m| m.feature == "avx512vl").unwrap();
        assert_eq!(vl.xstate.as_deref(), Some("opmask"));
        assert!(vl.evidence.is_some());
    }
}

mod catalogs {
    use super::*;

    #[derive(Deserialize)]
    struct Listing {
        instance_types: usize,
        groups: Vec<Group>,
    }
    #[derive(Deserialize)]
    struct Group {
        id: String,
        features: Vec<String>,
        instance_types: Vec<String>,
    }

    #[test]
    fn aws_catalog_has_383_types_and_no_flawed_bits() {
        let c = Catalog::load("aws").unwrap();
        assert_eq!(c.instances.len(), 383);
        for p in &c.instances {
            // Rule 1/2: no-bit ISA sets (3DNow!, FMA4, XOP, TBM) are supported nowhere.
            for f in ["3dnow", "fma4", "xop", "tbm", "lwp"] {
                assert!(!p.features.has_name(f), "{}: {f}", p.name);
            }
            // Rule 3: no AMX anywhere (AMX_TILE is supported nowhere).
            assert!(!p.features.has_name("amx_tile") && !p.features.has_name("amx_int8"), "{}", p.name);
            // Rule 2: CLZERO exactly on AMD.
            assert_eq!(p.features.has_name("clzero"), p.vendor == Vendor::Amd, "{}", p.name);
            // XCR0 agrees with the features.
            assert_eq!(p.has_xstate(XState::ZmmHi256), p.features.has_name("avx512f"), "{}", p.name);
        }
        let c3 = c.instances.iter().find(|p| p.name == "c3.2xlarge").unwrap();
        assert_eq!(c3.microarchitecture, "Ivy Bridge");
        assert!(c3.features.has_name("avx") && !c3.features.has_name("avx2"));
    }

    #[test]
    fn catalog_listing_json_groups_every_instance_once() {
        let out = tracer(&["catalog", "--json"]);
        assert_eq!(out.status.code(), Some(0));
        let l: Listing = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(l.instance_types, 383);
        let total: usize = l.groups.iter().map(|g| g.instance_types.len()).sum();
        assert_eq!(total, 383);
        assert!(l.groups.len() > 10 && l.groups.len() < 60, "{} groups", l.groups.len());
        assert_eq!(l.groups[0].id, "G1");
        assert!(l.groups.iter().all(|g| !g.features.is_empty()));
    }

    #[test]
    fn user_catalog_with_names_aliases_and_cpuid_bits() {
        let c = Catalog::load(fixture("mini-catalog.json").to_str().unwrap()).unwrap();
        assert_eq!(c.instances.len(), 4);
        let old = &c.instances[0];
        assert!(old.features.has_name("sse4_1"), "alias sse4.1");
        let by_bits = &c.instances[1];
        let by_names = &c.instances[2];
        assert_eq!(by_bits.features, by_names.features, "cpuid_bits and names describe the same CPU");
        assert_eq!(c.groups().len(), 3);
        let zen3 = &c.instances[3];
        assert_eq!(zen3.vendor, Vendor::Amd);
        assert!(zen3.has_xstate(XState::Pkru));
        assert_eq!(zen3.xsave_size, 2440);
    }

    #[test]
    fn catalog_check_lists_compatible_groups() {
        let out = tracer(&["check", "--workload", fixture("python3-avx2.json").to_str().unwrap(), "--catalog",
            fixture("mini-catalog.json").to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("3 of 4 instance types compatible"), "{text}");
        assert!(text.contains("hsw.large hsw.xlarge"), "{text}");
    }
}

mod policies {
    use super::*;

    const ZEN3: &[&str] = &["ssse3", "sse4_1", "sse4_2", "popcnt", "avx", "avx2", "bmi1", "bmi2", "abm", "movbe", "fma",
        "xsave", "osxsave", "sha_ni", "clzero", "mmxext", "sse4a", "pku", "ospke"];
    const SKX: &[&str] = &["ssse3", "sse4_1", "sse4_2", "popcnt", "avx", "avx2", "bmi1", "bmi2", "abm", "movbe", "fma",
        "xsave", "osxsave", "avx512f", "avx512vl", "avx512bw", "avx512dq", "avx512cd", "mpx", "pku", "ospke"];

    #[test]
    fn criu_cpu_needs_every_masked_source_flag() {
        let w = workload("python3-avx2.json");
        let zen3 = platform("zen3", Vendor::Amd, ZEN3);
        let skx = platform("skx", Vendor::Intel, SKX);
        // SHA-NI (in CRIU's mask) is on the source only: CRIU refuses, ours accepts.
        let why = policy::decide(Policy::CriuCpu, &w, &zen3, &skx).unwrap_err();
        assert!(why.contains("sha_ni"), "{why}");
        assert!(policy::accepts(Policy::Workload, &w, &zen3, &skx));
        // Destination a superset of the masked source flags: CRIU accepts.
        let mut more: Vec<&str> = SKX.to_vec();
        more.push("rtm");
        assert!(policy::accepts(Policy::CriuCpu, &w, &skx, &platform("skx+rtm", Vendor::Intel, &more)));
        // FMA is not in CRIU's mask: a source with FMA passes to a destination without it,
        // which ours refuses for a workload that uses FMA (the unsafe direction).
        let mut no_fma: Vec<&str> = SKX.to_vec();
        no_fma.retain(|f| *f != "fma");
        let no_fma = platform("skx-nofma", Vendor::Intel, &no_fma);
        assert!(policy::accepts(Policy::CriuCpu, &w, &skx, &no_fma));
        assert!(!policy::accepts(Policy::Workload, &w, &skx, &no_fma));
    }

    #[test]
    fn criu_fpu_compares_xsave_layout() {
        let w = workload("fixture-sse2.json");
        let skx = platform("skx", Vendor::Intel, SKX);
        let hsw = platform("hsw", Vendor::Intel, &["avx", "avx2", "xsave", "osxsave", "fma", "bmi1", "bmi2"]);
        let ivb = platform("ivb", Vendor::Intel, &["avx", "xsave", "osxsave"]);
        assert_eq!((skx.xsave_size, hsw.xsave_size, ivb.xsave_size), (2696, 832, 832));
        // Same XSAVE size (832) and states: accepted even though AVX2 is lost.
        assert!(policy::accepts(Policy::CriuFpu, &w, &hsw, &ivb));
        // Smaller source area into a larger one: sizes differ, refused.
        let why = policy::decide(Policy::CriuFpu, &w, &hsw, &skx).unwrap_err();
        assert!(why.contains("xsave size mismatch (832/2696)"), "{why}");
        // Source states the destination lacks: refused.
        assert!(policy::decide(Policy::CriuFpu, &w, &skx, &hsw).unwrap_err().contains("xfeatures"));
        // AMD Zen 3 with PKRU (2440) vs Intel AVX-512 with PKRU (2696).
        let zen3 = platform("zen3", Vendor::Amd, ZEN3);
        assert_eq!(zen3.xsave_size, 2440);
        assert!(!policy::accepts(Policy::CriuFpu, &w, &zen3, &skx));
        // The default (fpu,ins) needs both.
        assert!(!policy::accepts(Policy::CriuDefault, &w, &hsw, &ivb), "ins refuses: avx2 lost");
        assert!(policy::accepts(Policy::CriuDefault, &w, &ivb, &hsw));
    }

    #[test]
    fn criu_strict_needs_identical_flags() {
        let w = workload("fixture-sse2.json");
        let a = platform("a", Vendor::Intel, SKX);
        let b = platform("b", Vendor::Intel, SKX);
        assert!(policy::accepts(Policy::CriuStrict, &w, &a, &b));
        let mut more = SKX.to_vec();
        more.push("rtm");
        assert!(!policy::accepts(Policy::CriuStrict, &w, &a, &platform("c", Vendor::Intel, &more)));
    }

    #[derive(Deserialize)]
    struct Row {
        workload: String,
        sources: usize,
        pairs: usize,
        policies: Vec<Count>,
    }
    #[derive(Deserialize)]
    struct Count {
        policy: String,
        accepted: usize,
        accepted_and_safe: usize,
        unsafe_pairs: usize,
        recall: f64,
    }

    #[test]
    fn eval_on_aws_ours_is_safe_and_accepts_more() {
        let out = tracer(&["eval", "--workload", fixture("python3-avx2.json").to_str().unwrap(),
            fixture("fixture-sha.json").to_str().unwrap(), "--catalog", "aws", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let rows: Vec<Row> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(rows.len(), 2);
        for r in &rows {
            let get = |p: &str| r.policies.iter().find(|c| c.policy == p).unwrap();
            let ours = get("workload");
            assert_eq!(ours.unsafe_pairs, 0, "{}", r.workload);
            assert_eq!(ours.recall, 1.0);
            assert!(r.sources > 0 && r.pairs > 0);
            for p in ["criu-cpu", "criu-default", "criu-strict"] {
                let c = get(p);
                assert!(ours.accepted > c.accepted, "{}: ours {} vs {p} {}", r.workload, ours.accepted, c.accepted);
                assert!(c.accepted_and_safe <= ours.accepted);
            }
        }
        // SHA-NI exists only on AMD instances: CRIU's fpu-only check lets it move to Intel.
        let sha = &rows[1];
        assert_eq!(sha.sources, 158);
        assert!(sha.policies.iter().find(|c| c.policy == "criu-fpu").unwrap().unsafe_pairs > 0);
    }

    #[test]
    fn eval_ignore_feature_what_if() {
        let out = tracer(&["eval", "--workload", fixture("fixture-sha.json").to_str().unwrap(), "--ignore-feature",
            "sha_ni", "--json"]);
        assert_eq!(out.status.code(), Some(0));
        let rows: Vec<Row> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(rows[0].workload, "sha*");
        assert_eq!(rows[0].sources, 383);
        let out = tracer(&["eval", "--workload", fixture("fixture-sha.json").to_str().unwrap(), "--ignore-feature", "warp"]);
        assert_eq!(out.status.code(), Some(2));
    }

    #[test]
    fn eval_with_a_host_as_source() {
        let out = tracer(&["eval", "--workload", fixture("python3-avx2.json").to_str().unwrap(), "--source",
            fixture("host-skylake.json").to_str().unwrap(), "--json"]);
        assert_eq!(out.status.code(), Some(0));
        let rows: Vec<Row> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(rows[0].sources, 1);
        assert_eq!(rows[0].pairs, 383);
    }

    const AVX2: &[&str] = &["ssse3", "sse4_1", "sse4_2", "popcnt", "avx", "avx2", "bmi1", "bmi2", "abm", "movbe", "fma"];
    const AVX512: &[&str] = &["avx512f", "avx512vl", "avx512bw", "avx512dq", "avx512cd"];

    fn bound(name: &str, hidden: &[&str]) -> policy::Bound {
        policy::Bound { workload: workload(name), hidden: hidden.iter().map(|h| features::by_name(h).unwrap()).collect(), vendor: None }
    }

    #[test]
    fn per_source_binding_uses_the_trace_bound_for_each_source() {
        let glibc: Vec<_> = policy::DISPATCH_GLIBC.iter().map(|n| features::by_name(n).unwrap()).collect();
        let both = [AVX2, AVX512].concat();
        let host = platform("host", Vendor::Intel, &both);
        let skx = platform("skx", Vendor::Intel, &both);
        let hsw = platform("hsw", Vendor::Intel, AVX2);
        let hsw2 = platform("hsw2", Vendor::Intel, AVX2);
        let zen = platform("zen", Vendor::Amd, AVX2);
        let all = [skx, hsw, hsw2, zen];
        let traces = [bound("python3-avx512.json", &[]), bound("python3-avx2.json", AVX512)];
        let row = policy::eval_per_source(&traces, &host, &glibc, &all, &all).unwrap();
        let cover = row.per_source.as_ref().unwrap();
        // zen: a trace taken on an Intel host stands for no AMD source.
        assert_eq!((cover.covered, cover.uncovered, row.sources), (3, 1, 3));
        assert_eq!(cover.missing, vec![("amd without avx512f,avx512vl,avx512bw,avx512dq,avx512cd".to_string(), 1)]);
        // skx with the AVX-512 trace: hsw, hsw2, zen lack AVX-512, 0 accepted. hsw with the
        // AVX2 trace: skx, hsw2, zen, 3 accepted; hsw2 the same.
        assert_eq!(row.pairs, 9);
        assert_eq!(row.policies[0].accepted, 6);
        assert_eq!(row.policies[0].unsafe_pairs, 0);
        // One AVX-512 trace for every source: the AVX2 sources could not run it at all.
        let single = policy::eval(&workload("python3-avx512.json"), &all, &all);
        assert_eq!((single.sources, single.policies[0].accepted), (1, 0));
    }

    #[test]
    fn a_trace_bound_as_another_vendor_stands_for_that_vendors_sources() {
        let glibc: Vec<_> = policy::DISPATCH_GLIBC.iter().map(|n| features::by_name(n).unwrap()).collect();
        let host = platform("host", Vendor::Intel, &[AVX2, AVX512].concat());
        let all = [platform("hsw", Vendor::Intel, AVX2), platform("zen", Vendor::Amd, AVX2), platform("zen2", Vendor::Amd, AVX2)];
        let mut as_amd = bound("python3-avx2.json", AVX512);
        as_amd.vendor = Some(Vendor::Amd);
        let row = policy::eval_per_source(&[bound("python3-avx2.json", AVX512), as_amd], &host, &glibc, &all, &all).unwrap();
        let cover = row.per_source.as_ref().unwrap();
        assert_eq!((cover.traces, cover.covered, cover.uncovered), (2, 3, 0));
        assert_eq!((row.sources, row.pairs, row.policies[0].accepted), (3, 6, 6));
        // Only the AMD-bound trace: the Intel source is left out, not given the AMD binding.
        let mut as_amd = bound("python3-avx2.json", AVX512);
        as_amd.vendor = Some(Vendor::Amd);
        let row = policy::eval_per_source(&[as_amd], &host, &glibc, &all, &all).unwrap();
        let cover = row.per_source.unwrap();
        assert_eq!((cover.covered, cover.uncovered), (2, 1));
        assert_eq!(cover.missing, vec![("intel without avx512f,avx512vl,avx512bw,avx512dq,avx512cd".to_string(), 1)]);
    }

    #[test]
    fn per_source_binding_refuses_a_trace_that_uses_what_it_hid() {
        let glibc: Vec<_> = policy::DISPATCH_GLIBC.iter().map(|n| features::by_name(n).unwrap()).collect();
        let host = platform("host", Vendor::Intel, &[AVX2, AVX512].concat());
        let hsw = [platform("hsw", Vendor::Intel, AVX2)];
        let traces = [bound("python3-avx512.json", AVX512), bound("python3-avx2.json", &["avx512f"])];
        let row = policy::eval_per_source(&traces, &host, &glibc, &hsw, &hsw).unwrap();
        let cover = row.per_source.unwrap();
        assert_eq!(cover.traces, 1);
        assert_eq!(cover.refused.len(), 1);
        assert!(cover.refused[0].contains("it uses avx512f,avx512vl,avx512bw"), "{:?}", cover.refused);
        // hsw's signature lacks all of AVX-512; the trace that hid only avx512f is not its.
        assert_eq!((cover.covered, cover.uncovered), (0, 1));
        let err = policy::eval_per_source(&traces[..1], &host, &glibc, &[], &[]).err().unwrap();
        assert!(err.contains("no usable bound trace"), "{err}");
    }

    #[test]
    fn per_source_binding_on_the_command_line() {
        let f = |n: &str| fixture(n).to_str().unwrap().to_string();
        let avx2 = format!("{}@avx512f,avx512vl,avx512bw,avx512dq,avx512cd", f("python3-avx2.json"));
        let out = tracer(&["eval", "--bound", &f("python3-avx512.json"), &avx2, "--traced-on", &f("host-skylake.json"),
            "--source", &f("host-skylake.json"), "--dispatch", "glibc", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["workload"], "python3.11 per-source");
        // The tracing host as the only source: the unmasked trace stands for it.
        assert_eq!(rows[0]["per_source"]["covered"], 1);
        assert_eq!(rows[0]["pairs"], 383);
        assert_eq!(rows[0]["policies"][0]["unsafe_pairs"], 0);
        // Against the catalog, the synthetic host (no SSE3 bit) has no type's signature.
        let out = tracer(&["eval", "--bound", &avx2, "--traced-on", &f("host-skylake.json"), "--dispatch", "glibc"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("383 sources have no trace bound for them") && text.contains("with pni"), "{text}");
        let out = tracer(&["eval", "--bound", &avx2]);
        assert_eq!(out.status.code(), Some(2), "--bound needs --traced-on");
    }
}

mod kubernetes {
    use super::*;

    #[test]
    fn nfd_label_names() {
        for (name, label) in [("avx2", "AVX2"), ("avx512f", "AVX512F"), ("sha_ni", "SHA"), ("fma", "FMA3"), ("bmi2", "BMI2"),
            ("sm3", "SM3_X86"), ("clzero", "CLZERO")] {
            let nfd = features::by_name(name).unwrap().nfd;
            let got = match nfd {
                features::Nfd::Label(l) | features::Nfd::Blacklisted(l) => l,
                features::Nfd::None => panic!("{name}: no NFD label"),
            };
            assert_eq!(got, label, "{name}");
        }
        // BMI2 is in NFD's default attributeBlacklist.
        assert!(k8s::NFD_DEFAULT_BLACKLIST.contains(&"BMI2"));
        assert_eq!(features::by_name("bmi2").unwrap().nfd, features::Nfd::Blacklisted("BMI2"));
    }

    #[test]
    fn affinity_requires_labels_and_calls_out_blacklisted() {
        let out = tracer(&["k8s", "--workload", fixture("python3-avx512.json").to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0));
        let yaml = String::from_utf8_lossy(&out.stdout);
        let doc: serde_yaml::Value = serde_yaml::from_str(&yaml).expect("YAML");
        let exprs = &doc["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0]["matchExpressions"];
        let keys: Vec<&str> = exprs.as_sequence().unwrap().iter().map(|e| e["key"].as_str().unwrap()).collect();
        for l in ["AVX2", "AVX512F", "AVX512VL", "AVX512BW", "FMA3", "MOVBE", "AVX"] {
            assert!(keys.contains(&format!("feature.node.kubernetes.io/cpu-cpuid.{l}").as_str()), "{l} in {keys:?}");
        }
        assert!(keys.contains(&"kubernetes.io/arch"));
        // BMI2, LZCNT, SSSE3... are blacklisted by default but covered by the x86-64 level label.
        assert!(!keys.iter().any(|k| k.ends_with(".BMI2")));
        assert!(keys.contains(&"feature.node.kubernetes.io/cpu-cpuid.X86_64_V3"), "{keys:?}");
        assert!(yaml.contains("# X86_64_V3 stands for abm, bmi1, bmi2"), "{yaml}");
        // Hints are never required.
        assert!(!keys.iter().any(|k| k.ends_with(".CETIBT")));

        // Blacklisted and outside every level (CLMUL, RDRAND): not required, but named with
        // the nfd-worker config that un-hides them; no label at all (pku): called out.
        let out = tracer(&["k8s", "--workload", fixture("crypto-clmul.json").to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0));
        let yaml = String::from_utf8_lossy(&out.stdout);
        assert!(yaml.contains("NOT REQUIRED below") && yaml.contains("pclmulqdq (CLMUL)") && yaml.contains("rdrand (RDRAND)"), "{yaml}");
        assert!(yaml.contains("attributeBlacklist: [AVX10, BMI1, BMI2, CMOV,") && !yaml.contains("CLMUL,"), "{yaml}");
        assert!(yaml.contains("NOT EXPRESSIBLE: NFD has no cpuid label for: pku"), "{yaml}");
        assert!(yaml.contains("cpu-cpuid.AESNI"), "{yaml}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("pclmulqdq"));

        let out = tracer(&["k8s", "--workload", fixture("python3-avx512.json").to_str().unwrap(), "--nfd-whitelisted"]);
        let yaml = String::from_utf8_lossy(&out.stdout);
        assert!(yaml.contains("feature.node.kubernetes.io/cpu-cpuid.BMI2"), "{yaml}");
    }
}

mod bad_input {
    use super::*;

    fn exit2(args: &[&str], want: &str) {
        let out = tracer(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err:?} lacks {want:?}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(!err.contains("panicked"));
    }

    #[test]
    fn clear_errors_exit_2() {
        let f = |n: &str| fixture(n).to_str().unwrap().to_string();
        let bare = f("host-bare.json");
        exit2(&["check", "--workload", &f("malformed.json"), "--dest", &bare], "not a feature-set JSON");
        exit2(&["check", "--workload", &f("foreign.json"), "--dest", &bare], "missing field `schema`");
        exit2(&["check", "--workload", &f("empty-workload.json"), "--dest", &bare], "lists no features");
        exit2(&["check", "--workload", &f("fixture-sse2.json"), "--dest", &f("host-aarch64.json")], "arch \"aarch64\"");
        exit2(&["check", "--workload", &f("unknown-feature.json"), "--dest", &bare], "unknown feature \"avx9000\"");
        exit2(&["check", "--workload", &bare, "--dest", &bare], "kind \"host\" where \"workload\"");
        exit2(&["check", "--workload", &f("fixture-sse2.json"), "--catalog", &f("catalog-unknown-feature.json")],
            "unknown feature \"hyperdrive\"");
        exit2(&["check", "--workload", &f("fixture-sse2.json"), "--catalog", "gcp"], "unknown catalog");
        exit2(&["check", "--workload", &f("no-such-file.json"), "--dest", &bare], "cannot read");
        exit2(&["check", "--workload", &f("fixture-sse2.json"), "--dest", &bare, "--policy", "criu-cpu"], "--source");
        exit2(&["eval", "--workload", &f("empty-workload.json")], "lists no features");
        exit2(&["k8s", "--workload", &f("foreign.json")], "not a feature-set JSON");
    }
}

#[test]
fn host_json_round_trips_through_check() {
    let out = tracer(&["host", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let set: tracer::report::FeatureSet = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(set.kind, "host");
    let p = check::host_platform(&set, Path::new("host.json")).unwrap();
    // Every usable feature needs its XCR0 states enabled.
    for f in p.features.iter() {
        for s in f.xcr0 {
            assert!(p.has_xstate(*s), "{} listed but {s:?} disabled", f.name);
        }
    }
    let nfd = tracer(&["host", "--nfd"]);
    let labels = String::from_utf8_lossy(&nfd.stdout);
    assert!(labels.lines().all(|l| l.starts_with("feature.node.kubernetes.io/cpu-cpuid.") && l.ends_with("=true")));
    assert!(labels.contains("cpu-cpuid.X86_64_V1=true"));
    assert_eq!(labels.contains("cpu-cpuid.AVX2=true"), p.features.has_name("avx2"));
}
