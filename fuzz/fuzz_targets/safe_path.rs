//! Extraction paths from annotations and tar entries: whatever is accepted
//! stays inside the output directory.
#![no_main]
use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use modelpack_common::extract::safe_relative_path;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(rel) = safe_relative_path("layer", p) {
        assert!(!rel.as_os_str().is_empty());
        assert!(rel.components().all(|c| matches!(c, Component::Normal(_))), "{rel:?}");
        assert!(Path::new("/out").join(&rel).starts_with("/out"));
    }
});
