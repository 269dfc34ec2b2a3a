#!/usr/bin/env bash
# Installs what l7proxy needs, then its npm dependencies, then builds it.
#   bash scripts/setup.sh            system packages (as root on Debian/Ubuntu) + Node + npm ci + build
#   bash scripts/setup.sh --check    only report what is missing; exit 1 if anything is
# Idempotent and quick when everything is there: apt runs only for missing packages and
# `npm ci` only when package-lock.json changed since the last install.
# l7proxy runs on a supported Node.js (24 or newer). Where the machine's is older (Debian 12 has
# 18, and Node 20 is past its end of life) Node NODE_VERSION is installed into .node/ for
# l7proxy alone; the npm scripts, bin/l7proxy and the agent, CNI and test processes use it
# (scripts/with-node), and the machine's own Node stays as it was.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian package -> a file it installs (how we tell it is present without dpkg on other distros).
declare -A PACKAGES=(
  [clang]=/usr/bin/clang
  [llvm]=/usr/bin/llvm-objdump
  [libbpf-dev]=/usr/include/bpf/bpf_helpers.h
  [libbpf1]=/usr/lib/$(uname -m)-linux-gnu/libbpf.so.1
  [gcc]=/usr/bin/cc
  [libc6-dev]=/usr/include/stdio.h
  [linux-libc-dev]=/usr/include/linux/bpf.h
  [bpftool]=/usr/sbin/bpftool
  [iproute2]=/usr/sbin/ip
  [iptables]=/usr/sbin/iptables
  [nftables]=/usr/sbin/nft
  [procps]=/usr/sbin/sysctl
  [util-linux]=/usr/bin/unshare
  [curl]=/usr/bin/curl
  [bind9-dnsutils]=/usr/bin/dig
  [unbound]=/usr/sbin/unbound
  [haproxy]=/usr/sbin/haproxy
  [wrk]=/usr/bin/wrk
  [nghttp2-client]=/usr/bin/h2load
  [dnsperf]=/usr/bin/dnsperf
  [dnsdist]=/usr/bin/dnsdist
  [chromium]=/usr/bin/chromium
  # chromium only recommends a font; the report test measures laid-out text.
  [fonts-liberation]=/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf
  [ca-certificates]=/etc/ssl/certs/ca-certificates.crt
  # Real containers for the CNI plugin's test (podman with runc: crun fails on hybrid cgroups),
  # from a root filesystem of busybox-static (no image registry is needed).
  [podman]=/usr/bin/podman
  [runc]=/usr/sbin/runc
  [containernetworking-plugins]=/usr/lib/cni/host-local
  [busybox-static]=/bin/busybox
  # The cluster's store: the lab's nodes share identities, endpoints and policy through it.
  [etcd-server]=/usr/bin/etcd
)
NODE_MIN_MAJOR=24
NODE_VERSION=24.22.3

check_only=0
[[ "${1:-}" == "--check" ]] && check_only=1
if [[ $# -gt 0 && "$1" != "--check" ]]; then
  echo "setup.sh: unknown argument '$1' (usage: bash scripts/setup.sh [--check])" >&2
  exit 2
fi

missing=()
for pkg in "${!PACKAGES[@]}"; do
  [[ -e "${PACKAGES[$pkg]}" ]] || missing+=("$pkg")
done
IFS=$'\n' missing=($(sort <<<"${missing[*]:-}")); unset IFS
[[ -z "${missing[0]:-}" ]] && missing=()

is_debian=0
[[ -r /etc/os-release ]] && grep -qiE '^(ID|ID_LIKE)=.*(debian|ubuntu)' /etc/os-release && is_debian=1

if ((${#missing[@]} > 0)); then
  if ((check_only == 0 && is_debian == 1 && EUID == 0)); then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing system packages: ${missing[*]}" >&2
    if ((is_debian == 1)); then
      echo "  install them as root with: apt-get update && apt-get install -y ${missing[*]}" >&2
    else
      echo "  this is not Debian/Ubuntu: install the equivalents of these Debian packages with your package manager" >&2
    fi
    exit 1
  fi
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "setup: Node.js and npm are needed (any version: l7proxy's own Node ${NODE_VERSION} is fetched with npm if the machine's is older than ${NODE_MIN_MAJOR})" >&2
  exit 1
fi
major=$(node -p 'process.versions.node.split(".")[0]')
if ((major < NODE_MIN_MAJOR)); then
  if ((check_only == 1)); then
    if [[ "$(.node/bin/node --version 2>/dev/null)" != "v${NODE_VERSION}" ]]; then
      echo "setup: Node.js $(node --version) is older than ${NODE_MIN_MAJOR}, and .node/ does not hold ${NODE_VERSION} (setup.sh installs it)" >&2
      exit 1
    fi
  else
    bash scripts/install-node.sh "$NODE_VERSION" .node
  fi
fi

if ((check_only == 1)); then
  echo "setup: system packages and Node.js are present"
  exit 0
fi

# npm ci wipes node_modules: only run it when the lock file changed since the last one.
lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
stamp=node_modules/.l7proxy-lock-sha256
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$lock_sum" ]]; then
  echo "setup: npm ci"
  scripts/with-node npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" >"$stamp"
fi

scripts/with-node npm run --silent build
echo "setup: ready"
