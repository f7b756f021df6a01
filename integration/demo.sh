#!/usr/bin/env bash
# The main job end to end on the embedded default (a temporary local store, and a
# loopback docker-registry this script starts when available): generate a small
# Hugging Face-style model with real safetensors headers, generate its Modelfile,
# build, inspect, validate, extract, and compare every file byte for byte.
#   SIZE=256M integration/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${SIZE:-64M}

integration/setup.sh
cargo build -q -p modelpack-cli -p modelpack-e2e --bins
BIN=$PWD/target/debug/docker-modelpack
SAMPLE=$PWD/target/debug/modelpack-sample
T=$(mktemp -d)
REG_PID=""
cleanup() {
  [ -n "$REG_PID" ] && kill "$REG_PID" 2>/dev/null || true
  rm -rf "$T"
}
trap cleanup EXIT
export MODELPACK_HOME=$T/store
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "generate a $SIZE Hugging Face-style model in $T/model"
"$SAMPLE" "$T/model" --size "$SIZE"
ls -l "$T/model"

step "modelfile generate (FORMAT/PARAMSIZE/PRECISION inferred from safetensors headers)"
"$BIN" modelfile generate "$T/model" --output "$T/Modelfile"
cat "$T/Modelfile"

REF=localhost/demo/model:v1
step "build -t $REF"
"$BIN" build -t "$REF" -f "$T/Modelfile" "$T/model"

step "inspect"
"$BIN" inspect "$REF"

step "validate"
"$BIN" validate "$REF"

step "extract and compare"
"$BIN" extract "$REF" --output "$T/out"
diff -r "$T/model" "$T/out"
echo "every file identical"

step "rebuild of the unchanged model (digest cache: no weight bytes read)"
"$BIN" build -t "$REF" -f "$T/Modelfile" "$T/model" --json | jq -c '{digest, bytesRead, layersCached, seconds}'

if command -v skopeo >/dev/null; then
  step "skopeo reads the store (OCI image layout)"
  skopeo inspect --raw "oci:$MODELPACK_HOME:$REF" | jq -c '{artifactType, layers: (.layers | length)}'
fi

if command -v docker-registry >/dev/null && "$BIN" push --help >/dev/null 2>&1; then
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  mkdir -p "$T/reg"
  cat > "$T/reg/config.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $T/reg/data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$PORT, secret: demo}
YML
  docker-registry serve "$T/reg/config.yml" > "$T/reg/log" 2>&1 &
  REG_PID=$!
  for _ in $(seq 50); do curl -fsS "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
  RREF=127.0.0.1:$PORT/demo/model:v1
  step "push to a loopback registry, remove locally, pull back and extract"
  "$BIN" tag "$REF" "$RREF"
  "$BIN" push "$RREF"
  "$BIN" rm "$REF" "$RREF" && "$BIN" prune -q
  "$BIN" pull "$RREF" --extract-dir "$T/pulled"
  diff -r "$T/model" "$T/pulled"
  echo "pulled files identical"
fi

step "done"
