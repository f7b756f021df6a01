//! Image references: never panics; normalisation is idempotent.
#![no_main]
use libfuzzer_sys::fuzz_target;
use modelpack_common::Reference;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = s.parse::<Reference>() {
        let again: Reference = r
            .to_string()
            .parse()
            .unwrap_or_else(|e| panic!("{s:?} -> {r} does not re-parse: {e}"));
        assert_eq!(again, r);
        let _ = (r.target(), r.auth_key(), r.api_host(), r.is_loopback());
    }
});
