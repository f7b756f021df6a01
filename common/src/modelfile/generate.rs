//! `modelfile generate`: classify a model directory and infer what modctl
//! leaves blank — FORMAT from extensions, PARAMSIZE from tensor element
//! counts, PRECISION from the dominant dtype, QUANTIZATION from config.json or
//! the GGUF file type, FAMILY/ARCH from config.json. Headers only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, IoContext, Result};
use crate::media::LayerKind;

use super::classify::{classify, skipped};
use super::headers::{TensorSummary, read_gguf_summary, read_safetensors_summary};
use super::parser::{Entry, Modelfile};

/// Overrides (win over inference) and file filters.
#[derive(Debug, Clone, Default)]
pub struct GenerateOptions {
    pub name: Option<String>,
    pub arch: Option<String>,
    pub family: Option<String>,
    pub format: Option<String>,
    pub param_size: Option<String>,
    pub precision: Option<String>,
    pub quantization: Option<String>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
}

fn globs(patterns: &[String]) -> Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(
            GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .map_err(|e| Error::Invalid(format!("invalid pattern {p:?}: {e}")))?,
        );
    }
    Ok(Some(b.build().map_err(|e| Error::Invalid(e.to_string()))?))
}

/// Formats a parameter count per the paramSize grammar (one decimal at most),
/// in the largest unit that keeps the number at least 1: 262,144 is `262.1K`,
/// not `0.3M` (14% off), and 135M stays `135M`, not `0.1B`.
pub fn format_param_size(n: u64) -> String {
    const UNITS: [(f64, &str); 4] = [(1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")];
    let n = n as f64;
    let mut i = UNITS.iter().position(|(scale, _)| n >= *scale).unwrap_or(3);
    // 999,960 rounds to 1000.0K: say 1M instead.
    if i > 0 && (n / UNITS[i].0 * 10.0).round() >= 10_000.0 {
        i -= 1;
    }
    let (scale, unit) = UNITS[i];
    let s = format!("{:.1}", n / scale);
    let s = s.strip_suffix(".0").unwrap_or(&s);
    format!("{s}{unit}")
}

/// A paramSize outside the grammar (Docker Model Runner's `8.03B`) rounded
/// to one decimal, for the validator's hint; `None` when it is not a number
/// with a unit at all.
pub fn round_param_size(s: &str) -> Option<String> {
    let unit = s.chars().last().filter(|c| "QqTtBbMmKk".contains(*c))?;
    let num: f64 = s[..s.len() - 1].trim().parse().ok()?;
    if !num.is_finite() || num < 0.0 {
        return None;
    }
    let r = format!("{num:.1}");
    let r = r.strip_suffix(".0").unwrap_or(&r);
    Some(format!("{r}{unit}"))
}

/// Builds a Modelfile for `dir`: one line per file, fields inferred.
pub fn generate(dir: &Path, opts: &GenerateOptions) -> Result<Modelfile> {
    let root = std::fs::canonicalize(dir).ctx("open model directory", dir)?;
    let (include, exclude) = (globs(&opts.include)?, globs(&opts.exclude)?);
    let mut mf = Modelfile::default();
    let mut weights: Vec<PathBuf> = Vec::new();
    for e in walkdir::WalkDir::new(&root)
        .sort_by_file_name()
        .follow_links(false)
    {
        let e = e.map_err(|e| Error::Workspace(format!("cannot read {}: {e}", dir.display())))?;
        if e.depth() == 0 || !e.file_type().is_file() {
            continue;
        }
        let rel = e
            .path()
            .strip_prefix(&root)
            .unwrap_or(e.path())
            .to_string_lossy()
            .replace('\\', "/");
        if skipped(&rel) || rel == "Modelfile" {
            continue;
        }
        if rel.contains('\n') {
            // A Modelfile is line-based: such a name cannot be written in one
            // (quoting does not span lines), so it would yield a file that
            // `build` then refuses.
            tracing::warn!(
                "skipping {:?}: a file name with a line break cannot be named in a Modelfile",
                rel
            );
            continue;
        }
        if include.as_ref().is_some_and(|g| !g.is_match(&rel))
            || exclude.as_ref().is_some_and(|g| g.is_match(&rel))
        {
            continue;
        }
        let size = e.metadata().map(|m| m.len()).unwrap_or(0);
        let (kind, _) = classify(&rel, size);
        if kind == LayerKind::Weight {
            weights.push(e.path().to_path_buf());
        }
        mf.entries.push(Entry {
            kind,
            pattern: rel,
            line: 0,
        });
    }
    if mf.entries.is_empty() {
        return Err(Error::Workspace(format!(
            "{} has no files to pack",
            dir.display()
        )));
    }
    infer(&root, &weights, &mut mf)?;
    mf.name = opts
        .name
        .clone()
        .or(mf.name)
        .or_else(|| root.file_name().map(|n| n.to_string_lossy().to_lowercase()));
    for (field, over) in [
        (&mut mf.arch, &opts.arch),
        (&mut mf.family, &opts.family),
        (&mut mf.format, &opts.format),
        (&mut mf.param_size, &opts.param_size),
        (&mut mf.precision, &opts.precision),
        (&mut mf.quantization, &opts.quantization),
    ] {
        if over.is_some() {
            *field = over.clone();
        }
    }
    if let Some(p) = &mf.param_size
        && !super::parser::valid_param_size(p)
    {
        return Err(Error::Invalid(format!(
            "--param-size {p:?} is not a parameter count like 8B, 6.7B or 500M"
        )));
    }
    Ok(mf)
}

fn infer(root: &Path, weights: &[PathBuf], mf: &mut Modelfile) -> Result<()> {
    let mut formats: BTreeMap<&str, usize> = BTreeMap::new();
    let mut total = TensorSummary::default();
    let mut any_header = false;
    for w in weights {
        let ext = w
            .extension()
            .map(|e| e.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let header = |r: Result<TensorSummary>| match r {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("{e}; its tensors are not counted in PARAMSIZE/PRECISION");
                None
            }
        };
        let (fmt, summary) = match ext.as_str() {
            "safetensors" => ("safetensors", header(read_safetensors_summary(w))),
            "gguf" => ("gguf", header(read_gguf_summary(w))),
            "bin" | "pt" | "pth" | "ckpt" => ("pt", None),
            "onnx" => ("onnx", None),
            "dduf" => ("dduf", None),
            _ => continue,
        };
        *formats.entry(fmt).or_default() += 1;
        if let Some(s) = summary {
            // Each file's own count is checked by the header reader; the sum
            // over files can still overflow when headers lie. Such a file is
            // treated like any other bad header: warned about, not counted.
            let mut merged = total.clone();
            if merged.merge(s).is_some() {
                total = merged;
                any_header = true;
            } else {
                tracing::warn!(
                    "{}: its tensor count pushes the total past 2^64; its tensors are not counted in PARAMSIZE/PRECISION",
                    w.display()
                );
            }
        }
    }
    mf.format = formats
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(f, _)| f.to_string());
    if any_header && total.parameters > 0 {
        // Shards of a GGUF quantisation set repeat the same tensors; a single GGUF file is the model.
        mf.param_size = Some(format_param_size(total.parameters));
    }
    mf.precision = total
        .by_precision
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(p, _)| p.clone());
    mf.quantization = total
        .quantization
        .filter(|q| !matches!(q.as_str(), "f32" | "f16" | "bf16"));
    if let Some(a) = total.architecture {
        mf.family = Some(a);
        mf.arch = Some("transformer".into());
    }
    let cfg_path = root.join("config.json");
    if let Ok(bytes) = std::fs::read(&cfg_path)
        && let Ok(cfg) = serde_json::from_slice::<serde_json::Value>(&bytes)
    {
        if let Some(t) = cfg.get("model_type").and_then(|v| v.as_str()) {
            mf.family = Some(t.to_string());
        }
        if cfg.get("architectures").is_some() || cfg.get("model_type").is_some() {
            mf.arch = Some("transformer".into());
        }
        if let Some(q) = cfg
            .pointer("/quantization_config/quant_method")
            .and_then(|v| v.as_str())
        {
            mf.quantization = Some(q.to_string());
        }
        if mf.precision.is_none() {
            mf.precision = cfg
                .get("torch_dtype")
                .and_then(|v| v.as_str())
                .and_then(|d| match d {
                    "bfloat16" | "float16" | "float32" => Some(d.to_string()),
                    _ => None,
                });
        }
    }
    Ok(())
}

/// Writes the generated Modelfile to `output` (a directory → `output/Modelfile`), atomically.
pub fn write_generated(
    dir: &Path,
    output: &Path,
    overwrite: bool,
    opts: &GenerateOptions,
) -> Result<PathBuf> {
    let mf = generate(dir, opts)?;
    let target = if output.is_dir() {
        output.join("Modelfile")
    } else {
        output.to_path_buf()
    };
    if target.exists() && !overwrite {
        return Err(Error::Invalid(format!(
            "{} already exists\nhint: pass --overwrite to replace it",
            target.display()
        )));
    }
    let parent = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    crate::store::write_atomic(&target, mf.to_text().as_bytes(), parent)?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_size_formatting() {
        assert_eq!(format_param_size(494_032_768), "494M");
        assert_eq!(format_param_size(7_241_732_096), "7.2B");
        assert_eq!(format_param_size(8_030_261_248), "8B");
        assert_eq!(format_param_size(135_000_000), "135M");
        assert_eq!(format_param_size(1_700_000), "1.7M");
        assert_eq!(format_param_size(262_144), "262.1K");
        assert_eq!(format_param_size(999_960), "1M");
        assert_eq!(format_param_size(512), "0.5K");
        assert_eq!(round_param_size("8.03B").as_deref(), Some("8B"));
        assert_eq!(round_param_size("6.75b").as_deref(), Some("6.8b"));
        assert_eq!(round_param_size("lots"), None);
        assert_eq!(format_param_size(25_000_000), "25M");
        assert_eq!(format_param_size(4_096_010), "4.1M");
        for n in [494_032_768u64, 7_241_732_096, 999, 1_500_000_000_000] {
            assert!(
                super::super::parser::valid_param_size(&format_param_size(n)),
                "{n}"
            );
        }
    }

    #[test]
    fn generates_from_a_sample_model() {
        let d = tempfile::tempdir().unwrap();
        let model = d.path().join("Tiny-Model");
        super::super::write_sample_model(&model, 2, 1 << 20).unwrap();
        std::fs::write(model.join(".gitattributes"), "x").unwrap();
        let mf = generate(&model, &GenerateOptions::default()).unwrap();
        assert_eq!(mf.format.as_deref(), Some("safetensors"));
        assert_eq!(mf.precision.as_deref(), Some("bfloat16"));
        assert_eq!(mf.family.as_deref(), Some("llama"));
        assert_eq!(mf.arch.as_deref(), Some("transformer"));
        assert_eq!(mf.name.as_deref(), Some("tiny-model"));
        assert!(mf.param_size.is_some());
        assert!(!mf.entries.iter().any(|e| e.pattern.starts_with('.')));
        assert!(
            mf.entries
                .iter()
                .any(|e| e.kind == LayerKind::Weight && e.pattern.ends_with(".safetensors"))
        );
        let resolved = super::super::resolve(&model, &mf).unwrap();
        assert_eq!(resolved.len(), mf.entries.len());
        let over = generate(
            &model,
            &GenerateOptions {
                precision: Some("float16".into()),
                exclude: vec!["*.md".into()],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(over.precision.as_deref(), Some("float16"));
        assert!(!over.entries.iter().any(|e| e.pattern.ends_with(".md")));
    }

    #[test]
    fn gguf_quantization_and_overwrite_guard() {
        let d = tempfile::tempdir().unwrap();
        super::super::headers::tests::write_gguf(
            &d.path().join("m-q4.gguf"),
            15,
            &[("a", &[1000, 1000])],
        );
        let mf = generate(d.path(), &GenerateOptions::default()).unwrap();
        assert_eq!(mf.format.as_deref(), Some("gguf"));
        assert_eq!(mf.quantization.as_deref(), Some("q4_k_m"));
        assert_eq!(mf.param_size.as_deref(), Some("1M"));
        let out = tempfile::tempdir().unwrap();
        let p = write_generated(d.path(), out.path(), false, &GenerateOptions::default()).unwrap();
        assert!(p.ends_with("Modelfile"));
        let e = write_generated(d.path(), out.path(), false, &GenerateOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("--overwrite"), "{e}");
        write_generated(d.path(), out.path(), true, &GenerateOptions::default()).unwrap();
    }

    #[test]
    fn hostile_headers_do_not_crash_generate() {
        let d = tempfile::tempdir().unwrap();
        let big = u64::MAX / 2 + 1;
        // Each file alone fits in u64; together they do not (this panicked).
        for f in ["a.gguf", "b.gguf"] {
            super::super::headers::tests::write_gguf(&d.path().join(f), 1, &[("t", &[big])]);
        }
        // A dimension product that overflows inside one file.
        super::super::headers::tests::write_gguf(
            &d.path().join("c.gguf"),
            1,
            &[("t", &[u64::MAX, 2])],
        );
        // A file name the Modelfile syntax cannot express.
        std::fs::write(d.path().join("evil\nMODEL x"), "x").unwrap();
        let mf = generate(d.path(), &GenerateOptions::default()).unwrap();
        // Only a.gguf is counted: b.gguf would overflow the total, c.gguf is invalid.
        assert_eq!(
            mf.param_size.as_deref(),
            Some(format_param_size(big).as_str())
        );
        assert!(!mf.entries.iter().any(|e| e.pattern.contains('\n')));
        assert_eq!(
            super::super::parse(&mf.to_text(), "Modelfile")
                .unwrap()
                .entries
                .len(),
            3
        );
    }
}
