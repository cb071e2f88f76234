#!/usr/bin/env bash
# End-to-end run of the README's evaluation (scripts/eval-aws.sh, as root): every traced
# workload and every per-source row must accept no pair whose destination lacks a required
# feature, the per-source plan must pass its ld.so check (eval-aws.sh fails otherwise), and
# each per-source row must cover some sources.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
scripts/eval-aws.sh "$out" > "$out/log" 2>&1 || { tail -20 "$out/log" >&2; echo "[eval] eval-aws.sh failed" >&2; exit 1; }
python3 - "$out" << 'PY'
import glob, json, sys
out = sys.argv[1]
rows = json.load(open(f"{out}/eval.json"))
per = [r for f in sorted(glob.glob(f"{out}/eval-per-source-*.json")) for r in json.load(open(f))]
assert len(rows) >= 10, f"{len(rows)} workload rows"
assert len(per) == 4, f"{len(per)} per-source rows"
for r in rows + per:
    ours = r["policies"][0]
    assert ours["policy"] == "workload" and ours["unsafe_pairs"] == 0, (r["workload"], ours)
plan = [l.split()[0] for l in open(f"{out}/bind-plan")]
for r in per:
    assert r["per_source"]["covered"] > 0 and r["pairs"] > 0, (r["workload"], r["per_source"])
    ratio = r["ratio_vs_criu_strict"]
    print(f"[eval] {r['workload']}: {r['per_source']['covered']} sources, ours/criu-strict "
          f"{ratio:.1f}x" if ratio else f"[eval] {r['workload']}: {r['per_source']['covered']} sources")
print(f"[eval] {len(rows)} workloads, {len(plan)} bind-plan signatures ({', '.join(sorted(set(plan)))}), 0 unsafe pairs")
PY
echo "[eval] smoke ok"
