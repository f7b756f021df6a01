//! Modelfile parsing and canonical rendering.

use crate::error::{Error, Result};
use crate::media::LayerKind;

/// One file pattern line (CONFIG/MODEL/CODE/DOC/DATASET).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: LayerKind,
    pub pattern: String,
    pub line: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Modelfile {
    pub name: Option<String>,
    pub arch: Option<String>,
    pub family: Option<String>,
    pub format: Option<String>,
    pub param_size: Option<String>,
    pub precision: Option<String>,
    pub quantization: Option<String>,
    pub entries: Vec<Entry>,
}

const SINGLE: [&str; 7] = [
    "NAME",
    "ARCH",
    "FAMILY",
    "FORMAT",
    "PARAMSIZE",
    "PRECISION",
    "QUANTIZATION",
];
const REPEATABLE: [&str; 5] = ["CONFIG", "MODEL", "CODE", "DOC", "DATASET"];

/// The 18 precision values of the spec.
pub const PRECISIONS: [&str; 18] = [
    "float32",
    "float64",
    "float16",
    "bfloat16",
    "float8_e4m3",
    "float8_e5m2",
    "complex32",
    "complex64",
    "complex128",
    "int8",
    "int16",
    "int32",
    "int64",
    "uint8",
    "uint16",
    "uint32",
    "uint64",
    "bool",
];

/// `^[0-9]+(\.[0-9])?[QqTtBbMmKk]$`
pub fn valid_param_size(s: &str) -> bool {
    let Some(unit) = s.chars().last() else {
        return false;
    };
    if !"QqTtBbMmKk".contains(unit) {
        return false;
    }
    let num = &s[..s.len() - 1];
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (num, None),
    };
    !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| f.len() == 1 && f.bytes().all(|b| b.is_ascii_digit()))
}

fn kind_of(cmd: &str) -> Option<LayerKind> {
    Some(match cmd {
        "CONFIG" => LayerKind::WeightConfig,
        "MODEL" => LayerKind::Weight,
        "CODE" => LayerKind::Code,
        "DOC" => LayerKind::Doc,
        "DATASET" => LayerKind::Dataset,
        _ => return None,
    })
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Splits a line into whitespace-separated words; double quotes group, backslash escapes.
fn split_words(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let next = chars.next().ok_or("a line cannot end with a backslash")?;
                cur.push(next);
                in_word = true;
            }
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err("unterminated double quote".into());
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Parses Modelfile text. `file_name` is used in error messages (`Modelfile:7: …`).
pub fn parse(text: &str, file_name: &str) -> Result<Modelfile> {
    let mut mf = Modelfile::default();
    let mut seen_single: Vec<(String, usize)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let err = |message: String| Error::Modelfile {
            file: file_name.to_string(),
            line: line_no,
            message,
        };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words = split_words(line).map_err(err)?;
        let cmd = words[0].to_ascii_uppercase();
        if !SINGLE.contains(&cmd.as_str()) && !REPEATABLE.contains(&cmd.as_str()) {
            let best = SINGLE
                .iter()
                .chain(REPEATABLE.iter())
                .min_by_key(|k| edit_distance(&cmd, k))
                .expect("non-empty");
            let hint = if edit_distance(&cmd, best) <= 2 {
                format!(" (did you mean {best}?)")
            } else {
                String::new()
            };
            return Err(err(format!("unknown command {}{hint}", words[0])));
        }
        match words.len() {
            1 => return Err(err(format!("{cmd} needs an argument"))),
            2 => {}
            _ => {
                return Err(err(format!(
                    "{cmd} takes exactly one argument; quote arguments that contain spaces"
                )));
            }
        }
        let arg = words[1].clone();
        if arg.is_empty() {
            return Err(err(format!("{cmd} needs a non-empty argument")));
        }
        if let Some(kind) = kind_of(&cmd) {
            if !mf
                .entries
                .iter()
                .any(|e| e.kind == kind && e.pattern == arg)
            {
                mf.entries.push(Entry {
                    kind,
                    pattern: arg,
                    line: line_no,
                });
            }
            continue;
        }
        if let Some((_, first)) = seen_single.iter().find(|(c, _)| *c == cmd) {
            return Err(err(format!(
                "{cmd} is given twice (first on line {first}); it takes one value"
            )));
        }
        seen_single.push((cmd.clone(), line_no));
        match cmd.as_str() {
            "NAME" => mf.name = Some(arg),
            "ARCH" => mf.arch = Some(arg),
            "FAMILY" => mf.family = Some(arg),
            "FORMAT" => mf.format = Some(arg),
            "PARAMSIZE" => {
                if !valid_param_size(&arg) {
                    return Err(err(format!(
                        "PARAMSIZE {arg:?} is not a parameter count like 8B, 6.7B, 500M (one decimal at most, unit Q/T/B/M/K)"
                    )));
                }
                mf.param_size = Some(arg)
            }
            "PRECISION" => {
                for part in arg.split(',').map(str::trim) {
                    if !PRECISIONS.contains(&part) {
                        return Err(err(format!(
                            "PRECISION {part:?} is not one of {}",
                            PRECISIONS.join(", ")
                        )));
                    }
                }
                mf.precision = Some(arg)
            }
            "QUANTIZATION" => mf.quantization = Some(arg),
            _ => unreachable!("checked above"),
        }
    }
    Ok(mf)
}

fn quote(s: &str) -> String {
    if !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c == '"' || c == '\\' || c == '#')
    {
        return s.to_string();
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

impl Modelfile {
    /// Canonical text: fields, then entries grouped by kind in layer order. No timestamps.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for (k, v) in [
            ("NAME", &self.name),
            ("ARCH", &self.arch),
            ("FAMILY", &self.family),
            ("FORMAT", &self.format),
            ("PARAMSIZE", &self.param_size),
            ("PRECISION", &self.precision),
            ("QUANTIZATION", &self.quantization),
        ] {
            if let Some(v) = v {
                out.push_str(&format!("{k} {}\n", quote(v)));
            }
        }
        for kind in crate::media::LayerKind::ALL {
            let mut group: Vec<&Entry> = self.entries.iter().filter(|e| e.kind == kind).collect();
            group.sort_by(|a, b| a.pattern.cmp(&b.pattern));
            if !group.is_empty() {
                out.push('\n');
            }
            for e in group {
                out.push_str(&format!(
                    "{} {}\n",
                    kind.modelfile_command(),
                    quote(&e.pattern)
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_modctl_syntax() {
        let mf = parse("# c\nname qwen\nARCH transformer\nPrecision bfloat16\nPARAMSIZE 0.6B\nCONFIG config.json\nmodel \"my model.safetensors\"\nMODEL a\\ b.bin\nMODEL a\\ b.bin\nDATASET data/**\n", "Modelfile").unwrap();
        assert_eq!(mf.name.as_deref(), Some("qwen"));
        assert_eq!(mf.precision.as_deref(), Some("bfloat16"));
        assert_eq!(mf.entries.len(), 4, "duplicate pattern deduplicated");
        assert_eq!(mf.entries[1].pattern, "my model.safetensors");
        assert_eq!(mf.entries[2].pattern, "a b.bin");
        assert_eq!(mf.entries[3].kind, LayerKind::Dataset);
        assert_eq!(parse(&mf.to_text(), "M").unwrap().entries.len(), 4);
    }

    #[test]
    fn errors_name_file_and_line() {
        let cases = [
            (
                "NAME x\n\nFORMATT gguf\n",
                "Modelfile:3: unknown command FORMATT (did you mean FORMAT?)",
            ),
            ("MODEL\n", "Modelfile:1: MODEL needs an argument"),
            (
                "MODEL a b\n",
                "Modelfile:1: MODEL takes exactly one argument",
            ),
            (
                "NAME a\nNAME b\n",
                "Modelfile:2: NAME is given twice (first on line 1)",
            ),
            ("MODEL \"a\n", "Modelfile:1: unterminated double quote"),
            ("PARAMSIZE 8.03B\n", "Modelfile:1: PARAMSIZE \"8.03B\""),
            ("PRECISION fp16\n", "Modelfile:1: PRECISION \"fp16\""),
        ];
        for (text, want) in cases {
            let e = parse(text, "Modelfile").unwrap_err().to_string();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn param_size_grammar() {
        for ok in ["8b", "6.7B", "100m", "0.5B", "1T", "3K", "2q"] {
            assert!(valid_param_size(ok), "{ok}");
        }
        for bad in ["8.03B", "B", "8", "8.B", ".5B", "8x", "1,5B"] {
            assert!(!valid_param_size(bad), "{bad}");
        }
    }

    #[test]
    fn canonical_text_round_trips_with_quotes() {
        let mf = Modelfile {
            name: Some("a b".into()),
            entries: vec![Entry {
                kind: LayerKind::Doc,
                pattern: "x \"y\".md".into(),
                line: 1,
            }],
            ..Default::default()
        };
        let back = parse(&mf.to_text(), "M").unwrap();
        assert_eq!(back.name, mf.name);
        assert_eq!(back.entries[0].pattern, "x \"y\".md");
    }
}
