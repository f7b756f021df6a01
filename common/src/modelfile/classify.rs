//! File classification for `modelfile generate`, following modctl
//! (`pkg/modelfile/constants.go`): config patterns first, then weights, code,
//! docs; anything else is a weight above 128 MiB and code below (a guess,
//! recorded as `untested`). We add datasets, which modctl has no pattern
//! for: data-file extensions (`.jsonl`, `.parquet`, …) anywhere, and any
//! non-weight file below a top-level `data/`, `dataset/` or `datasets/`.

use crate::media::LayerKind;

const SIZE_RULE: u64 = 128 << 20;

const CONFIG_EXT: &[&str] = &[
    "json", "yaml", "yml", "jinja", "tiktoken", "toml", "ini", "cfg", "conf", "xml", "proto",
];
const CONFIG_NAMES: &[&str] = &[
    "tokenizer.model",
    "vocab.txt",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.model",
];
const WEIGHT_EXT: &[&str] = &[
    "safetensors",
    "gguf",
    "ggml",
    "bin",
    "pt",
    "pth",
    "ckpt",
    "onnx",
    "h5",
    "hdf5",
    "msgpack",
    "pdparams",
    "tflite",
    "mlmodel",
    "pb",
    "npz",
    "dduf",
    "ot",
    "engine",
    "plan",
    "keras",
    "joblib",
    "pkl",
    "mar",
    "nemo",
    "llamafile",
];
const CODE_EXT: &[&str] = &[
    "py", "sh", "ipynb", "js", "ts", "go", "rs", "c", "cc", "cpp", "h", "hpp", "cu", "cuh", "java",
    "rb", "lua", "r", "pl", "swift", "kt", "scala", "ps1", "bat", "mjs",
];
const DATASET_EXT: &[&str] = &[
    "jsonl", "ndjson", "csv", "tsv", "parquet", "arrow", "feather", "avro", "tfrecord",
];
const DATASET_DIRS: &[&str] = &["data", "dataset", "datasets"];
const DOC_EXT: &[&str] = &["md", "rst", "pdf", "adoc", "html", "htm", "txt", "markdown"];
const DOC_PREFIXES: &[&str] = &[
    "readme",
    "license",
    "licence",
    "notice",
    "copying",
    "use_policy",
    "changelog",
    "authors",
    "citation",
    "model_card",
];

/// Kind of a file, and whether it was guessed from its size.
pub fn classify(rel_path: &str, size: u64) -> (LayerKind, bool) {
    let name = rel_path
        .rsplit('/')
        .next()
        .unwrap_or(rel_path)
        .to_ascii_lowercase();
    let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    let top_dir = rel_path
        .split_once('/')
        .map(|(d, _)| d.to_ascii_lowercase());
    let in_data_dir = top_dir.is_some_and(|d| DATASET_DIRS.contains(&d.as_str()));
    if DATASET_EXT.contains(&ext) || (in_data_dir && !WEIGHT_EXT.contains(&ext)) {
        return (LayerKind::Dataset, false);
    }
    if CONFIG_NAMES.contains(&name.as_str())
        || (CONFIG_EXT.contains(&ext) && !name.starts_with("readme"))
    {
        return (LayerKind::WeightConfig, false);
    }
    if WEIGHT_EXT.contains(&ext) {
        return (LayerKind::Weight, false);
    }
    if CODE_EXT.contains(&ext) {
        return (LayerKind::Code, false);
    }
    if DOC_EXT.contains(&ext) || DOC_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return (LayerKind::Doc, false);
    }
    if size > SIZE_RULE {
        (LayerKind::Weight, true)
    } else {
        (LayerKind::Code, true)
    }
}

/// Directories and files `modelfile generate` never takes.
pub fn skipped(rel_path: &str) -> bool {
    rel_path
        .split('/')
        .any(|c| c.starts_with('.') || c == "__pycache__" || c == "node_modules")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hugging_face_repo_files() {
        let cases = [
            ("config.json", LayerKind::WeightConfig),
            ("tokenizer.model", LayerKind::WeightConfig),
            ("merges.txt", LayerKind::WeightConfig),
            ("chat_template.jinja", LayerKind::WeightConfig),
            ("model-00001-of-00002.safetensors", LayerKind::Weight),
            ("pytorch_model.bin", LayerKind::Weight),
            ("q4.gguf", LayerKind::Weight),
            ("modeling_x.py", LayerKind::Code),
            ("README.md", LayerKind::Doc),
            ("LICENSE", LayerKind::Doc),
            ("NOTICE", LayerKind::Doc),
            ("data/train.jsonl", LayerKind::Dataset),
            ("eval.parquet", LayerKind::Dataset),
            ("datasets/split.json", LayerKind::Dataset),
            ("data/model.safetensors", LayerKind::Weight),
            ("metadata/config.json", LayerKind::WeightConfig),
        ];
        for (f, k) in cases {
            assert_eq!(classify(f, 10), (k, false), "{f}");
        }
        assert_eq!(classify("blob.data", 200 << 20), (LayerKind::Weight, true));
        assert_eq!(classify("blob.data", 10), (LayerKind::Code, true));
        assert!(
            skipped(".gitattributes")
                && skipped("a/.cache/x")
                && skipped("__pycache__/m.pyc")
                && !skipped("a/b.py")
        );
    }
}
