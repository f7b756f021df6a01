//! docker config.json / podman auth.json, fed through DOCKER_AUTH_CONFIG so
//! nothing touches the disk and no credential helper is ever run.
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use modelpack_common::credentials::{CredentialOptions, CredentialStore};

fuzz_target!(|data: &[u8]| {
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    let json = json.to_string();
    let opts = CredentialOptions {
        docker_config_dir: Some("/nonexistent/modelpack-fuzz".into()),
        ..Default::default()
    };
    let env = Arc::new(move |k: &str| (k == "DOCKER_AUTH_CONFIG").then(|| json.clone()));
    let store = CredentialStore::with_env(opts, env);
    for (reg, repo) in [("reg.example:5000", "m/x"), ("docker.io", "library/x")] {
        if let Err(e) = store.resolve(reg, repo) {
            assert!(e.to_string().starts_with("credentials: DOCKER_AUTH_CONFIG"), "{e}");
        }
    }
});
