#!/usr/bin/env bash
# The 16 GiB scale row of docs/benchmarks.md, by hand and once: a durable copy of
# the model, build, push, pull into a new store, `curl -o` of every blob (one after
# another), extract, and a durable copy of the blobs; caches dropped before each
# step, each output deleted before the next so ~52 GB of free disk is enough.
# Root (drop_caches). Usage: integration/scale16.sh [BYTES] (default 16 GiB).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BENCH_BIN_DIR:-target/release}
B=$PWD/$BIN/docker-modelpack; S=$PWD/$BIN/modelpack-sample
SIZE=${1:-17179869184}
W=$(mktemp -d /tmp/scale16.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
H=127.0.0.1:$PORT; R=$H/scale/m:v1
RP=""
trap '[ -n "$RP" ] && kill $RP 2>/dev/null; rm -rf "$W"' EXIT
drop(){ sync; echo 3 > /proc/sys/vm/drop_caches; }
t(){ local name=$1; shift; drop; /usr/bin/time -f "| $name | %e | %M |" "$@" >/dev/null 2>>"$W/times"; tail -1 "$W/times"; }
"$S" "$W/model" --size "$SIZE" --shards 8 >/dev/null
echo "model: $(du -sb "$W/model" | cut -f1) bytes"
echo "| step | seconds | peak RSS (KiB) |"
echo "|---|---|---|"
t "cp -r model && sync" sh -c "cp -r '$W/model' '$W/cp' && sync"; rm -rf "$W/cp"
t "build → store" env MODELPACK_HOME="$W/st1" "$B" build -q -t "$R" "$W/model"
mkdir -p "$W/reg"
cat > "$W/reg/config.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $W/reg/data}, delete: {enabled: true}}
http: {addr: $H, secret: bench}
YML
docker-registry serve "$W/reg/config.yml" >/dev/null 2>&1 & RP=$!
for _ in $(seq 50); do curl -fs "http://$H/v2/" >/dev/null && break; sleep 0.1; done
t "push" env MODELPACK_HOME="$W/st1" "$B" push "$R"
rm -rf "$W/model"
t "pull → store" env MODELPACK_HOME="$W/st2" "$B" pull "$R"
rm -rf "$W/st2"
BLOBS=$(ls "$W/st1/blobs/sha256" | tr '\n' ' ')
mkdir -p "$W/curl"
t "curl -o (every blob)" sh -c "for b in $BLOBS; do curl -fsS http://$H/v2/scale/m/blobs/sha256:\$b -o '$W/curl/'\$b; done"
rm -rf "$W/curl"
kill $RP; wait $RP 2>/dev/null || true; RP=""; rm -rf "$W/reg"
t "extract from store" env MODELPACK_HOME="$W/st1" "$B" extract "$R" -o "$W/ex"
rm -rf "$W/ex"
t "cp -r blobs && sync" sh -c "cp -r '$W/st1/blobs' '$W/cpx' && sync"
