//! Model config JSON: never panics; what parses round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;
use modelpack_common::config::{FileMetadata, ModelConfig};

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = ModelConfig::parse(data, "fuzz") {
        assert_eq!(ModelConfig::parse(&c.to_bytes(), "again").unwrap(), c);
    }
    // The per-layer file metadata annotation is parsed from the same kind of input.
    if let Ok(m) = serde_json::from_slice::<FileMetadata>(data) {
        let _ = m.mtime_unix();
        let again: FileMetadata = serde_json::from_str(&m.to_annotation()).unwrap();
        assert_eq!(again, m);
    }
});
