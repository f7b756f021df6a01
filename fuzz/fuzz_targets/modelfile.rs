//! Modelfile text: never panics, and what parses re-renders to text that
//! parses to the same Modelfile (`generate` relies on that round trip).
#![no_main]
use libfuzzer_sys::fuzz_target;
use modelpack_common::modelfile::{Modelfile, parse};

fn canonical(mut mf: Modelfile) -> Modelfile {
    for e in &mut mf.entries {
        e.line = 0;
    }
    mf.entries
        .sort_by(|a, b| (a.kind, &a.pattern).cmp(&(b.kind, &b.pattern)));
    mf
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(mf) = parse(text, "Modelfile") {
        let rendered = mf.to_text();
        let again = parse(&rendered, "Modelfile")
            .unwrap_or_else(|e| panic!("re-parse failed: {e}\n{rendered}"));
        assert_eq!(canonical(again), canonical(mf));
    }
});
