"""modelpack benchmark driver (run through integration/bench.sh).

Generates a synthetic Hugging Face-style model, starts a loopback docker-registry
with a temp store, runs every case alternating ours and the reference, repeats
each case, and prints a Markdown table of medians with the peak RSS of our
process. Page cache is dropped before cold runs when /proc/sys/vm/drop_caches is
writable; the output says so otherwise.
"""

import argparse
import re
import hashlib
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN_DIR = os.environ.get("BENCH_BIN_DIR", os.path.join(ROOT, "target/release"))
BIN = os.path.join(BIN_DIR, "docker-modelpack")
SAMPLE = os.path.join(BIN_DIR, "modelpack-sample")


def parse_size(s):
    s = s.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1], 1)
    return int(float(s[:-1] if s[-1] in "KMG" else s) * mult)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def can_drop_caches():
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def drop_caches():
    subprocess.run(["sync"], check=False)
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        pass


def run(cmd, env=None, stdin=None):
    """Runs a command; returns (seconds, peak RSS bytes of that process tree's largest process)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=stdin)
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark step failed: {' '.join(cmd)}\n{err}")
    return dt, ru.ru_maxrss * 1024


def sh(script, env=None):
    return run(["bash", "-c", script], env=env)


class Registry:
    def __init__(self, work, name="registry"):
        self.port = free_port()
        self.dir = os.path.join(work, name)
        os.makedirs(self.dir)
        cfg = os.path.join(self.dir, "config.yml")
        with open(cfg, "w") as f:
            f.write(
                "version: 0.1\nlog: {level: error, accesslog: {disabled: true}}\n"
                f"storage: {{filesystem: {{rootdirectory: {self.dir}/data}}, delete: {{enabled: true}}}}\n"
                f"http: {{addr: 127.0.0.1:{self.port}, secret: bench}}\n"
            )
        self.proc = subprocess.Popen(["docker-registry", "serve", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.host = f"127.0.0.1:{self.port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1)
                return
            except Exception:
                time.sleep(0.05)
        raise SystemExit("docker-registry did not start")

    def stop(self, remove=False):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)


BUSYBOX = r"""set -e
T=$1; REG=$2
R=$T/img/rootfs; O=$T/img/bb
mkdir -p $R/bin $R/etc $R/tmp $R/proc $R/sys $R/dev $R/root $R/models $O/blobs/sha256
cp /bin/busybox $R/bin/busybox
for a in sh echo cat head ls; do ln -sf busybox $R/bin/$a; done
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C $R -cf $T/img/layer.tar .
DIFF=sha256:$(sha256sum $T/img/layer.tar | cut -d' ' -f1)
gzip -n -c $T/img/layer.tar > $T/img/layer.tar.gz
put() { d=$(sha256sum "$1" | cut -d' ' -f1); cp "$1" $O/blobs/sha256/$d; echo "sha256:$d $(stat -c %s "$1")"; }
read LD LS < <(put $T/img/layer.tar.gz)
printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["%s"]}}' "$DIFF" > $T/img/config.json
read CD CS < <(put $T/img/config.json)
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%s}]}' "$CD" "$CS" "$LD" "$LS" > $T/img/manifest.json
read MD MS < <(put $T/img/manifest.json)
echo '{"imageLayoutVersion":"1.0.0"}' > $O/oci-layout
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' "$MD" "$MS" > $O/index.json
skopeo copy -q --dest-tls-verify=false oci:$O:latest docker://$REG/busybox:latest
"""


class Node:
    """modelpack-snapshotter + containerd 1.6 under a temp dir (fresh state per start)."""

    def __init__(self, work, n):
        self.t = os.path.join(work, f"node{n}")
        os.makedirs(self.t)
        self.sock = os.path.join(self.t, "containerd.sock")
        self.snap_sock = os.path.join(self.t, "snap.sock")
        self.snap = subprocess.Popen([os.path.join(BIN_DIR, "modelpack-snapshotter"), "--root", os.path.join(self.t, "snaproot"), "--address", self.snap_sock, "--log-level", "warn"], stderr=subprocess.DEVNULL)
        self._wait(self.snap_sock)
        cfg = os.path.join(self.t, "config.toml")
        with open(cfg, "w") as f:
            f.write(f"""version = 2
root = "{self.t}/root"
state = "{self.t}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{self.sock}"
[ttrpc]
  address = "{self.sock}.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[proxy_plugins.modelpack]
  type = "snapshot"
  address = "{self.snap_sock}"
""")
        self.ctrd = subprocess.Popen(["containerd", "--config", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait(self.sock)
        time.sleep(0.2)

    @staticmethod
    def _wait(path):
        for _ in range(300):
            if os.path.exists(path):
                return
            time.sleep(0.02)
        raise SystemExit(f"{path} did not appear")

    def ctr(self, *args):
        return ["ctr", "-a", self.sock, "-n", "bench"] + list(args)

    def stop(self):
        subprocess.run(["sh", "-c", f"awk '{{print $2}}' /proc/mounts | grep '^{self.t}' | sort -r | xargs -r -n1 umount -l"], check=False)
        for p in (self.ctrd, self.snap):
            p.terminate()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def machine():
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    disk = subprocess.run(["df", "-h", "--output=source,fstype,size", tempfile.gettempdir()], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cores ({cpu}), {mem / (1 << 30):.1f} GiB RAM, temp dir on {disk}, kernel {platform.release()}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="4G")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(ROOT, "docs/benchmarks.md"))
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    ap.add_argument("--only", metavar="REGEX", help="run only the rows whose name matches (a row that reads what an earlier row left needs that row too)")
    a = ap.parse_args()
    size = parse_size(a.size)
    shards = max(2, min(8, size // (512 << 20)))
    work = tempfile.mkdtemp(prefix="mpbench-")
    cold = can_drop_caches()
    reg = Registry(work)
    rows = []
    try:
        model = os.path.join(work, "model")
        subprocess.run([SAMPLE, model, "--size", str(size), "--shards", str(shards)], check=True)
        files = sorted(os.path.join(dp, f) for dp, _, fs in os.walk(model) for f in fs)
        total = sum(os.path.getsize(f) for f in files)
        mf = os.path.join(work, "Modelfile")
        subprocess.run([BIN, "modelfile", "generate", model, "--output", mf], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Fixed createdAt: a rebuild of unchanged files is then a true no-op (same digest).
        env = dict(os.environ, SOURCE_DATE_EPOCH="1700000000")

        def ours(args, store, extra_env=None):
            e = dict(env, MODELPACK_HOME=store)
            if extra_env:
                e.update(extra_env)
            return run([BIN, "-q"] + args, env=e)

        def case(name, ours_fn, ref_name=None, ref_fn=None, prepare=None, cold_run=True, nbytes=total, setup=False):
            if a.only and not re.search(a.only, name):
                if setup:
                    # Later rows read what this one leaves: run it once, untimed.
                    if prepare:
                        prepare(0)
                    ours_fn(0)
                return
            o, r, rss = [], [], []
            for i in range(a.runs):
                if prepare:
                    prepare(i)
                if cold_run and cold:
                    drop_caches()
                if ours_fn:
                    t, m = ours_fn(i)
                    o.append(t)
                    rss.append(m)
                if ref_fn:
                    if prepare:
                        prepare(i)
                    if cold_run and cold:
                        drop_caches()
                    r.append(ref_fn(i)[0])
            for pth in list(scratch):
                shutil.rmtree(pth, ignore_errors=True)
                scratch.discard(pth)
            om = statistics.median(o) if o else None
            rm = statistics.median(r) if r else None
            rows.append((name, om, (nbytes / om / 1e9) if om else None, ref_name or "", rm, (nbytes / rm / 1e9) if rm else None, (rm / om) if (rm and om) else None, max(rss) if rss else None))
            print(f"  {name}: ours {om if om is None else round(om, 2)}s" + (f", {ref_name} {rm:.2f}s" if rm else ""), file=sys.stderr)

        stores = os.path.join(work, "stores")

        scratch = set()

        def fresh(path, keep=False):
            """An empty path for this run; removed after the case unless kept (disk stays bounded)."""
            shutil.rmtree(path, ignore_errors=True)
            if not keep:
                scratch.add(path)
            return path

        print(f"model: {total / 1e9:.2f} GB in {len(files)} files; registry {reg.host}; page cache drop: {'yes' if cold else 'no'}", file=sys.stderr)

        # build to the local store vs cp of the same files
        case("build → local store",
             lambda i: ours(["build", "-t", f"{reg.host}/bench/m:v1", "-f", mf, model], fresh(f"{stores}/b{i}", keep=True)),
             "cp -r", lambda i: sh(f"cp -r {model} {fresh(work + '/cp')}"), setup=True)
        case("build → local store (vs durable copy)",
             lambda i: ours(["build", "-t", f"{reg.host}/bench/m:v1", "-f", mf, model], fresh(f"{stores}/d")),
             "cp -r + sync", lambda i: sh(f"cp -r {model} {fresh(work + '/cp')} && sync"))
        store = f"{stores}/b0"
        case("SHA-256 of the same files (physical limit)", None, "openssl dgst -sha256", lambda i: sh(f"openssl dgst -sha256 {' '.join(files)} > /dev/null"))
        case("no-op rebuild", lambda i: ours(["build", "-t", f"{reg.host}/bench/m:v1", "-f", mf, model], store), cold_run=False)

        # push vs curl -T of the same blobs (monolithic PUT) and skopeo copy
        man = json.loads(subprocess.run([BIN, "inspect", "--manifest", f"{reg.host}/bench/m:v1"], env=dict(env, MODELPACK_HOME=store), capture_output=True, check=True).stdout)
        digests = [man["config"]["digest"]] + [l["digest"] for l in man["layers"]]
        blobs = [os.path.join(store, "blobs/sha256", d.split(":", 1)[1]) for d in dict.fromkeys(digests)]

        def curl_put(i):
            script = "set -e\n"
            for b in blobs:
                digest = "sha256:" + os.path.basename(b)
                script += (
                    f"loc=$(curl -fsS -X POST -D - -o /dev/null http://{reg.host}/v2/curl{i}/blobs/uploads/ | tr -d '\\r' | awk -F': ' 'tolower($1)==\"location\"{{print $2}}')\n"
                    f"case $loc in http*) ;; *) loc=http://{reg.host}$loc;; esac\n"
                    f"curl -fsS -T {b} -H 'Expect:' -H 'Content-Type: application/octet-stream' \"$loc&digest={digest}\" -o /dev/null\n"
                )
            return sh(script)

        def skopeo_push(i):
            # A registry of its own per run: skopeo's blob-info cache would otherwise mount blobs it saw before.
            r2 = Registry(work, f"skopeo-reg{i}")
            try:
                return run(["skopeo", "copy", "--dest-tls-verify=false", f"oci:{store}:{reg.host}/bench/m:v1", f"docker://{r2.host}/bench/s:v1"])
            finally:
                r2.stop(remove=True)

        # Each push run uses the store built in run i (no mount history) and a fresh repository.
        def tag_for_push(prefix):
            def prep(i):
                # Forget which repositories hold our blobs, so nothing is mounted: a cold push.
                known = f"{stores}/b{i}/cache/remote-blobs.json"
                if os.path.exists(known):
                    os.remove(known)
                ours(["tag", f"{reg.host}/bench/m:v1", f"{reg.host}/bench/{prefix}{i}:v1"], f"{stores}/b{i}")
            return prep

        case("push", lambda i: ours(["push", f"{reg.host}/bench/p{i}:v1"], f"{stores}/b{i}"),
             "curl -T", curl_put, prepare=tag_for_push("p"))
        case("push (vs skopeo copy oci→registry)", lambda i: ours(["push", f"{reg.host}/bench/q{i}:v1"], f"{stores}/b{i}"),
             "skopeo copy", skopeo_push,
             prepare=tag_for_push("q"))
        ours(["push", f"{reg.host}/bench/m:v1"], store)
        case("no-op re-push", lambda i: ours(["push", f"{reg.host}/bench/m:v1"], store), cold_run=False)

        # pull vs curl -o of the same blobs, skopeo copy back, oras-py pull
        def curl_get(i):
            out = fresh(f"{work}/curl-get")
            os.makedirs(out)
            script = "set -e\n" + "".join(f"curl -fsS http://{reg.host}/v2/bench/m/blobs/sha256:{os.path.basename(b)} -o {out}/{os.path.basename(b)}\n" for b in blobs)
            return sh(script)

        case("pull → store", lambda i: ours(["pull", f"{reg.host}/bench/m:v1"], fresh(f"{stores}/p")), "curl -o", curl_get)
        case("pull + extract (--extract-from-remote)", lambda i: ours(["pull", f"{reg.host}/bench/m:v1", "--extract-dir", fresh(f"{work}/x"), "--extract-from-remote"], f"{stores}/none"),
             "skopeo copy registry→oci", lambda i: run(["skopeo", "copy", "--src-tls-verify=false", f"docker://{reg.host}/bench/m:v1", f"oci:{fresh(work + '/sk')}:m"]))
        if os.geteuid() == 0 and os.path.exists("/dev/fuse"):
            # Lazy mounts (FUSE, no containerd): the view is up before the weights move.
            lz = f"{work}/lazy-mnt"

            def lazy(script_tail, prefetch=False):
                def go(i):
                    st = fresh(f"{stores}/lz")
                    flags = "" if prefetch else "--no-prefetch"
                    script = (f"set -e; mkdir -p {lz}; MODELPACK_HOME={st} {BIN} -q mount --plain-http {flags} {reg.host}/bench/m:v1 {lz}; "
                              + script_tail.format(mnt=lz, store=st, bin=BIN, ref=f"{reg.host}/bench/m:v1")
                              + f"; {BIN} -q umount {lz}; while mountpoint -q {lz}; do sleep 0.05; done")
                    return sh(script, env=env)
                return go

            case("lazy mount + first byte of config.json", lazy("head -c1 {mnt}/config.json > /dev/null"),
                 "curl -o (blobs only)", curl_get)
            case("lazy mount + cold read of every file", lazy("find {mnt}/ -type f -exec cat {{}} + > /dev/null"),
                 "curl -o (blobs only)", curl_get)
            case("lazy mount + prefetch to complete", lazy("until MODELPACK_HOME={store} {bin} ls --names | grep -q 'bench/m:v1'; do sleep 0.1; done", prefetch=True),
                 "pull → store", lambda i: ours(["pull", f"{reg.host}/bench/m:v1"], fresh(f"{stores}/p")))
        else:
            print("  lazy mount rows skipped: need root and /dev/fuse", file=sys.stderr)
        oras_py = os.path.join(ROOT, "target/venv/bin/python")
        oras_pull = (f"import oras.client; c=oras.client.OrasClient(hostname='{reg.host}', insecure=True); "
                     f"c.pull(target='{reg.host}/bench/m:v1', outdir='{work}/oras-out')")
        case("pull + extract (vs oras-py pull)", lambda i: ours(["pull", f"{reg.host}/bench/m:v1", "--extract-dir", fresh(f"{work}/y"), "--extract-from-remote"], f"{stores}/none"),
             "oras-py pull", lambda i: (fresh(f"{work}/oras-out"), run([oras_py, "-c", oras_pull]))[1])
        case("extract from store", lambda i: ours(["extract", f"{reg.host}/bench/m:v1", "--output", fresh(f"{work}/e")], store),
             "cp -r", lambda i: sh(f"cp -r {model} {fresh(work + '/cp')}"))
        # Durable against durable: extract fsyncs every file before its rename.
        case("extract from store (vs durable copy)", lambda i: ours(["extract", f"{reg.host}/bench/m:v1", "--output", fresh(f"{work}/e")], store),
             "cp -r + sync", lambda i: sh(f"cp -r {model} {fresh(work + '/cp')} && sync"))
        case("build --output-remote", lambda i: ours(["build", "--output-remote", "-t", f"{reg.host}/bench/r{i}:v1", "-f", mf, model], fresh(f"{stores}/r")),
             "curl -T", lambda i: curl_put(100 + i))
        if os.geteuid() == 0 and shutil.which("containerd") and shutil.which("ctr"):
            subprocess.run(["bash", "-c", BUSYBOX, "bench", work, reg.host], check=True)
            image = f"{reg.host}/busybox:latest"
            nodes = []

            def new_node(i):
                if len(nodes) > 2 * i:
                    return  # the reference half of a run reuses this run's node
                n = Node(work, len(nodes))
                nodes.append(n)
                nodes.append(n)
                subprocess.run(n.ctr("image", "pull", "--plain-http", "--snapshotter", "modelpack", image), check=True, stdout=subprocess.DEVNULL)
                if cold:
                    drop_caches()

            def attach_of(name, mnt_name, node_of=lambda i: nodes[2 * i]):
                def attach(i):
                    n = node_of(i)
                    mnt = os.path.join(n.t, mnt_name)
                    ref = f"{reg.host}/bench/{name}:v1"
                    script = (f"set -e; {BIN} -q pull --containerd --address {n.sock} --namespace bench {ref}; "
                              f"{BIN} -q mount --containerd --address {n.sock} --namespace bench {ref} {mnt}; "
                              + shlex.join(n.ctr("run", "--rm", "--snapshotter", "modelpack", "--mount", f"type=bind,src={mnt},dst=/models,options=rbind:ro", image, f"{mnt_name}{i}", "/bin/sh", "-c", "head -c1 /models/config.json"))
                              + " > /dev/null")
                    return sh(script, env=dict(env, MODELPACK_HOME=store))
                return attach

            # Eager: a model without a chunk index is fetched whole at Prepare
            # (every layer's download started by the first Prepare, so the
            # chain's one-by-one Prepares overlap).
            ours(["build", "--no-chunk-index", "-t", f"{reg.host}/bench/eager:v1", "-f", mf, model], store)
            ours(["push", f"{reg.host}/bench/eager:v1"], store)
            eager_nodes = []

            def new_eager_node(i):
                n = Node(work, 100 + len(eager_nodes))
                eager_nodes.append(n)
                subprocess.run(n.ctr("image", "pull", "--plain-http", "--snapshotter", "modelpack", image), check=True, stdout=subprocess.DEVNULL)
                if cold:
                    drop_caches()

            case("eager pull --containerd (no chunk index) + mount + first byte", attach_of("eager", "mnt-eager", lambda i: eager_nodes[-1]), "curl -o (blobs only)", curl_get, prepare=new_eager_node, cold_run=False)
            for n in eager_nodes:
                n.stop()
            case("pull --containerd + mount + first byte in a container", attach_of("m", "mnt"), "curl -o (blobs only)", curl_get, prepare=new_node, cold_run=False)
            if nodes:
                mnt = os.path.join(nodes[-1].t, "mnt")
                case("read every file through the mount", lambda i: sh(f"find {mnt}/ -type f -exec cat {{}} + > /dev/null"),
                     "read the source files", lambda i: sh(f"find {model}/ -type f -exec cat {{}} + > /dev/null"))
            for n in nodes[::2]:
                n.stop()
        else:
            print("  containerd rows skipped: need root, containerd and ctr", file=sys.stderr)

        # Many small files (tokenizers, many shards): the per-file overhead.
        many = os.path.join(work, "many")
        os.makedirs(many)
        n_many = 1000
        for k in range(n_many):
            with open(os.path.join(many, f"shard-{k:04}.json"), "wb") as fh:
                fh.write(os.urandom(4096))
        mmf = os.path.join(work, "Modelfile.many")
        subprocess.run([BIN, "modelfile", "generate", many, "--output", mmf], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        many_bytes = n_many * 4096
        many_ref = f"{reg.host}/bench/many:v1"
        case(f"{n_many}-file model: build → store (vs durable copy)",
             lambda i: ours(["build", "-t", many_ref, "-f", mmf, many], fresh(f"{stores}/many{i}", keep=True)),
             "cp -r + sync", lambda i: sh(f"cp -r {many} {fresh(work + '/cpm')} && sync"), nbytes=many_bytes, setup=True)
        mstore = f"{stores}/many0"
        if os.path.isdir(mstore):
            case(f"{n_many}-file model: push",
                 lambda i: ours(["push", many_ref, f"{reg.host}/bench/many{i}:v1"], mstore), nbytes=many_bytes, setup=True)
            case(f"{n_many}-file model: pull → store",
                 lambda i: ours(["pull", f"{reg.host}/bench/many0:v1"], fresh(f"{stores}/mp")), nbytes=many_bytes)
            case(f"{n_many}-file model: extract (vs durable copy)",
                 lambda i: ours(["extract", many_ref, "--output", fresh(f"{work}/me")], mstore),
                 "cp -r + sync", lambda i: sh(f"cp -r {many} {fresh(work + '/cpm')} && sync"), nbytes=many_bytes)
    finally:
        reg.stop()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)

    lines = [
        f"Model: {a.size} synthetic Hugging Face-style model ({total / 1e9:.2f} GB, {len(files)} files, {shards} safetensors shards); medians of {a.runs} run(s).",
        f"Machine: {machine()}.",
        f"Page cache {'dropped before each cold run' if cold else 'NOT dropped (no permission to write /proc/sys/vm/drop_caches): cold figures are warm-cache figures'}.",
        "",
        "| case | ours (s) | ours (GB/s) | reference | ref (s) | ref (GB/s) | ref time / ours | peak RSS (ours) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, om, og, rn, rm, rg, ratio, rss in rows:
        f2 = lambda v: "-" if v is None else f"{v:.2f}"
        lines.append(f"| {name} | {f2(om)} | {f2(og)} | {rn or '-'} | {f2(rm)} | {f2(rg)} | {f2(ratio)} | {'-' if rss is None else f'{rss / (1 << 20):.0f} MiB'} |")
    table = "\n".join(lines)
    print(table)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        f.write("# Benchmarks\n\nGenerated by `integration/bench.sh`" + f" (--size {a.size} --runs {a.runs}).\n\n" + table + "\n")


if __name__ == "__main__":
    main()
