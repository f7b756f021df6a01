//! What users read, as snapshots (`insta`): the help of every verb, `ls`,
//! `inspect`, `validate` reports, the main error messages, and the `--json`
//! of each verb. Paths, digests, times and rates are redacted, so a snapshot
//! changes only when the text a person or a script sees changes — and then
//! the change shows up in review. `cargo insta review` (or
//! `INSTA_UPDATE=always cargo test`) accepts a deliberate change.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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
    /// The standalone CLI with a fixed terminal width and no user config.
    fn mp(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("MODELPACK_HOME", self.path("store"))
            .env_remove("MODELPACK_CONFIG")
            .env("XDG_CONFIG_HOME", self.path("xdg"))
            .env("HOME", self.path("home"))
            .env("COLUMNS", "100")
            .env("NO_COLOR", "1")
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .env_remove("MODELPACK_CONCURRENCY")
            .env_remove("MODELPACK_PLAIN_HTTP")
            .env_remove("MODELPACK_CA_FILE")
            .env_remove("DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND");
        c
    }
    fn out(&self, args: &[&str]) -> Output {
        self.mp().args(args).output().unwrap()
    }
    /// stdout, then stderr under a marker, then the exit code: all of what a user sees.
    fn seen(&self, args: &[&str]) -> String {
        self.seen_with(&[], args)
    }
    fn seen_with(&self, envs: &[(&str, &str)], args: &[&str]) -> String {
        let mut c = self.mp();
        for (k, v) in envs {
            c.env(k, v);
        }
        let o = c.args(args).output().unwrap();
        let mut s = String::from_utf8_lossy(&o.stdout).into_owned();
        let err = String::from_utf8_lossy(&o.stderr);
        if !err.is_empty() {
            s.push_str("--- stderr ---\n");
            s.push_str(&err);
        }
        s.push_str(&format!("--- exit {} ---\n", o.status.code().unwrap_or(-1)));
        s
    }
    fn model(&self) -> PathBuf {
        let dir = self.path("model");
        if !dir.exists() {
            modelpack_common::modelfile::write_sample_model(&dir, 2, 300_000).unwrap();
        }
        dir
    }
}

/// Runs `check` with the redactions every snapshot here needs.
fn redacted(env: &Env, check: impl FnOnce()) {
    let tmp = env.dir.path().display().to_string();
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.add_filter(&regex_escape(&tmp), "[TMP]");
    settings.add_filter(r"sha256:[0-9a-f]{64}", "sha256:[DIGEST]");
    // Twelve characters, as the short digest, so tables stay aligned.
    settings.add_filter(r"\b[0-9a-f]{12}\b", "<short-hash>");
    settings.add_filter(
        r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})",
        "[TIME]",
    );
    settings.add_filter(r#""seconds": [0-9.e-]+"#, r#""seconds": [SECS]"#);
    settings.add_filter(r"\d+(\.\d+)? [kMG]?B/s", "[RATE]");
    settings.add_filter(
        r"(\d+|an?) (second|minute|hour|day|week|month|year)s? ago|Less than a second ago|just now",
        "[AGO]",
    );
    settings.add_filter(
        concat!("docker-modelpack ", env!("CARGO_PKG_VERSION")),
        "docker-modelpack [VERSION]",
    );
    settings.bind(check);
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '/' || c == '_' || c == '-' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

fn build(env: &Env, reference: &str) {
    let mf = env.path("Modelfile");
    let model = env.model();
    let o = env.out(&[
        "modelfile",
        "generate",
        model.to_str().unwrap(),
        "-O",
        mf.to_str().unwrap(),
        "--name",
        "tiny",
        "--family",
        "llama",
        "--param-size",
        "1.5B",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = env.out(&[
        "build",
        "-q",
        "-t",
        reference,
        "-f",
        mf.to_str().unwrap(),
        model.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// Every verb and sub-verb. `help_of_every_verb` checks it against the
/// commands the CLI lists, so a new verb without a snapshot fails there.
pub(crate) const VERBS: &[&str] = &[
    "build",
    "inspect",
    "ls",
    "tag",
    "rm",
    "prune",
    "fsck",
    "extract",
    "validate",
    "modelfile generate",
    "index",
    "push",
    "pull",
    "fetch",
    "attach",
    "upload",
    "login",
    "logout",
    "mount",
    "resolve",
    "umount",
    "sign",
    "verify",
    "referrers",
    "config show",
    "completion",
    "version",
];

/// The command names of a help text's `Commands:` section (`help` left out).
fn listed_commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        // Wrapped descriptions are indented further than the names.
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|c| c != "help")
        .collect()
}

#[test]
fn help_of_every_verb() {
    let env = Env::new();
    let top = env.seen(&["--help"]);
    let mut listed = listed_commands(&top);
    let mut known: Vec<String> = VERBS
        .iter()
        .map(|v| v.split(' ').next().unwrap().to_string())
        .collect();
    listed.sort();
    known.sort();
    known.dedup();
    assert_eq!(listed, known, "VERBS is not the CLI's list of commands");
    redacted(&env, || {
        insta::assert_snapshot!("help", top);
        for verb in VERBS {
            let args: Vec<&str> = verb.split(' ').chain(["--help"]).collect();
            insta::assert_snapshot!(format!("help-{}", verb.replace(' ', "-")), env.seen(&args));
        }
    });
}

#[test]
fn tables_reports_and_json_of_a_stored_model() {
    let env = Env::new();
    let r = "localhost/text/tiny:v1";
    build(&env, r);
    let out = env.path("out");
    let out = out.to_str().unwrap();
    redacted(&env, || {
        insta::assert_snapshot!("ls", env.seen(&["ls"]));
        insta::assert_snapshot!("ls-q", env.seen(&["ls", "-q"]));
        insta::assert_snapshot!("inspect", env.seen(&["inspect", r]));
        insta::assert_snapshot!("validate", env.seen(&["validate", r]));
        insta::assert_snapshot!("extract", env.seen(&["extract", r, "-o", out]));
        insta::assert_snapshot!("json-inspect", env.seen(&["--json", "inspect", r]));
        insta::assert_snapshot!("json-ls", env.seen(&["--json", "ls"]));
        insta::assert_snapshot!("json-validate", env.seen(&["--json", "validate", r]));
        insta::assert_snapshot!(
            "json-extract",
            env.seen(&["--json", "extract", r, "-o", out])
        );
        insta::assert_snapshot!(
            "json-tag",
            env.seen(&["--json", "tag", r, "localhost/text/tiny:v2"])
        );
        insta::assert_snapshot!(
            "json-rm",
            env.seen(&["--json", "rm", "localhost/text/tiny:v2"])
        );
        insta::assert_snapshot!("json-config-show", env.seen(&["--json", "config", "show"]));
    });
}

#[test]
fn the_main_error_messages() {
    let env = Env::new();
    redacted(&env, || {
        insta::assert_snapshot!("error-no-store", env.seen(&["ls"]));
        insta::assert_snapshot!(
            "error-missing-config-file",
            env.seen_with(
                &[("MODELPACK_CONFIG", "/nonexistent/modelpack.toml")],
                &["ls"]
            )
        );
        build(&env, "localhost/text/tiny:v1");
        insta::assert_snapshot!(
            "error-unknown-model",
            env.seen(&["inspect", "localhost/text/missing:v1"])
        );
        insta::assert_snapshot!(
            "error-bad-reference",
            env.seen(&["inspect", "Not A Reference"])
        );
        insta::assert_snapshot!(
            "error-json-unknown-model",
            env.seen(&["--json", "inspect", "localhost/text/missing:v1"])
        );
        std::fs::write(
            env.path("Bad.modelfile"),
            "NAME tiny\nMODEL\nFROBNICATE x\n",
        )
        .unwrap();
        let model = env.model();
        insta::assert_snapshot!(
            "error-bad-modelfile",
            env.seen(&[
                "build",
                "-t",
                "localhost/text/bad:v1",
                "-f",
                env.path("Bad.modelfile").to_str().unwrap(),
                model.to_str().unwrap(),
            ])
        );
        insta::assert_snapshot!(
            "error-registry-down",
            env.seen(&["pull", "127.0.0.1:1/text/tiny:v1"])
        );
        let missing_dir = Path::new("/nonexistent/modelpack-text");
        insta::assert_snapshot!(
            "error-no-such-directory",
            env.seen(&[
                "build",
                "-t",
                "localhost/text/x:v1",
                missing_dir.to_str().unwrap()
            ])
        );
    });
}
