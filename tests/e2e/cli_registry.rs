//! End-to-end registry tests through the real binary against real
//! docker-registry 2.8 (plain, htpasswd, token auth), skopeo and oras-py,
//! with credentials from config.json, a credential helper and auth.json, and
//! faults injected by a TCP proxy.

use std::path::{Path, PathBuf};
use std::process::Command;

use modelpack_e2e::services::{Auth, Fault, FaultProxy, Registry, TokenRegistry};
use modelpack_e2e::{assert_same_tree, fails, ok, require_tool};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_docker-modelpack");

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn mp_store(&self, store: &str) -> Command {
        let mut c = Command::new(BIN);
        c.env("MODELPACK_HOME", self.path(store))
            .env("DOCKER_CONFIG", self.path("docker"))
            .env("HOME", self.path("home"))
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("DOCKER_AUTH_CONFIG")
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    Path::new(env!("CARGO_MANIFEST_DIR"))
                        .join("../tests/support")
                        .display(),
                    std::env::var("PATH").unwrap()
                ),
            );
        c
    }
    fn mp(&self) -> Command {
        self.mp_store("store")
    }
    /// Another program with this environment (the store, docker config, PATH).
    fn mp_cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        for (k, v) in self.mp_store("store").get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        c
    }
    fn run(&self, args: &[&str]) -> String {
        ok(self.mp().args(args).output().unwrap(), &args.join(" "))
    }
    fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.run(&a)).unwrap()
    }
    fn model(&self) -> PathBuf {
        let dir = self.path("model");
        if !dir.exists() {
            modelpack_common::modelfile::write_sample_model(&dir, 3, 3 << 20).unwrap();
        }
        dir
    }
    fn build(&self, reference: &str) -> String {
        self.run(&[
            "build",
            "-q",
            "-t",
            reference,
            self.model().to_str().unwrap(),
        ])
        .trim()
        .to_string()
    }
    fn docker_config(&self, json: &str) {
        std::fs::create_dir_all(self.path("docker")).unwrap();
        std::fs::write(self.path("docker/config.json"), json).unwrap();
    }
}

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn round_trip_rm_pull_extract_and_no_op_repush() {
    let env = Env::new();
    let reg = Registry::start(&env.path("reg"), Auth::None);
    let r = format!("{}/models/tiny:v1", reg.host);
    let digest = env.build(&r);
    let first = env.json(&["push", &r]);
    assert_eq!(first["digest"], digest.as_str());
    assert!(first["bytesSent"].as_u64().unwrap() > 9 << 20, "{first}");
    let again = env.json(&["push", &r]);
    assert_eq!(
        again["bytesSent"], 0,
        "re-push of an unchanged model sends no blob bytes: {again}"
    );
    // What an interrupted earlier pull would have left: the first MiB of
    // the largest layer as a partial download, which the next pull resumes.
    let inspected = env.json(&["inspect", &r]);
    let largest = inspected["layers"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|l| l["size"].as_u64().unwrap())
        .unwrap()
        .clone();
    let hex = largest["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let blob = std::fs::read(env.path("store/blobs/sha256").join(hex)).unwrap();
    env.run(&["rm", &r]);
    env.run(&["prune"]);
    std::fs::create_dir_all(env.path("store/tmp")).unwrap();
    std::fs::write(
        env.path("store/tmp").join(format!("{hex}.partial")),
        &blob[..1 << 20],
    )
    .unwrap();
    let pulled = env.json(&[
        "pull",
        &r,
        "--extract-dir",
        env.path("out").to_str().unwrap(),
    ]);
    assert_eq!(pulled["digest"], digest.as_str());
    assert_same_tree(&env.model(), &env.path("out"));
    // Per-blob actions, like push's: the config and every layer came, one resumed.
    let blobs = pulled["blobs"].as_array().unwrap();
    assert_eq!(
        blobs.len(),
        pulled["blobsDownloaded"].as_u64().unwrap() as usize
    );
    assert!(
        blobs.iter().all(|b| b["action"] == "downloaded"),
        "{pulled}"
    );
    let resumed: Vec<_> = blobs.iter().filter(|b| b["resumedAt"].is_u64()).collect();
    assert_eq!(resumed.len(), 1, "{pulled}");
    assert_eq!(resumed[0]["digest"], largest["digest"]);
    assert_eq!(resumed[0]["resumedAt"], 1 << 20);
    assert_eq!(
        resumed[0]["bytesReceived"].as_u64().unwrap(),
        blob.len() as u64 - (1 << 20)
    );
    let total: u64 = blobs.iter().map(|b| b["size"].as_u64().unwrap()).sum();
    assert_eq!(pulled["bytesReceived"].as_u64().unwrap(), total - (1 << 20));
    // Pull by digest works too and needs no download.
    let by_digest = env.json(&["pull", &format!("{}/models/tiny@{digest}", reg.host)]);
    assert_eq!(by_digest["blobsDownloaded"], 0, "{by_digest}");
    assert!(
        by_digest["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["action"] == "exists" && b["bytesReceived"] == 0),
        "{by_digest}"
    );
    // Cross-repo mount: a second repository of the same registry gets the blobs without upload.
    env.run(&["tag", &r, &format!("{}/other/tiny:v1", reg.host)]);
    let mounted = env.json(&["push", &format!("{}/other/tiny:v1", reg.host)]);
    assert_eq!(mounted["bytesSent"], 0, "{mounted}");
    assert!(
        mounted["blobs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["action"] == "mounted"),
        "{mounted}"
    );
}

#[test]
fn extract_from_remote_fetch_output_remote_and_upload() {
    let env = Env::new();
    let reg = Registry::start(&env.path("reg"), Auth::None);
    let r = format!("{}/models/direct:v1", reg.host);
    let model = env.model();
    let pushed = env.json(&[
        "build",
        "--output-remote",
        "-t",
        &r,
        model.to_str().unwrap(),
    ]);
    assert!(
        !env.path("store/blobs/sha256").exists()
            || std::fs::read_dir(env.path("store/blobs/sha256"))
                .unwrap()
                .count()
                == 0,
        "--output-remote stored blobs locally"
    );
    assert_eq!(
        pushed["referrers"].as_array().unwrap().len(),
        1,
        "the chunk index referrer is published: {pushed}"
    );
    let out = env.path("direct");
    let pulled = env.json(&[
        "pull",
        &r,
        "--extract-dir",
        out.to_str().unwrap(),
        "--extract-from-remote",
    ]);
    assert_eq!(pulled["digest"], pushed["digest"]);
    assert_same_tree(&model, &out);
    assert!(!out.join(".modelpack-partial").exists());
    let fetched = env.json(&[
        "fetch",
        &r,
        "--output",
        env.path("f").to_str().unwrap(),
        "--patterns",
        "*.json",
        "--patterns",
        "**/*.json,config.json",
    ]);
    let files = modelpack_e2e::files_under(&env.path("f"));
    assert!(
        files.iter().all(|f| f.extension().unwrap() == "json") && files.len() == 5,
        "{files:?}"
    );
    assert_eq!(
        fetched["blobsDownloaded"], 5,
        "each matching file once: {fetched}"
    );
    // upload pre-pushes a blob; a later build --output-remote does not send it again.
    let extra = env.path("model/extra-weights.safetensors");
    std::fs::write(&extra, vec![9u8; 2 << 20]).unwrap();
    let up = env.json(&[
        "upload",
        extra.to_str().unwrap(),
        "--repo",
        &format!("{}/models/direct2", reg.host),
    ]);
    assert_eq!(up["action"], "uploaded");
    let built = env.json(&[
        "build",
        "--output-remote",
        "-t",
        &format!("{}/models/direct2:v1", reg.host),
        model.to_str().unwrap(),
    ]);
    let blob = built["blobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "extra-weights.safetensors")
        .unwrap()
        .clone();
    assert_eq!(blob["bytesSent"], 0, "{built}");
}

#[test]
fn htpasswd_registry_with_config_json_login_logout_and_wrong_password() {
    let env = Env::new();
    let reg = Registry::start(
        &env.path("reg"),
        Auth::Htpasswd {
            user: "alice".into(),
            password: "secret".into(),
        },
    );
    let r = format!("{}/models/private:v1", reg.host);
    env.build(&r);
    let err = fails(
        env.mp().args(["push", &r]).output().unwrap(),
        "push without credentials",
    );
    assert!(
        err.contains(&format!("authentication required for {}", reg.host))
            && err.contains(&format!("docker login {}", reg.host)),
        "{err}"
    );
    env.docker_config(&format!(
        r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
        reg.host,
        b64("alice:wrong-password")
    ));
    let err = fails(
        env.mp().args(["push", &r]).output().unwrap(),
        "push with a wrong password",
    );
    assert!(
        err.contains("rejected") && !err.contains("wrong-password"),
        "{err}"
    );
    // login checks the password first, then writes config.json (0600).
    let bad = env
        .mp()
        .args(["login", &reg.host, "-u", "alice", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = feed(bad, "nope\n");
    assert!(!out.status.success());
    let good = env
        .mp()
        .args(["login", &reg.host, "-u", "alice", "--password-stdin"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = feed(good, "secret\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(env.path("docker/config.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    env.run(&["push", &r]);
    env.run(&[
        "pull",
        &r,
        "--extract-dir",
        env.path("out").to_str().unwrap(),
        "--extract-from-remote",
    ]);
    assert_same_tree(&env.model(), &env.path("out"));
    env.run(&["logout", &reg.host]);
    fails(
        env.mp().args(["inspect", "--remote", &r]).output().unwrap(),
        "inspect after logout",
    );
}

fn feed(mut child: std::process::Child, input: &str) -> std::process::Output {
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn a_registry_that_is_not_running_fails_fast_with_a_hint_and_no_colour() {
    let env = Env::new();
    let port = modelpack_e2e::free_port();
    let started = std::time::Instant::now();
    let out = env
        .mp()
        .args(["pull", &format!("127.0.0.1:{port}/m/x:v1")])
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let took = started.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!(
            "cannot connect to 127.0.0.1:{port} (connection refused) — is the registry running?"
        )),
        "{err}"
    );
    assert!(!err.contains("retrying") && !err.contains('\x1b'), "{err}");
    assert!(took < std::time::Duration::from_secs(3), "took {took:?}");
}

#[test]
fn login_prompts_like_docker_and_never_echoes_the_password() {
    let env = Env::new();
    let reg = Registry::start(
        &env.path("reg"),
        Auth::Htpasswd {
            user: "alice".into(),
            password: "s3cret-pw".into(),
        },
    );
    // A real terminal: python's pty, typing as a person would.
    let script = r#"
import os, pty, sys, time
argv = sys.argv[1:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(argv[0], argv)
out = b""
def until(token, limit=20):
    global out
    end = time.time() + limit
    while token not in out and time.time() < end:
        try:
            out += os.read(fd, 1024)
        except OSError:
            break
until(b"Username:")
os.write(fd, b"alice\n")
until(b"Password:")
time.sleep(0.2)
os.write(fd, PASSWORD + b"\n")
while True:
    try:
        chunk = os.read(fd, 1024)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
_, status = os.waitpid(pid, 0)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let run = |password: &str| {
        let s = script.replace("PASSWORD", &format!("b{password:?}"));
        env.mp_cmd(&modelpack_e2e::python())
            .args(["-c", &s, BIN, "login", &reg.host])
            .output()
            .unwrap()
    };
    let good = run("s3cret-pw");
    let text = String::from_utf8_lossy(&good.stdout);
    assert!(
        good.status.success() && text.contains("Login Succeeded"),
        "{text}\n{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(
        !text.contains("s3cret-pw"),
        "the password was echoed: {text}"
    );
    let bad = run("not-it");
    let text = String::from_utf8_lossy(&bad.stdout);
    assert!(!bad.status.success(), "{text}");
    assert!(
        text.contains(&format!("wrong username or password for {}", reg.host)),
        "{text}"
    );
    // -p works and warns, as docker does.
    let out = env
        .mp()
        .args(["login", &reg.host, "-u", "alice", "-p", "s3cret-pw"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("Using --password via the CLI is insecure"),
        "{err}"
    );
}

#[test]
fn token_registry_with_credential_helper_auth_json_and_identity_token() {
    require_tool("jq");
    let env = Env::new();
    let tr = TokenRegistry::start(
        &env.path("regt"),
        "alice:secret",
        &["--refresh", "rt-alice:alice"],
    );
    let host = tr.registry.host.clone();
    let r = format!("{host}/models/tok:v1");
    env.build(&r);
    // 1. credential helper (credsStore), speaking the real protocol.
    let helper_store = env.path("helper.json");
    std::fs::write(
        &helper_store,
        format!(r#"{{"{host}":{{"Username":"alice","Secret":"secret"}}}}"#),
    )
    .unwrap();
    env.docker_config(r#"{"credsStore":"mptest"}"#);
    let push = env
        .mp()
        .env("MPTEST_HELPER_STORE", &helper_store)
        .args(["push", &r])
        .output()
        .unwrap();
    ok(push, "push with helper");
    let stats = tr.stats();
    assert!(
        stats["get"].as_u64().unwrap() <= 6,
        "token requests are cached per scope set: {stats}"
    );
    // 2. podman auth.json via REGISTRY_AUTH_FILE (namespace key).
    env.docker_config("{}");
    let authjson = env.path("auth.json");
    std::fs::write(
        &authjson,
        format!(
            r#"{{"auths":{{"{host}/models":{{"auth":"{}"}}}}}}"#,
            b64("alice:secret")
        ),
    )
    .unwrap();
    let pulled = env
        .mp_store("store2")
        .env("REGISTRY_AUTH_FILE", &authjson)
        .args(["pull", &r])
        .output()
        .unwrap();
    ok(pulled, "pull with auth.json");
    // 3. identity token in config.json → OAuth2 refresh-token POST.
    env.docker_config(&format!(
        r#"{{"auths":{{"{host}":{{"identitytoken":"rt-alice"}}}}}}"#
    ));
    let before = tr.stats()["post"].as_u64().unwrap();
    ok(
        env.mp_store("store3").args(["pull", &r]).output().unwrap(),
        "pull with identity token",
    );
    assert!(
        tr.stats()["post"].as_u64().unwrap() > before,
        "refresh token flow used POST"
    );
    // 4. wrong credentials: clear error, bounded requests, no secret in output.
    std::fs::write(
        &helper_store,
        format!(r#"{{"{host}":{{"Username":"alice","Secret":"hunter2"}}}}"#),
    )
    .unwrap();
    env.docker_config(r#"{"credsStore":"mptest"}"#);
    let before = tr.stats();
    let err = fails(
        env.mp_store("store4")
            .env("MPTEST_HELPER_STORE", &helper_store)
            .args(["pull", &r])
            .output()
            .unwrap(),
        "wrong password",
    );
    let after = tr.stats();
    assert!(
        err.contains("authentication required") && !err.contains("hunter2"),
        "{err}"
    );
    assert!(
        after["denied"].as_u64().unwrap() - before["denied"].as_u64().unwrap() <= 2,
        "no retry storm: {before} → {after}"
    );
}

#[test]
fn interop_with_skopeo_and_oras_py() {
    require_tool("skopeo");
    let env = Env::new();
    let reg = Registry::start(&env.path("reg"), Auth::None);
    let r = format!("{}/models/interop:v1", reg.host);
    let digest = env.build(&r);
    env.run(&["push", &r]);
    let raw = ok(
        Command::new("skopeo")
            .args([
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{r}"),
            ])
            .output()
            .unwrap(),
        "skopeo inspect",
    );
    let ours = env.run(&["inspect", "--manifest", &r]);
    assert_eq!(raw.trim(), ours.trim());
    // skopeo copies registry → oci dir → another repository; we pull what skopeo wrote.
    let oci = env.path("oci");
    ok(
        Command::new("skopeo")
            .args([
                "copy",
                "--src-tls-verify=false",
                &format!("docker://{r}"),
                &format!("oci:{}:x", oci.display()),
            ])
            .output()
            .unwrap(),
        "skopeo copy down",
    );
    let r2 = format!("{}/models/viaskopeo:v1", reg.host);
    ok(
        Command::new("skopeo")
            .args([
                "copy",
                "--dest-tls-verify=false",
                &format!("oci:{}:x", oci.display()),
                &format!("docker://{r2}"),
            ])
            .output()
            .unwrap(),
        "skopeo copy up",
    );
    let pulled = env.json(&[
        "pull",
        &r2,
        "--extract-dir",
        env.path("viaskopeo").to_str().unwrap(),
    ]);
    assert_eq!(
        pulled["digest"],
        digest.as_str(),
        "skopeo preserves the manifest digest"
    );
    assert_same_tree(&env.model(), &env.path("viaskopeo"));

    let python = modelpack_e2e::python();
    let has_oras = Command::new(&python)
        .args(["-c", "import oras"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        has_oras,
        "oras-py is required: run integration/setup.sh (MODELPACK_TEST_PYTHON={python})"
    );
    // oras-py pulls our artifact and writes every file under its path (titles).
    let out = env.path("oras-out");
    let script = format!(
        "import oras.client; c=oras.client.OrasClient(hostname='{h}', insecure=True); c.pull(target='{r}', outdir='{o}')",
        h = reg.host,
        o = out.display()
    );
    ok(
        Command::new(&python)
            .args(["-c", &script])
            .output()
            .unwrap(),
        "oras-py pull",
    );
    assert_same_tree(&env.model(), &out);
    // We pull an oras-py-pushed artifact (file layers with titles).
    let src = env.path("oras-src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("weights.gguf"), b"gguf weights from oras").unwrap();
    std::fs::write(
        src.join("config.json"),
        br#"{"descriptor":{},"config":{"format":"gguf"},"modelfs":{"type":"layers","diffIds":[]}}"#,
    )
    .unwrap();
    let r3 = format!("{}/models/fromoras:v1", reg.host);
    let script = format!(
        "import os; os.chdir('{d}'); import oras.client; c=oras.client.OrasClient(hostname='{h}', insecure=True); c.push(target='{r3}', files=['weights.gguf:application/vnd.cncf.model.weight.v1.raw'], manifest_config='config.json:application/vnd.cncf.model.config.v1+json')",
        d = src.display(),
        h = reg.host
    );
    ok(
        Command::new(&python)
            .args(["-c", &script])
            .output()
            .unwrap(),
        "oras-py push",
    );
    env.run(&[
        "pull",
        &r3,
        "--extract-dir",
        env.path("fromoras").to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(env.path("fromoras/weights.gguf")).unwrap(),
        b"gguf weights from oras"
    );
}

#[test]
fn dropped_connections_resume_and_corrupt_blobs_are_refused() {
    let env = Env::new();
    let reg = Registry::start(&env.path("reg"), Auth::None);
    let big = env.path("big");
    std::fs::create_dir_all(&big).unwrap();
    let data: Vec<u8> = (0..(12u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(big.join("weights.safetensors"), &data).unwrap();
    // Upload in 1 MiB chunks through a proxy that drops the connection once, at the 6th chunk.
    let up = FaultProxy::start(reg.port, Fault::DropPatch(5));
    let via = format!("127.0.0.1:{}/models/resume:v1", up.port);
    env.run(&["build", "-q", "-t", &via, big.to_str().unwrap()]);
    let pushed = env.json(&["push", &via, "--chunk-mib", "1"]);
    let sent = up.upstream_bytes.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        sent < (12 << 20) + (1 << 20),
        "upload resumed instead of restarting: {sent} bytes went upstream"
    );
    assert!(pushed["digest"].is_string());
    assert!(up.fired(), "the proxy dropped an upload connection");
    // Download through a proxy that cuts after ~4 MiB: the partial file is resumed with Range.
    let down = FaultProxy::start(reg.port, Fault::CutDownloadAfter(4 << 20));
    let via_down = format!("127.0.0.1:{}/models/resume:v1", down.port);
    let out = env.path("resumed");
    env.mp_store("store-dl")
        .args(["pull", &via_down, "--extract-dir", out.to_str().unwrap()])
        .output()
        .map(|o| ok(o, "pull through cutting proxy"))
        .unwrap();
    assert_eq!(
        std::fs::read(out.join("weights.safetensors")).unwrap(),
        data
    );
    // A registry path that serves wrong bytes: clear error, nothing in the store.
    let bad = FaultProxy::start(reg.port, Fault::CorruptDownloadsOver(64 << 10));
    let via_bad = format!("127.0.0.1:{}/models/resume:v1", bad.port);
    let err = fails(
        env.mp_store("store-bad")
            .args(["pull", &via_bad])
            .output()
            .unwrap(),
        "pull of corrupted blob",
    );
    assert!(err.contains("digest mismatch for layer"), "{err}");
    let blobs = env.path("store-bad/blobs/sha256");
    let stored: Vec<_> = std::fs::read_dir(&blobs)
        .map(|d| d.map(|e| e.unwrap().metadata().unwrap().len()).collect())
        .unwrap_or_default();
    assert!(
        stored.iter().all(|s| *s < 1 << 20),
        "no corrupted weight blob may reach the store: {stored:?}"
    );
    let _ = Fault::None;
}

#[test]
fn attach_remote_to_remote_sends_only_the_new_file() {
    let env = Env::new();
    let reg = Registry::start(&env.path("reg"), Auth::None);
    let src = format!("{}/models/base:v1", reg.host);
    let dst = format!("{}/models/tuned:v1", reg.host);
    env.build(&src);
    env.run(&["push", &src]);
    let extra = env.path("chat_template.jinja");
    std::fs::write(&extra, "{{ messages }}").unwrap();
    let out = env.json(&[
        "attach",
        extra.to_str().unwrap(),
        "-s",
        &src,
        "-t",
        &dst,
        "--output-remote",
    ]);
    assert_eq!(
        out["bytesSent"], 14,
        "only the new file's bytes are uploaded: {out}"
    );
    env.run(&[
        "pull",
        &dst,
        "--extract-dir",
        env.path("out").to_str().unwrap(),
    ]);
    env.run(&["validate", &dst]);
    assert_eq!(
        std::fs::read(env.path("out/chat_template.jinja")).unwrap(),
        b"{{ messages }}"
    );
    let n = modelpack_e2e::files_under(&env.path("out")).len();
    assert_eq!(n, modelpack_e2e::files_under(&env.model()).len() + 1);
    // Local attach refuses to silently replace, and replaces with --force.
    let err = fails(
        env.mp()
            .args(["attach", extra.to_str().unwrap(), "-s", &dst, "-t", &dst])
            .output()
            .unwrap(),
        "attach duplicate",
    );
    assert!(err.contains("--force"), "{err}");
    env.run(&[
        "attach",
        "-f",
        extra.to_str().unwrap(),
        "-s",
        &dst,
        "-t",
        &format!("{}/models/tuned:v2", reg.host),
    ]);
}
