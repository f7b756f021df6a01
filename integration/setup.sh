#!/usr/bin/env bash
# Installs what modelpack's tests, demo and benchmark use on a fresh Debian 12 machine:
# the real components (docker-registry, skopeo, containerd, runc, busybox-static,
# protoc and the protobuf well-known types (the vendored CSI spec imports them), faketime, Go + containerd's Go sources, …) and a Python venv with oras-py under target/venv.
# Idempotent; safe to run again. Never starts a system service (we run our own on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(docker-registry apache2-utils skopeo containerd runc busybox-static jq protobuf-compiler libprotobuf-dev faketime python3-venv curl openssl time)
# A loop-mounted XFS (reflink=1) for the --reflink tests (root only).
PKGS+=(xfsprogs)
# containerd's own snapshotter conformance suite (snapshots/testsuite), built offline in
# GOPATH mode from Debian's sources in /usr/share/gocode (tests/e2e/snapshotter_conformance.rs).
PKGS+=(golang-go golang-github-containerd-containerd-dev)
# The docker CLI (for the plugin tests); Debian's docker.io provides one where none is installed.
command -v docker >/dev/null || PKGS+=(docker.io)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

VENV=target/venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import oras, cryptography' 2>/dev/null; then
  echo "setup: creating $VENV with oras-py and cryptography" >&2
  mkdir -p target
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'oras==0.2.43' cryptography
fi
# OpenSSF Model Signing's reference CLI, for the signing interop tests (it
# needs pyopenssl beside it; its package does not declare it).
if ! "$VENV/bin/python" -c 'import model_signing, OpenSSL' 2>/dev/null; then
  echo "setup: installing model-signing into $VENV" >&2
  "$VENV/bin/pip" install -q 'model-signing==1.1.1' pyopenssl
fi
