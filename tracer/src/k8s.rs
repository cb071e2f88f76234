//! Kubernetes node affinity from a workload's required features, in terms of
//! node-feature-discovery's `feature.node.kubernetes.io/cpu-cpuid.<NAME>` labels.

use crate::check::Workload;
use crate::features::Nfd;
use crate::host::NFD_PREFIX;
use serde::Serialize;

/// NFD's default `sources.cpu.cpuid.attributeBlacklist` (node-feature-discovery
/// source/cpu/cpu.go, `newDefaultConfig`).
pub const NFD_DEFAULT_BLACKLIST: &[&str] = &[
    "AVX10", "BMI1", "BMI2", "CLMUL", "CMOV", "CX16", "ERMS", "F16C", "HTT", "LZCNT", "MMX", "MMXEXT", "NX", "POPCNT",
    "RDRAND", "RDSEED", "RDTSCP", "SGX", "SGXLC", "SSE", "SSE2", "SSE3", "SSE4", "SSE42", "SSSE3", "TDX_GUEST",
];

#[derive(Debug, Serialize)]
pub struct Affinity {
    pub affinity: AffinityInner,
}
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AffinityInner {
    pub node_affinity: NodeAffinity,
}
#[derive(Debug, Serialize)]
pub struct NodeAffinity {
    #[serde(rename = "requiredDuringSchedulingIgnoredDuringExecution")]
    pub required: NodeSelector,
}
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelector {
    pub node_selector_terms: Vec<Term>,
}
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Term {
    pub match_expressions: Vec<Expr>,
}
#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct Expr {
    pub key: String,
    pub operator: String,
    pub values: Vec<String>,
}

/// x86-64 psABI levels as NFD labels them (`X86_64_V1`..`V4`, klauspost/cpuid
/// `level1Features`..`level4Features`): each level's own features.
pub const X86_64_LEVELS: [&[&str]; 4] = [
    &["cmov", "cx8", "fpu", "fxsr", "mmx", "sse", "sse2", "syscall"],
    &["cx16", "lahf_lm", "popcnt", "pni", "sse4_1", "sse4_2", "ssse3"],
    &["avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "osxsave"],
    &["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"],
];

/// The lowest x86-64 level (1-4) whose cumulative feature list contains `name`.
pub fn level_of(name: &str) -> Option<usize> {
    X86_64_LEVELS.iter().position(|l| l.contains(&name)).map(|i| i + 1)
}

/// The affinity plus what could not be expressed with NFD's default labels.
#[derive(Debug, Serialize)]
pub struct K8sPlan {
    pub affinity: Affinity,
    /// Required features NFD labels only when its blacklist is changed: `(feature, label)`.
    pub blacklisted: Vec<(&'static str, &'static str)>,
    /// Required features NFD has no label for at all.
    pub unlabelled: Vec<&'static str>,
    /// Whether blacklisted labels were put into the affinity (`--nfd-whitelisted`).
    pub include_blacklisted: bool,
    /// `X86_64_V<n>` required in place of blacklisted features it covers, and those features.
    pub level: Option<(usize, Vec<&'static str>)>,
}

/// Builds the affinity. With `include_blacklisted`, labels hidden by NFD's default
/// blacklist are required too (the cluster's nfd-worker config must then un-hide them).
pub fn plan(w: &Workload, include_blacklisted: bool) -> K8sPlan {
    let mut exprs = vec![Expr { key: "kubernetes.io/arch".into(), operator: "In".into(), values: vec!["amd64".into()] }];
    let mut blacklisted = Vec::new();
    let mut unlabelled = Vec::new();
    let mut reqs: Vec<_> = w.required.iter().filter(|r| !r.feature.baseline).collect();
    reqs.sort_by_key(|r| r.feature.name);
    for r in reqs {
        let label = match r.feature.nfd {
            Nfd::Label(l) => Some(l),
            Nfd::Blacklisted(l) => {
                blacklisted.push((r.feature.name, l));
                include_blacklisted.then_some(l)
            }
            Nfd::None => {
                unlabelled.push(r.feature.name);
                None
            }
        };
        if let Some(l) = label {
            let e = Expr { key: format!("{NFD_PREFIX}{l}"), operator: "In".into(), values: vec!["true".into()] };
            if !exprs.contains(&e) {
                exprs.push(e);
            }
        }
    }
    // NFD labels the x86-64 level by default: a blacklisted feature that belongs to a
    // level is still required, through X86_64_V<n> (which may also demand a few
    // level features the workload does not use).
    let mut level = None;
    if !include_blacklisted {
        let covered: Vec<&'static str> =
            blacklisted.iter().map(|(f, _)| *f).filter(|f| level_of(f).is_some()).collect();
        if let Some(n) = covered.iter().filter_map(|f| level_of(f)).max() {
            exprs.push(Expr {
                key: format!("{NFD_PREFIX}X86_64_V{n}"),
                operator: "In".into(),
                values: vec!["true".into()],
            });
            blacklisted.retain(|(f, _)| level_of(f).is_none());
            level = Some((n, covered));
        }
    }
    K8sPlan {
        affinity: Affinity {
            affinity: AffinityInner {
                node_affinity: NodeAffinity {
                    required: NodeSelector { node_selector_terms: vec![Term { match_expressions: exprs }] },
                },
            },
        },
        blacklisted,
        unlabelled,
        include_blacklisted,
        level,
    }
}

impl K8sPlan {
    /// YAML for a pod spec, preceded by `#` comments naming what NFD does not label.
    pub fn to_yaml(&self, workload: &str) -> Result<String, serde_yaml::Error> {
        let mut s = format!("# nodeAffinity for {workload}: requires the CPU features it uses (tracer k8s)\n");
        if let Some((n, covered)) = &self.level {
            s += &format!(
                "# X86_64_V{n} stands for {} (NFD's default attributeBlacklist hides their own labels)\n",
                covered.join(", ")
            );
        }
        if !self.blacklisted.is_empty() {
            let names: Vec<String> = self.blacklisted.iter().map(|(f, l)| format!("{f} ({l})")).collect();
            if self.include_blacklisted {
                s += &format!("# REQUIRES nfd-worker config: labels hidden by NFD's default attributeBlacklist: {}\n", names.join(", "));
            } else {
                s += &format!(
                    "# NOT REQUIRED below: NFD hides these by default (attributeBlacklist): {}\n",
                    names.join(", ")
                );
                s += "#   enable them in nfd-worker.conf, then re-run with --nfd-whitelisted:\n";
            }
            s += &self.nfd_config_comment();
        }
        if !self.unlabelled.is_empty() {
            s += &format!(
                "# NOT EXPRESSIBLE: NFD has no cpuid label for: {} (klauspost/cpuid does not detect them);\n\
                 #   use a NodeFeatureRule on a local feature file (e.g. from `tracer host --nfd`) or pin CPU models\n",
                self.unlabelled.join(", ")
            );
        }
        s += &serde_yaml::to_string(&self.affinity)?;
        Ok(s)
    }

    /// nfd-worker.conf snippet (as comments) keeping the default blacklist minus what we need.
    fn nfd_config_comment(&self) -> String {
        let need: Vec<&str> = self.blacklisted.iter().map(|(_, l)| *l).collect();
        let keep: Vec<&str> = NFD_DEFAULT_BLACKLIST.iter().copied().filter(|l| !need.contains(l)).collect();
        format!(
            "#   sources:\n#     cpu:\n#       cpuid:\n#         attributeBlacklist: [{}]\n",
            keep.join(", ")
        )
    }
}
