#!/usr/bin/env bash
# Installs what l7proxy needs, then its npm dependencies, then builds it.
#   bash scripts/setup.sh            system packages (as root on Debian/Ubuntu) + npm ci + build
#   bash scripts/setup.sh --check    only report what is missing; exit 1 if anything is
# Idempotent and quick when everything is there: apt runs only for missing packages and
# `npm ci` only when package-lock.json changed since the last install.
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
)
NODE_MIN_MAJOR=20
NODE_MIN_MINOR=18

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

if ! command -v node >/dev/null; then
  echo "setup: Node.js >= ${NODE_MIN_MAJOR}.${NODE_MIN_MINOR} is required (https://nodejs.org or your distribution's nodejs)" >&2
  exit 1
fi
read -r major minor < <(node -p 'process.versions.node.split(".").slice(0, 2).join(" ")')
if ((major < NODE_MIN_MAJOR || (major == NODE_MIN_MAJOR && minor < NODE_MIN_MINOR))); then
  echo "setup: Node.js $(node --version) is too old: l7proxy needs >= ${NODE_MIN_MAJOR}.${NODE_MIN_MINOR}" >&2
  exit 1
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
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_sum" >"$stamp"
fi

npm run --silent build
echo "setup: ready"
