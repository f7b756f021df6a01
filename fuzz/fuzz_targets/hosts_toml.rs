//! containerd hosts.toml, as `HostsConfig::load` reads it from a hosts
//! directory (`<dir>/<host>/hosts.toml`). Endpoint construction from the
//! parsed config is not public API and is covered by the registry tests.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use modelpack_common::registry::HostsConfig;

fn dir() -> &'static tempfile::TempDir {
    static D: OnceLock<tempfile::TempDir> = OnceLock::new();
    D.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("reg.example")).unwrap();
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let d = dir();
    let file = d.path().join("reg.example/hosts.toml");
    std::fs::write(&file, data).unwrap();
    match HostsConfig::load(d.path(), "reg.example") {
        Ok(cfg) => assert!(cfg.is_some(), "an existing file must load or fail"),
        Err(e) => assert!(e.to_string().contains("hosts.toml"), "{e}"),
    }
});
