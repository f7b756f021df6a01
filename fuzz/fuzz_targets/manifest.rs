//! Manifest JSON (from registries and the store): never panics; what parses
//! re-serialises to bytes that parse to the same manifest.
#![no_main]
use libfuzzer_sys::fuzz_target;
use modelpack_common::manifest::{Manifest, sniff_media_type};

fuzz_target!(|data: &[u8]| {
    let _ = sniff_media_type(data);
    if let Ok(m) = Manifest::parse(data, "fuzz") {
        let _ = m.content_size();
        let _ = m.model_family();
        for l in &m.layers {
            let _ = (l.filepath(), l.file_metadata(), l.layer_type());
        }
        let bytes = m.to_bytes();
        assert_eq!(Manifest::parse(&bytes, "again").unwrap(), m);
    }
});
