#!/usr/bin/env python3
"""Generates tracer/data/aws-catalog.json from ../shared/data (re-runnable).

Usage: scripts/gen-catalog.py [DATA_DIR] [OUT]
  DATA_DIR defaults to ../shared/data relative to the repository root (or $TRACER_CATALOG_DATA),
  OUT to tracer/data/aws-catalog.json.

Inputs:
  aws-x86-instance-cpuid.json   383 instance types: cpu_model, microarchitecture, cpuid_bits
                                (XED bit ids "name.leaf.subleaf.reg.bit", leaf/subleaf hex)
  aws-x86-instance-isa-sets.csv per-instance XED ISA-set support vector (1/0)
  xed-isa-set-cpuid-bits.tsv    XED ISA set -> CPUID bits

Canonical feature names come from the one table, tracer/src/features/table.rs (parsed
here), so the catalog and the tool can never disagree on a name. The data's known flaws
are handled by the numbered rules below; docs/tracer-check.md explains each.
"""
import csv
import json
import os
import re
import sys
from collections import Counter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = sys.argv[1] if len(sys.argv) > 1 else os.environ.get(
    "TRACER_CATALOG_DATA", os.path.join(ROOT, "..", "shared", "data"))
OUT = sys.argv[2] if len(sys.argv) > 2 else os.path.join(ROOT, "tracer", "data", "aws-catalog.json")
TABLE_RS = os.path.join(ROOT, "tracer", "src", "features", "table.rs")

# ---- the canonical table: name, XED bit name, baseline flag -------------------------
FEAT = re.compile(r'feat!\("([a-z0-9_]+)",\s*(nobit|\(([^)]*)\))(.*)\),\s*$')
names, xed_to_name, baseline = [], {}, set()
for line in open(TABLE_RS):
    m = FEAT.search(line.strip())
    if not m:
        continue
    name, rest = m.group(1), m.group(4)
    names.append(name)
    x = re.search(r'Some\("([a-z0-9_]+)"\)', rest)
    if x:
        xed_to_name[x.group(1)] = name
    if m.group(2) == "nobit" or rest.rstrip().endswith("true"):
        baseline.add(name)
assert len(names) > 100, f"parsed only {len(names)} features from {TABLE_RS}"

src = json.load(open(os.path.join(DATA, "aws-x86-instance-cpuid.json")))
rows = list(csv.reader(open(os.path.join(DATA, "aws-x86-instance-isa-sets.csv"))))
header, isa = rows[0], {r[0]: dict(zip(rows[0][1:], r[1:])) for r in rows[1:]}
xed_sets = {}
for line in open(os.path.join(DATA, "xed-isa-set-cpuid-bits.tsv")).read().splitlines()[1:]:
    s, _, bits = line.partition("\t")
    xed_sets[s] = bits.split()

# Rule 1: ISA sets without a CPUID bit in XED's table (or absent from it) carry no
# information: the collector marks them supported on every instance (3DNOW, FMA4, XOP,
# TBM, SVM, LWP, CLZERO on Intel...). They contribute no bit; the features only they
# would reveal come from vendor facts (Rule 2).
nobit_sets = sorted(s for s in header[1:] if not xed_sets.get(s))
everywhere = sorted(s for s in nobit_sets if all(isa[i][s] == "1" for i in isa))

# Rule 2: vendor facts for canonical features XED has no bit for.
#   every AMD EPYC (Zen 1-4) has CLZERO and MMXEXT; none has 3DNow!, FMA4, XOP, TBM, LWP
#   (dropped in Zen); no Intel CPU has any of these.
AMD_ONLY = ["clzero", "mmxext"]

# Rule 3: AMX. AMX_INT8 (and on Skylake/Cascade Lake AMX_BF16/FP16/COMPLEX) are marked
# supported while AMX_TILE - the set of LDTILECFG/TILELOADD that every AMX program
# needs - is supported nowhere; XED lists amx_tiles among AMX_INT8's bits, so the
# conversion gave Ivy Bridge..Cascade Lake "amx_tiles"+"amx_int8". AMX first shipped in
# Sapphire Rapids; no instance here has it. Drop amx_* unless AMX_TILE is supported.
AMX_BITS = {"amx_tiles", "amx_int8", "amx_bf16", "amx_fp16", "amx_complex"}

# Rule 4: system-level bits with no user-mode instruction (vmx, smx, snp) are not
# canonical features: dropped. Any other unknown bit is an error.
SYSTEM_BITS = {"vmx", "smx", "snp"}

out, dropped = [], Counter()
for inst in src["instances"]:
    it = inst["instance_type"]
    vendor = "amd" if "AMD" in inst["cpu_model"] else "intel" if "Intel" in inst["cpu_model"] else "unknown"
    feats = set(baseline) - {"nopl", "pause"}  # baseline features with a CPUID bit
    amx_ok = isa.get(it, {}).get("AMX_TILE") == "1"
    for bit in inst["cpuid_bits"]:
        xname = bit.split(".")[0]
        if xname in SYSTEM_BITS:
            dropped["rule4:" + xname] += 1
            continue
        if xname in AMX_BITS and not amx_ok:
            dropped["rule3:" + xname] += 1
            continue
        if xname not in xed_to_name:
            sys.exit(f"{it}: bit {bit} has no canonical feature; extend table.rs or a rule")
        feats.add(xed_to_name[xname])
    if vendor == "amd":
        feats.update(AMD_ONLY)
    # Rule 5: XCR0 (the states the OS enables) follows from CPUID: Linux enables every
    # user state the CPU supports (x87, SSE always with XSAVE; AVX; MPX; AVX-512; PKRU
    # when the OS set CR4.PKE, i.e. ospke; AMX tiles).
    xcr0 = ["x87", "sse"]
    if "avx" in feats:
        xcr0.append("avx")
    if "mpx" in feats:
        xcr0 += ["bndregs", "bndcsr"]
    if "avx512f" in feats:
        xcr0 += ["opmask", "zmm_hi256", "hi16_zmm"]
    if "pku" in feats and "ospke" in feats:
        xcr0.append("pkru")
    if "amx_tile" in feats:
        xcr0 += ["tilecfg", "tiledata"]
    out.append({
        "instance_type": it,
        "cpu_model": inst["cpu_model"],
        "microarchitecture": inst["microarchitecture"],
        "vendor": vendor,
        "vcpu": int(inst["vcpu"]),
        "memory_gib": float(inst["memory_gib"]),
        "features": sorted(feats, key=names.index),
        "xcr0": xcr0,
    })

doc = {
    "schema": "catalog/1",
    "name": "aws",
    "arch": "x86_64",
    "source": src.get("source", ""),
    "generated_by": "scripts/gen-catalog.py (re-run it to regenerate; do not edit by hand)",
    "rules": [
        "1: ISA sets without a CPUID bit carry no information (supported everywhere): ignored: "
        + ", ".join(everywhere),
        "2: vendor facts for features XED has no bit for: clzero, mmxext on every AMD instance; "
        "3dnow, 3dnowext, fma4, xop, tbm, lwp on none",
        "3: amx_* dropped unless the AMX_TILE ISA set is supported (it is nowhere)",
        "4: system bits vmx, smx, snp dropped (no user-mode instruction)",
        "5: xcr0 derived from CPUID: x87, sse; avx; bndregs+bndcsr if mpx; opmask+zmm_hi256+hi16_zmm "
        "if avx512f; pkru if pku and ospke; tilecfg+tiledata if amx_tile",
    ],
    "dropped_bits": dict(sorted(dropped.items())),
    "instances": sorted(out, key=lambda i: i["instance_type"]),
}
os.makedirs(os.path.dirname(OUT), exist_ok=True)
with open(OUT, "w") as f:
    # One instance per line keeps the generated file diffable.
    f.write("{\n")
    keys = [k for k in doc if k != "instances"]
    for k in keys:
        f.write(f"  {json.dumps(k)}: {json.dumps(doc[k])},\n")
    f.write('  "instances": [\n')
    f.write(",\n".join("    " + json.dumps(i) for i in doc["instances"]))
    f.write("\n  ]\n}\n")
print(f"wrote {OUT}: {len(out)} instance types; dropped {dict(dropped)}", file=sys.stderr)
