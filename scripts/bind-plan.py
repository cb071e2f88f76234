#!/usr/bin/env python3
"""Per-source binding plan for `tracer eval --bound` (issue 5, scripts/eval-aws.sh).

A process started on source S binds glibc's IFUNCs to S's CPU. glibc 2.36 picks a variant
from (a) which dispatch features are usable and (b) its "preferred" bits, which
init_cpu_features (sysdeps/x86/cpu-features.c) derives from vendor, model and features.
For every signature (vendor, dispatch features present) of the catalog's instance types,
this prints how to make a process on this host see S's view through
GLIBC_TUNABLES=glibc.cpu.hwcaps: the features this host has and S lacks are switched off
and every selection-relevant preferred bit is set or cleared to glibc's value for S.
The catalog's CPUs are family-6 Intel Xeons (Westmere to Cascade Lake, all in
init_cpu_features' "Core i3/i5/i7" cases) and AMD Zen 1-4 (no model-specific bits).

It then checks each plan with `ld.so --list-diagnostics` under those tunables: every
preferred bit the ifunc selectors read must have S's value. Exit 1 if one does not.

With --crypto the signature also has OpenSSL 3.0's capability bits (policy.rs
DISPATCH_CRYPTO) and the plan masks them with OPENSSL_ia32cap ("~W0:~W1": CPUID.1 EDX|ECX<<32,
CPUID.7 EBX|ECX<<32, the bits OpenSSL tests). libgcrypt needs no mask: the tracer leaves
it out while its hardware detection has not run (a process that initialised it is not
covered by this plan).

Output, one line per signature: VENDOR HIDDEN OPENSSL_IA32CAP TUNABLES (HIDDEN:
comma-separated tracer feature names or "-"; OPENSSL_IA32CAP "-" without --crypto).
Usage: bind-plan.py [--crypto] CATALOG.json HOST.json
"""
import json
import subprocess
import sys

# tracer name -> glibc.cpu.hwcaps name (policy.rs DISPATCH_GLIBC, same order). avx_vnni
# has no switch: glibc uses it only to derive Prefer_No_AVX512 (Intel).
HIDE = {"pni": "SSE3", "ssse3": "SSSE3", "sse4_1": "SSE4_1", "sse4_2": "SSE4_2", "popcnt": "POPCNT",
        "avx": "AVX", "avx2": "AVX2", "fma": "FMA", "fma4": "FMA4", "bmi1": "BMI1", "bmi2": "BMI2",
        "abm": "LZCNT", "movbe": "MOVBE", "rtm": "RTM", "avx512f": "AVX512F", "avx512vl": "AVX512VL",
        "avx512bw": "AVX512BW", "avx512dq": "AVX512DQ", "avx512cd": "AVX512CD", "xsave": "XSAVE",
        "xsavec": "XSAVEC", "avx_vnni": None}

# tracer name -> (word, bit) of OpenSSL's OPENSSL_ia32cap (policy.rs DISPATCH_CRYPTO).
OPENSSL = {"ssse3": (0, 32 + 9), "sse4_1": (0, 32 + 19), "movbe": (0, 32 + 22), "aes": (0, 32 + 25),
           "pclmulqdq": (0, 32 + 1), "avx": (0, 32 + 28), "xop": (0, 32 + 11), "rdrand": (0, 32 + 30),
           "fma": (0, 32 + 12), "bmi1": (1, 3), "avx2": (1, 5), "bmi2": (1, 8), "avx512f": (1, 16),
           "avx512dq": (1, 17), "rdseed": (1, 18), "adx": (1, 19), "avx512ifma": (1, 21), "avx512cd": (1, 28),
           "sha_ni": (1, 29), "avx512bw": (1, 30), "avx512vl": (1, 31), "avx512vbmi": (1, 32 + 1),
           "gfni": (1, 32 + 8), "vaes": (1, 32 + 9), "vpclmulqdq": (1, 32 + 10)}

# Preferred bits the x86-64 ifunc selectors of glibc 2.36 read (sysdeps/x86_64/multiarch
# ifunc-*.h, strchr.c, strcmp.c, strstr.c ...), all settable by the tunable. The feature a
# tunable needs to set a bit: without it the bit is never read either.
PREFS = {"Fast_Rep_String": None, "Fast_Unaligned_Load": None, "Fast_Unaligned_Copy": None,
         "Prefer_PMINUB_for_stringop": None, "Fast_Copy_Backward": None, "Slow_BSF": None,
         "Slow_SSE4_2": "sse4_2", "Prefer_ERMS": None, "Prefer_FSRM": None,
         "AVX_Fast_Unaligned_Load": "avx", "Prefer_No_VZEROUPPER": "avx", "Prefer_No_AVX512": "avx512f",
         "MathVec_Prefer_No_AVX512": "avx512f"}


def preferred(vendor, feats):
    """glibc 2.36 init_cpu_features' preferred bits for the catalog's CPUs."""
    p = set()
    if "avx2" in feats:  # update_active: 256-bit unaligned loads are fast with AVX2
        p.add("AVX_Fast_Unaligned_Load")
    if vendor == "intel":
        # Family 6 Core/Xeon (the default case with AVX, and Nehalem/Westmere by model).
        p |= {"Fast_Rep_String", "Fast_Unaligned_Load", "Fast_Unaligned_Copy", "Prefer_PMINUB_for_stringop"}
        if "avx_vnni" not in feats:  # no AVX512ER on any of them
            p.add("Prefer_No_AVX512")
        if "rtm" in feats:
            p.add("Prefer_No_VZEROUPPER")
    # AMD family 0x17/0x19 (Zen): only the Excavator case sets more; not in the catalog.
    return {b for b in p if PREFS[b] is None or PREFS[b] in feats}


def diagnostics(tunables):
    env = {"PATH": "/usr/bin:/bin"}
    if tunables:
        env["GLIBC_TUNABLES"] = tunables
    out = subprocess.run(["/lib64/ld-linux-x86-64.so.2", "--list-diagnostics"], env=env, capture_output=True,
                         text=True, check=True).stdout
    bits = {}
    for line in out.splitlines():
        if line.startswith("x86.cpu_features.preferred."):
            k, v = line[len("x86.cpu_features.preferred."):].split("=")
            bits[k] = int(v, 16) != 0
    return bits


def main():
    args = [a for a in sys.argv[1:] if a != "--crypto"]
    crypto = "--crypto" in sys.argv[1:]
    cat, host = json.load(open(args[0])), json.load(open(args[1]))
    hf = {f["name"] for f in host["features"]}
    dispatch = list(HIDE) + [f for f in OPENSSL if crypto and f not in HIDE]
    seen = []
    for i in cat["instances"]:
        feats = set(i["features"])
        hidden = [f for f in dispatch if f in hf and f not in feats]
        if any(f not in hf for f in dispatch if f in feats):
            continue  # S has a dispatch feature this host lacks: no view of S here
        key = (i["vendor"], tuple(hidden))
        if key in seen:
            continue
        seen.append(key)
        view = {f for f in HIDE if f in hf and f not in hidden}
        want = preferred(i["vendor"], view)
        tun = [b if b in want else "-" + b for b in PREFS] + ["-" + HIDE[f] for f in hidden if HIDE.get(f)]
        words = [0, 0]
        for f in hidden:
            if crypto and f in OPENSSL:
                w, b = OPENSSL[f]
                words[w] |= 1 << b
        ossl = f"~{words[0]:#x}:~{words[1]:#x}" if crypto else "-"
        tunables = "glibc.cpu.hwcaps=" + ",".join(tun)
        got = diagnostics(tunables)
        for b in PREFS:
            needs = PREFS[b]
            if needs and needs not in view:
                continue  # never read without the feature
            if got.get(b) != (b in want):
                sys.exit(f"bind-plan: {i['vendor']} without {','.join(hidden)}: ld.so reports {b}={got.get(b)}, "
                         f"glibc would set {b in want}")
        print(i["vendor"], ",".join(hidden) or "-", ossl, tunables)


if __name__ == "__main__":
    main()
