//! Property tests for the Modelfile parser and the weight-header readers:
//! everything here reads text or bytes a stranger may have written.

use proptest::prelude::*;

use super::headers::{gguf_summary_from_bytes, safetensors_summary_from_bytes};
use super::parser::{Entry, Modelfile, PRECISIONS, parse, valid_param_size};
use crate::error::Error;
use crate::media::LayerKind;

/// Any value the canonical renderer can write: non-empty, no line break
/// (a Modelfile is line-based; `generate` skips such file names).
fn value() -> impl Strategy<Value = String> {
    "[^\n]{1,24}".prop_filter("non-empty", |s| !s.is_empty())
}

fn kind() -> impl Strategy<Value = LayerKind> {
    prop::sample::select(LayerKind::ALL.to_vec())
}

fn modelfile() -> impl Strategy<Value = Modelfile> {
    (
        (
            prop::option::of(value()),
            prop::option::of(value()),
            prop::option::of(value()),
            prop::option::of(value()),
        ),
        prop::option::of("[0-9]{1,4}(\\.[0-9])?[QqTtBbMmKk]"),
        prop::option::of(prop::sample::subsequence(PRECISIONS.to_vec(), 1..3)),
        prop::option::of(value()),
        prop::collection::btree_set((kind(), value()), 0..8),
    )
        .prop_map(
            |((name, arch, family, format), ps, prec, quant, entries)| Modelfile {
                name,
                arch,
                family,
                format,
                param_size: ps,
                precision: prec.map(|p| p.join(",")),
                quantization: quant,
                entries: entries
                    .into_iter()
                    .map(|(kind, pattern)| Entry {
                        kind,
                        pattern,
                        line: 0,
                    })
                    .collect(),
            },
        )
}

fn canonical(mut mf: Modelfile) -> Modelfile {
    for e in &mut mf.entries {
        e.line = 0;
    }
    mf.entries
        .sort_by(|a, b| (a.kind, &a.pattern).cmp(&(b.kind, &b.pattern)));
    mf
}

/// Structured GGUF v3 with hostile knobs: counts, string lengths, dims and
/// array nesting drawn from ranges that include the absurd.
fn hostile_gguf() -> impl Strategy<Value = Vec<u8>> {
    let count = prop_oneof![0u64..4, Just(u64::MAX), Just(1u64 << 40), any::<u64>()];
    let dim = prop_oneof![
        0u64..5000,
        Just(u64::MAX),
        Just(u64::MAX / 2 + 1),
        any::<u64>()
    ];
    (
        count.clone(),
        count,
        prop::collection::vec(
            (0u32..16, 0usize..300, prop_oneof![0u64..3, any::<u64>()]),
            0..4,
        ),
        prop::collection::vec(
            (
                prop_oneof![0u32..5, Just(u32::MAX), any::<u32>()],
                prop::collection::vec(dim, 0..5),
            ),
            0..4,
        ),
        any::<bool>(),
    )
        .prop_map(|(n_tensors, n_kvs, kvs, tensors, truncate)| {
            let mut b = b"GGUF".to_vec();
            b.extend(3u32.to_le_bytes());
            b.extend(n_tensors.to_le_bytes());
            b.extend(n_kvs.to_le_bytes());
            for (ty, depth, n) in kvs {
                b.extend(3u64.to_le_bytes());
                b.extend(b"key");
                b.extend(ty.to_le_bytes());
                // `depth` nested array headers, then an element count.
                for _ in 0..depth {
                    b.extend(9u32.to_le_bytes());
                    b.extend(1u64.to_le_bytes());
                }
                b.extend(n.to_le_bytes());
            }
            for (dims, ds) in tensors {
                b.extend(1u64.to_le_bytes());
                b.push(b't');
                b.extend(dims.to_le_bytes());
                for d in ds {
                    b.extend(d.to_le_bytes());
                }
                b.extend(0u32.to_le_bytes());
                b.extend(0u64.to_le_bytes());
            }
            if truncate {
                b.truncate(b.len() / 2);
            }
            b
        })
}

fn header_error_names_file(e: &Error) -> bool {
    matches!(e, Error::WeightHeader { file, .. } if file == "f")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// What `to_text` writes, `parse` reads back to the same Modelfile.
    #[test]
    fn modelfile_round_trips(mf in modelfile()) {
        let text = mf.to_text();
        let back = parse(&text, "Modelfile")
            .map_err(|e| TestCaseError::fail(format!("{e}\n--- text ---\n{text}")))?;
        prop_assert_eq!(canonical(back), canonical(mf));
    }

    /// Arbitrary text never panics; errors always name the file and a line inside it.
    #[test]
    fn modelfile_parse_never_panics(text in prop_oneof![
        any::<String>(),
        prop::collection::vec(
            prop_oneof![
                Just("MODEL ".to_string()), Just("PARAMSIZE ".to_string()),
                Just("PRECISION ".to_string()), Just("\"".to_string()),
                Just("\\".to_string()), Just("\n".to_string()), Just("#".to_string()),
                "[^\n]{0,6}",
            ],
            0..20,
        ).prop_map(|v| v.concat()),
    ]) {
        match parse(&text, "M") {
            Ok(mf) => {
                for e in &mf.entries {
                    prop_assert!(!e.pattern.is_empty());
                    prop_assert!(e.line >= 1 && e.line <= text.lines().count());
                }
                if let Some(p) = &mf.param_size {
                    prop_assert!(valid_param_size(p));
                }
            }
            Err(Error::Modelfile { file, line, .. }) => {
                prop_assert_eq!(file, "M");
                prop_assert!(line >= 1 && line <= text.lines().count());
            }
            Err(other) => prop_assert!(false, "unexpected error kind: {other}"),
        }
    }

    /// Random bytes: no panic, and a failure is a header error naming the file.
    #[test]
    fn safetensors_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        if let Err(e) = safetensors_summary_from_bytes(&bytes, "f") {
            prop_assert!(header_error_names_file(&e), "{e}");
        }
    }

    /// Well-formed headers with hostile shapes: either the exact checked sum
    /// of the shapes, or an error naming the tensor's shape.
    #[test]
    fn safetensors_hostile_shapes(
        shapes in prop::collection::vec(
            prop::collection::vec(prop_oneof![0u64..100_000, Just(u64::MAX), any::<u64>()], 0..4),
            0..5,
        ),
        length_delta in prop_oneof![Just(0i64), -16i64..16, Just(i64::MAX)],
    ) {
        let tensors: Vec<String> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| format!(r#""t{i}":{{"dtype":"BF16","shape":{s:?},"data_offsets":[0,0]}}"#))
            .collect();
        let header = format!("{{{}}}", tensors.join(","));
        let mut b = (header.len() as u64).wrapping_add_signed(length_delta).to_le_bytes().to_vec();
        b.extend(header.as_bytes());
        let expected = shapes.iter().try_fold(0u64, |acc, s| {
            s.iter().try_fold(1u64, |p, d| p.checked_mul(*d)).and_then(|n| acc.checked_add(n))
        });
        match safetensors_summary_from_bytes(&b, "f") {
            Ok(s) => {
                prop_assert_eq!(length_delta, 0);
                prop_assert_eq!(Some(s.parameters), expected);
                prop_assert_eq!(s.by_precision.get("bfloat16").copied().unwrap_or(0), s.parameters);
            }
            Err(e) => {
                prop_assert!(header_error_names_file(&e), "{e}");
                prop_assert!(length_delta != 0 || expected.is_none(), "valid header refused: {e}");
            }
        }
    }

    /// Random bytes behind a valid GGUF magic and version.
    #[test]
    fn gguf_random_bytes(tail in prop::collection::vec(any::<u8>(), 0..256)) {
        let mut b = b"GGUF\x03\0\0\0".to_vec();
        b.extend(tail);
        if let Err(e) = gguf_summary_from_bytes(&b, "f") {
            prop_assert!(header_error_names_file(&e), "{e}");
        }
    }

    /// Structured-but-hostile GGUF: huge counts, dims and nesting never panic,
    /// never allocate what they claim, and fail as header errors.
    #[test]
    fn gguf_hostile_headers(b in hostile_gguf()) {
        match gguf_summary_from_bytes(&b, "f") {
            Ok(s) => prop_assert!(s.by_precision.values().all(|n| *n <= s.parameters)),
            Err(e) => prop_assert!(header_error_names_file(&e), "{e}"),
        }
    }
}
