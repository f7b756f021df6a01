//! GGUF headers (what `modelfile generate` reads from weight files).
#![no_main]
use libfuzzer_sys::fuzz_target;
use modelpack_common::Error;
use modelpack_common::modelfile::gguf_summary_from_bytes;

fuzz_target!(|data: &[u8]| {
    match gguf_summary_from_bytes(data, "f") {
        Ok(s) => assert!(s.by_precision.values().all(|n| *n <= s.parameters)),
        Err(e) => assert!(matches!(e, Error::WeightHeader { .. }), "{e}"),
    }
});
