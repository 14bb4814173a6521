#!/usr/bin/env bash
# Makes sure Prometheus and promtool are unpacked under .local/prometheus and
# prints the directory holding the two binaries. Debian's `prometheus` package
# is downloaded and unpacked (dpkg -x), never installed: installing it would
# start a server on :9090. Idempotent; needs apt-get (run as root on a fresh
# Debian machine, or have the package already in the apt cache).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=$root/.local/prometheus
bindir=$dest/usr/bin

if [ -x "$bindir/promtool" ] && [ -x "$bindir/prometheus" ]; then
  echo "$bindir"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get download prometheus >/dev/null 2>&1; then
  echo "ensure-prometheus: refreshing the package lists" >&2
  apt-get update -qq >&2
  apt-get download prometheus >/dev/null
fi
mkdir -p "$dest"
dpkg -x prometheus_*.deb "$dest"
"$bindir/promtool" --version >/dev/null
echo "ensure-prometheus: unpacked $(basename prometheus_*.deb) into $dest" >&2
echo "$bindir"
