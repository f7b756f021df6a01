#!/usr/bin/env bash
# Installs modelpack-snapshotter on a containerd node: binary, config, systemd unit.
# It does not edit containerd's config: it prints the snippet for your containerd version.
#   sudo packaging/snapshotter/install.sh [--no-build] [--prefix /usr/local]
set -euo pipefail
cd "$(dirname "$0")/../.."
PREFIX=/usr/local
BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=$2; shift ;;
    --no-build) BUILD=0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || { echo "run as root (installs a system service)" >&2; exit 1; }
[ "$BUILD" = 1 ] && cargo build --release -p modelpack-snapshotter -p modelpack-cli
install -m 0755 target/release/modelpack-snapshotter "$PREFIX/bin/modelpack-snapshotter"
install -d /etc/modelpack-snapshotter
[ -f /etc/modelpack-snapshotter/config.toml ] || install -m 0644 packaging/snapshotter/config.toml /etc/modelpack-snapshotter/config.toml
if [ -d /etc/systemd/system ]; then
  sed "s#/usr/local/bin#$PREFIX/bin#" packaging/snapshotter/modelpack-snapshotter.service > /etc/systemd/system/modelpack-snapshotter.service
  command -v systemctl >/dev/null && systemctl daemon-reload && systemctl enable --now modelpack-snapshotter.service || true
fi
ver=$(containerd --version 2>/dev/null | awk '{print $3}' || true)
case "$ver" in
  v2*|2*) snippet=packaging/snapshotter/containerd-2.x.toml ;;
  *) snippet=packaging/snapshotter/containerd-1.6-1.7.toml ;;
esac
echo "installed $PREFIX/bin/modelpack-snapshotter; add this to /etc/containerd/config.toml and restart containerd:"
sed -n '/^\[proxy_plugins/,/^$/p' "$snippet"
