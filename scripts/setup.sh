#!/usr/bin/env bash
# Installs every system package the project needs (Debian 12). Idempotent.
# Usage: scripts/setup.sh            (as root, or with sudo available)
set -euo pipefail

PKGS=(
  # eBPF programs (ebpf/, built by monitor-probe's build.rs)
  clang llvm libbpf-dev bpftool
  # WASM fixtures and asyncify instrumentation (migrator)
  wasi-libc lld-14 libclang-rt-14-dev-wasm32 binaryen wabt
  # native ISA fixtures and tests (tracer)
  gcc gcc-multilib make binutils
  # glibc's separate debug symbols: tracer names glibc's hidden functions and variables
  # (e.g. the lock-elision switch) from /usr/lib/debug/.build-id when they are installed
  libc6-dbg
  # network namespaces for the demo and network tests
  iproute2 procps util-linux
  # real workloads used by tracer tests and benchmarks
  redis-server python3 python3-numpy
  # fixtures/python: venv + pip (numpy from PyPI), openssl speed for scripts/audit.sh
  python3-venv python3-pip openssl
  # timing for benchmarks
  hyperfine time
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "[setup] installing: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "[setup] system packages ok"
