#!/usr/bin/env bash
# Builds docker-modelpack and installs it as a Docker CLI plugin
# (~/.docker/cli-plugins or $DOCKER_CONFIG/cli-plugins) and as `modelpack` in
# ~/.local/bin. Adds the `docker model` alias only when no other docker-model
# plugin exists anywhere on the docker CLI's plugin search path, so Docker
# Model Runner is never shadowed.
#   packaging/install.sh [--prefix DIR] [--no-build] [--no-alias]
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX="$HOME/.local"
BUILD=1
ALIAS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) PREFIX=$2; shift ;;
    --no-build) BUILD=0 ;;
    --no-alias) ALIAS=0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
CONFIG_DIR=${DOCKER_CONFIG:-$HOME/.docker}
PLUGIN_DIR=$CONFIG_DIR/cli-plugins
if [ "$BUILD" = 1 ]; then
  cargo build --release -p modelpack-cli
fi
BIN=target/release/docker-modelpack
[ -x "$BIN" ] || BIN=target/debug/docker-modelpack
[ -x "$BIN" ] || { echo "no docker-modelpack binary; run without --no-build" >&2; exit 1; }

mkdir -p "$PLUGIN_DIR" "$PREFIX/bin"
install -m 0755 "$BIN" "$PLUGIN_DIR/docker-modelpack"
ln -sf "$PLUGIN_DIR/docker-modelpack" "$PREFIX/bin/modelpack"
echo "installed $PLUGIN_DIR/docker-modelpack (docker modelpack …) and $PREFIX/bin/modelpack"

# The docker CLI's plugin search path, in its order (cli-plugins/manager/manager.go).
search_dirs() {
  if [ -f "$CONFIG_DIR/config.json" ] && command -v jq >/dev/null; then
    jq -r '.cliPluginsExtraDirs[]? // empty' "$CONFIG_DIR/config.json" 2>/dev/null || true
  fi
  echo "$PLUGIN_DIR"
  echo /usr/local/lib/docker/cli-plugins
  echo /usr/local/libexec/docker/cli-plugins
  echo /usr/lib/docker/cli-plugins
  echo /usr/libexec/docker/cli-plugins
}

if [ "$ALIAS" = 1 ]; then
  existing=""
  while read -r d; do
    if [ -e "$d/docker-model" ] && [ "$(readlink -f "$d/docker-model")" != "$(readlink -f "$PLUGIN_DIR/docker-modelpack")" ]; then
      existing="$d/docker-model"
      break
    fi
  done < <(search_dirs)
  if [ -n "$existing" ]; then
    echo "not adding the 'docker model' alias: $existing exists (Docker Model Runner); use 'docker modelpack'"
  else
    ln -sf docker-modelpack "$PLUGIN_DIR/docker-model"
    echo "added alias $PLUGIN_DIR/docker-model -> docker-modelpack"
  fi
fi
