//! Reading only the headers of weight files: safetensors (8-byte length +
//! JSON) and GGUF (metadata key/values + tensor infos). Tensor data is never
//! read, so multi-GB files cost a few KB of I/O.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// What a weight file's header says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TensorSummary {
    /// Total tensor elements (parameters).
    pub parameters: u64,
    /// Elements per spec precision name (`bfloat16`, …).
    pub by_precision: BTreeMap<String, u64>,
    /// GGUF `general.file_type` as a quantization name (`q4_k_m`, …).
    pub quantization: Option<String>,
    /// GGUF `general.architecture`.
    pub architecture: Option<String>,
}

/// Largest safetensors JSON header we parse. The format's own reference
/// implementation uses the same 100 MB bound; a length above it is a hostile
/// or corrupt file, and reading it would allocate whatever the file claims.
const MAX_SAFETENSORS_HEADER: u64 = 100 << 20;
/// Largest GGUF metadata + tensor-info block we walk. Real headers with a
/// 256k-token vocabulary and its merges are a few tens of MB; the bound keeps a
/// hostile file from making `modelfile generate` read gigabytes of "header".
const MAX_GGUF_HEADER: u64 = 256 << 20;
/// Longest GGUF string (key, token, architecture) we accept.
const MAX_GGUF_STRING: u64 = 16 << 20;
/// GGUF arrays may contain arrays; the reader recurses, so an unbounded depth
/// is a stack overflow on a crafted file. llama.cpp itself writes depth 1.
const MAX_GGUF_ARRAY_DEPTH: u32 = 4;
/// ggml tensors have at most 4 dimensions (GGML_MAX_DIMS); 8 leaves room for
/// future formats while rejecting a dimension count of 4 billion.
const MAX_GGUF_DIMS: u32 = 8;

fn safetensors_precision(dtype: &str) -> Option<&'static str> {
    Some(match dtype {
        "F64" => "float64",
        "F32" => "float32",
        "F16" => "float16",
        "BF16" => "bfloat16",
        "F8_E4M3" => "float8_e4m3",
        "F8_E5M2" => "float8_e5m2",
        "I64" => "int64",
        "I32" => "int32",
        "I16" => "int16",
        "I8" => "int8",
        "U64" => "uint64",
        "U32" => "uint32",
        "U16" => "uint16",
        "U8" => "uint8",
        "BOOL" => "bool",
        _ => return None,
    })
}

/// Reads the header of the safetensors file at `path` (8-byte little-endian
/// length, then that much JSON) without touching the tensor data.
pub fn read_safetensors_summary(path: &Path) -> Result<TensorSummary> {
    let file = path.display().to_string();
    let mut f = File::open(path).ctx("open", path)?;
    let file_len = f.metadata().ctx("stat", path)?.len();
    let json = read_safetensors_header(&mut f, file_len, &file)?;
    summarize_safetensors_json(&json, &file)
}

/// The same as [`read_safetensors_summary`] for a file already in memory;
/// `file` names it in errors. Property tests and fuzz targets drive this.
pub fn safetensors_summary_from_bytes(bytes: &[u8], file: &str) -> Result<TensorSummary> {
    let json = read_safetensors_header(&mut &bytes[..], bytes.len() as u64, file)?;
    summarize_safetensors_json(&json, file)
}

fn st_err(file: &str, field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::WeightHeader {
        file: file.to_string(),
        format: "safetensors",
        field: field.into(),
        reason: reason.into(),
    }
}

/// Reads the length prefix and the JSON it announces. The length is checked
/// against both the file size and [`MAX_SAFETENSORS_HEADER`] *before* anything
/// is allocated, so a lying prefix costs nothing.
fn read_safetensors_header(r: &mut impl Read, file_len: u64, file: &str) -> Result<Vec<u8>> {
    let mut len = [0u8; 8];
    r.read_exact(&mut len)
        .map_err(|_| st_err(file, "header length", "file is shorter than 8 bytes"))?;
    let n = u64::from_le_bytes(len);
    let available = file_len.saturating_sub(8);
    if n > available || n > MAX_SAFETENSORS_HEADER {
        return Err(st_err(
            file,
            "header length",
            format!(
                "{n} bytes is larger than the {available} bytes that follow it or the {} MiB limit",
                MAX_SAFETENSORS_HEADER >> 20
            ),
        ));
    }
    // n <= 100 MiB, so it fits in usize on every supported target.
    let mut header = vec![0u8; n as usize];
    r.read_exact(&mut header)
        .map_err(|e| st_err(file, "header", format!("cannot read {n} bytes: {e}")))?;
    Ok(header)
}

/// Sums the tensor shapes of a safetensors JSON header. Every product and sum
/// is checked: a shape whose element count overflows u64 cannot describe data
/// in a real file, so it is an error naming the tensor, not a wrapped number.
fn summarize_safetensors_json(header: &[u8], file: &str) -> Result<TensorSummary> {
    let v: serde_json::Value = serde_json::from_slice(header)
        .map_err(|e| st_err(file, "header", format!("not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| st_err(file, "header", "not a JSON object"))?;
    let mut s = TensorSummary::default();
    for (name, t) in obj {
        if name == "__metadata__" {
            continue;
        }
        let field = |f: &str| format!("tensor {name:?} {f}");
        let dtype = t
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| st_err(file, field("dtype"), "missing or not a string"))?;
        let shape = t
            .get("shape")
            .and_then(|d| d.as_array())
            .ok_or_else(|| st_err(file, field("shape"), "missing or not an array"))?;
        let elems = shape
            .iter()
            .try_fold(1u64, |acc, d| d.as_u64().and_then(|d| acc.checked_mul(d)))
            .ok_or_else(|| {
                st_err(
                    file,
                    field("shape"),
                    "dimensions must be non-negative integers whose product fits in 64 bits",
                )
            })?;
        s.add(elems, safetensors_precision(dtype)).ok_or_else(|| {
            st_err(
                file,
                field("shape"),
                "total parameter count overflows 64 bits",
            )
        })?;
    }
    Ok(s)
}

impl TensorSummary {
    /// Adds one tensor's elements; `None` when the total would overflow.
    /// Per-precision counts are sums of a subset of the same tensors, so they
    /// cannot overflow once the total did not.
    fn add(&mut self, elems: u64, precision: Option<&str>) -> Option<()> {
        self.parameters = self.parameters.checked_add(elems)?;
        if let Some(p) = precision {
            let e = self.by_precision.entry(p.to_string()).or_default();
            *e = e.saturating_add(elems);
        }
        Some(())
    }

    /// Merges another file's summary (the first architecture/quantization
    /// seen wins); `None` when the parameter total would overflow 64 bits.
    pub fn merge(&mut self, other: TensorSummary) -> Option<()> {
        self.parameters = self.parameters.checked_add(other.parameters)?;
        for (p, n) in other.by_precision {
            let e = self.by_precision.entry(p).or_default();
            *e = e.saturating_add(n);
        }
        if self.quantization.is_none() {
            self.quantization = other.quantization;
        }
        if self.architecture.is_none() {
            self.architecture = other.architecture;
        }
        Some(())
    }
}

/// llama.cpp `LLAMA_FTYPE` values.
fn gguf_file_type(t: u64) -> Option<&'static str> {
    Some(match t {
        0 => "f32",
        1 => "f16",
        2 => "q4_0",
        3 => "q4_1",
        7 => "q8_0",
        8 => "q5_0",
        9 => "q5_1",
        10 => "q2_k",
        11 => "q3_k_s",
        12 => "q3_k_m",
        13 => "q3_k_l",
        14 => "q4_k_s",
        15 => "q4_k_m",
        16 => "q5_k_s",
        17 => "q5_k_m",
        18 => "q6_k",
        19 => "iq2_xxs",
        20 => "iq2_xs",
        21 => "q2_k_s",
        22 => "iq3_xs",
        23 => "iq3_xxs",
        24 => "iq1_s",
        25 => "iq4_nl",
        26 => "iq3_s",
        27 => "iq3_m",
        28 => "iq2_s",
        29 => "iq2_m",
        30 => "iq4_xs",
        31 => "iq1_m",
        32 => "bf16",
        _ => return None,
    })
}

/// A GGUF header reader that knows how many header bytes may still follow, so
/// every count read from the file can be checked against what could possibly
/// be there before it drives a loop or an allocation.
struct Gguf<R> {
    r: R,
    file: String,
    /// Bytes that may still be read: min(file size, MAX_GGUF_HEADER) - consumed.
    remaining: u64,
}

fn gguf_err(file: &str, field: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::WeightHeader {
        file: file.to_string(),
        format: "GGUF",
        field: field.into(),
        reason: reason.into(),
    }
}

impl<R: Read> Gguf<R> {
    fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> Error {
        gguf_err(&self.file, field, reason)
    }
    fn take(&mut self, n: u64, field: &str) -> Result<()> {
        if n > self.remaining {
            return Err(self.err(
                field,
                format!(
                    "needs {n} more bytes but only {} remain of the file or the {} MiB header limit",
                    self.remaining,
                    MAX_GGUF_HEADER >> 20
                ),
            ));
        }
        self.remaining -= n;
        Ok(())
    }
    fn bytes<const N: usize>(&mut self, field: &str) -> Result<[u8; N]> {
        self.take(N as u64, field)?;
        let mut b = [0u8; N];
        self.r
            .read_exact(&mut b)
            .map_err(|e| self.err(field, format!("truncated: {e}")))?;
        Ok(b)
    }
    fn u32(&mut self, field: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes(field)?))
    }
    fn u64(&mut self, field: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes(field)?))
    }
    /// Fails unless `count` items of at least `min_size` bytes each fit in what
    /// remains: a count of 2^63 is rejected here, not after 2^63 iterations.
    fn check_count(&self, count: u64, min_size: u64, field: &str) -> Result<()> {
        match count.checked_mul(min_size) {
            Some(need) if need <= self.remaining => Ok(()),
            _ => Err(self.err(
                field,
                format!(
                    "count {count} cannot fit in the {} header bytes that remain",
                    self.remaining
                ),
            )),
        }
    }
    fn string(&mut self, field: &str) -> Result<String> {
        let n = self.u64(field)?;
        if n > MAX_GGUF_STRING {
            return Err(self.err(
                field,
                format!(
                    "string of {n} bytes is over the {} MiB limit",
                    MAX_GGUF_STRING >> 20
                ),
            ));
        }
        // Checked against the remaining bytes before allocating.
        self.take(n, field)?;
        let mut b = vec![0u8; n as usize];
        self.r
            .read_exact(&mut b)
            .map_err(|e| self.err(field, format!("truncated: {e}")))?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }
    /// The smallest encoding of one value of `ty`, for [`Self::check_count`].
    fn min_size(ty: u32) -> u64 {
        match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            8 | 10..=12 => 8,
            9 => 12,
            _ => 1,
        }
    }
    /// Reads a value of `ty`; returns it when it is a string or an integer.
    /// `depth` counts enclosing arrays (see [`MAX_GGUF_ARRAY_DEPTH`]).
    fn value(&mut self, ty: u32, field: &str, depth: u32) -> Result<Option<GgufValue>> {
        Ok(match ty {
            0 | 1 | 7 => Some(GgufValue::Int(self.bytes::<1>(field)?[0] as u64)),
            2 | 3 => Some(GgufValue::Int(u16::from_le_bytes(self.bytes(field)?) as u64)),
            4 | 5 => Some(GgufValue::Int(self.u32(field)? as u64)),
            6 => {
                self.bytes::<4>(field)?;
                None
            }
            8 => Some(GgufValue::Str(self.string(field)?)),
            9 => {
                if depth >= MAX_GGUF_ARRAY_DEPTH {
                    return Err(self.err(
                        field,
                        format!("arrays nested deeper than {MAX_GGUF_ARRAY_DEPTH}"),
                    ));
                }
                let inner = self.u32(field)?;
                let n = self.u64(field)?;
                self.check_count(n, Self::min_size(inner), field)?;
                for _ in 0..n {
                    self.value(inner, field, depth + 1)?;
                }
                None
            }
            10 | 11 => Some(GgufValue::Int(self.u64(field)?)),
            12 => {
                self.bytes::<8>(field)?;
                None
            }
            other => return Err(self.err(field, format!("unknown value type {other}"))),
        })
    }
}

enum GgufValue {
    Int(u64),
    Str(String),
}

/// Reads the metadata and tensor infos of the GGUF file at `path`; tensor
/// data is never read.
pub fn read_gguf_summary(path: &Path) -> Result<TensorSummary> {
    let f = File::open(path).ctx("open", path)?;
    let file_len = f.metadata().ctx("stat", path)?.len();
    gguf_summary(
        BufReader::with_capacity(64 << 10, f),
        file_len,
        &path.display().to_string(),
    )
}

/// The same as [`read_gguf_summary`] for a file already in memory; `file`
/// names it in errors. Property tests and fuzz targets drive this.
pub fn gguf_summary_from_bytes(bytes: &[u8], file: &str) -> Result<TensorSummary> {
    gguf_summary(bytes, bytes.len() as u64, file)
}

fn gguf_summary(r: impl Read, file_len: u64, file: &str) -> Result<TensorSummary> {
    let mut g = Gguf {
        r,
        file: file.to_string(),
        remaining: file_len.min(MAX_GGUF_HEADER),
    };
    if &g.bytes::<4>("magic")? != b"GGUF" {
        return Err(g.err("magic", "not a GGUF file"));
    }
    let version = g.u32("version")?;
    if !(2..=3).contains(&version) {
        return Err(g.err("version", format!("{version} is not supported (2 or 3)")));
    }
    let tensors = g.u64("tensor_count")?;
    let kvs = g.u64("metadata_kv_count")?;
    // Smallest key/value: empty key (8) + type (4) + one byte; smallest tensor
    // info: empty name (8) + n_dims (4) + type (4) + offset (8).
    g.check_count(kvs, 13, "metadata_kv_count")?;
    g.check_count(tensors, 24, "tensor_count")?;
    let mut s = TensorSummary::default();
    for i in 0..kvs {
        let key = g.string(&format!("metadata key #{i}"))?;
        let field = format!("metadata {key:?}");
        let ty = g.u32(&field)?;
        match (key.as_str(), g.value(ty, &field, 0)?) {
            ("general.file_type", Some(GgufValue::Int(t))) => {
                s.quantization = gguf_file_type(t).map(str::to_string)
            }
            ("general.architecture", Some(GgufValue::Str(a))) => s.architecture = Some(a),
            _ => {}
        }
    }
    for i in 0..tensors {
        let name = g.string(&format!("tensor #{i} name"))?;
        let field = format!("tensor {name:?}");
        let dims = g.u32(&field)?;
        if dims > MAX_GGUF_DIMS {
            return Err(g.err(
                field,
                format!("{dims} dimensions (at most {MAX_GGUF_DIMS})"),
            ));
        }
        let mut elems = Some(1u64);
        for _ in 0..dims {
            let d = g.u64(&field)?;
            elems = elems.and_then(|e| e.checked_mul(d));
        }
        let elems = elems.ok_or_else(|| {
            g.err(
                &field,
                "element count (product of dimensions) overflows 64 bits",
            )
        })?;
        let ty = g.u32(&field)?;
        g.u64(&field)?;
        let p = match ty {
            0 => Some("float32"),
            1 => Some("float16"),
            30 => Some("bfloat16"),
            _ => None,
        };
        s.add(elems, p)
            .ok_or_else(|| g.err(&field, "total parameter count overflows 64 bits"))?;
    }
    Ok(s)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    pub fn write_gguf(path: &Path, file_type: u32, tensors: &[(&str, &[u64])]) {
        let mut b = Vec::new();
        let s = |b: &mut Vec<u8>, x: &str| {
            b.extend((x.len() as u64).to_le_bytes());
            b.extend(x.as_bytes());
        };
        b.extend(b"GGUF");
        b.extend(3u32.to_le_bytes());
        b.extend((tensors.len() as u64).to_le_bytes());
        b.extend(3u64.to_le_bytes());
        s(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        s(&mut b, "llama");
        s(&mut b, "general.file_type");
        b.extend(4u32.to_le_bytes());
        b.extend(file_type.to_le_bytes());
        s(&mut b, "tokenizer.ggml.scores");
        b.extend(9u32.to_le_bytes());
        b.extend(6u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        b.extend([0u8; 8]);
        for (name, dims) in tensors {
            s(&mut b, name);
            b.extend((dims.len() as u32).to_le_bytes());
            for d in *dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(12u32.to_le_bytes());
            b.extend(0u64.to_le_bytes());
        }
        let mut f = File::create(path).unwrap();
        f.write_all(&b).unwrap();
        f.set_len(b.len() as u64 + (1 << 30)).unwrap();
    }

    #[test]
    fn safetensors_header_only() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.safetensors");
        let header = br#"{"__metadata__":{"format":"pt"},"a":{"dtype":"BF16","shape":[1000,1000],"data_offsets":[0,2000000]},"b":{"dtype":"F32","shape":[10],"data_offsets":[2000000,2000040]}}"#;
        let mut f = File::create(&p).unwrap();
        f.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
        f.write_all(header).unwrap();
        // A 2 GB sparse file: only the header may be read.
        f.set_len(2 << 30).unwrap();
        let s = read_safetensors_summary(&p).unwrap();
        assert_eq!(s.parameters, 1_000_010);
        assert_eq!(s.by_precision["bfloat16"], 1_000_000);
        File::create(&p).unwrap().write_all(&[255u8; 16]).unwrap();
        assert!(
            read_safetensors_summary(&p)
                .unwrap_err()
                .to_string()
                .contains("m.safetensors")
        );
    }

    #[test]
    fn gguf_metadata_and_tensors() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.gguf");
        write_gguf(&p, 15, &[("a", &[4096, 1000]), ("b", &[10])]);
        let s = read_gguf_summary(&p).unwrap();
        assert_eq!(s.parameters, 4_096_010);
        assert_eq!(s.quantization.as_deref(), Some("q4_k_m"));
        assert_eq!(s.architecture.as_deref(), Some("llama"));
        std::fs::write(&p, b"NOPE").unwrap();
        assert!(read_gguf_summary(&p).is_err());
    }

    fn st(header: &str) -> Vec<u8> {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend(header.as_bytes());
        b
    }

    fn field_of(e: Error) -> String {
        match e {
            Error::WeightHeader { field, .. } => field,
            other => panic!("expected a WeightHeader error, got {other}"),
        }
    }

    #[test]
    fn safetensors_overflowing_sizes_are_errors_naming_the_tensor() {
        // Each shape fits in u64, their sum does not: this used to panic in debug builds.
        let half = u64::MAX / 2 + 1;
        let h = format!(
            r#"{{"a":{{"dtype":"F16","shape":[{half}]}},"b":{{"dtype":"F16","shape":[{half}]}}}}"#
        );
        let e = safetensors_summary_from_bytes(&st(&h), "x.safetensors").unwrap_err();
        assert!(e.to_string().starts_with("x.safetensors: "), "{e}");
        assert_eq!(field_of(e), r#"tensor "b" shape"#);
        let h = r#"{"a":{"dtype":"F16","shape":[4294967296,4294967296]}}"#;
        let e = safetensors_summary_from_bytes(&st(h), "x").unwrap_err();
        assert_eq!(field_of(e), r#"tensor "a" shape"#);
        let h = r#"{"a":{"dtype":"F16","shape":[-1]}}"#;
        assert!(safetensors_summary_from_bytes(&st(h), "x").is_err());
    }

    #[test]
    fn safetensors_header_length_is_bounded_by_the_file() {
        for n in [u64::MAX, u64::MAX - 7, 1 << 40, 9] {
            let mut b = n.to_le_bytes().to_vec();
            b.extend(b"{}");
            let e = safetensors_summary_from_bytes(&b, "x").unwrap_err();
            assert_eq!(field_of(e), "header length", "{n}");
        }
        assert_eq!(
            safetensors_summary_from_bytes(&st("{}"), "x").unwrap(),
            TensorSummary::default()
        );
        assert_eq!(
            field_of(safetensors_summary_from_bytes(b"\x01\x00", "x").unwrap_err()),
            "header length"
        );
    }

    /// GGUF v3 preamble with the given counts, for hand-made hostile headers.
    fn gguf(tensors: u64, kvs: u64) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(tensors.to_le_bytes());
        b.extend(kvs.to_le_bytes());
        b
    }

    fn gstr(b: &mut Vec<u8>, s: &str) {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    }

    #[test]
    fn gguf_overflowing_dims_are_errors_naming_the_tensor() {
        let mut b = gguf(1, 0);
        gstr(&mut b, "blk.0");
        b.extend(2u32.to_le_bytes());
        b.extend(u64::MAX.to_le_bytes());
        b.extend(3u64.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        let e = gguf_summary_from_bytes(&b, "m.gguf").unwrap_err();
        assert!(e.to_string().contains("m.gguf: invalid GGUF header"), "{e}");
        assert_eq!(field_of(e), r#"tensor "blk.0""#);

        // Two tensors whose element counts fit but whose sum does not.
        let mut b = gguf(2, 0);
        for name in ["a", "b"] {
            gstr(&mut b, name);
            b.extend(1u32.to_le_bytes());
            b.extend((u64::MAX / 2 + 1).to_le_bytes());
            b.extend(0u32.to_le_bytes());
            b.extend(0u64.to_le_bytes());
        }
        let e = gguf_summary_from_bytes(&b, "m.gguf").unwrap_err();
        assert_eq!(field_of(e), r#"tensor "b""#);

        let mut b = gguf(1, 0);
        gstr(&mut b, "t");
        b.extend(u32::MAX.to_le_bytes());
        b.extend([0u8; 64]);
        let e = gguf_summary_from_bytes(&b, "m.gguf").unwrap_err();
        assert!(e.to_string().contains("dimensions"), "{e}");
    }

    #[test]
    fn gguf_deeply_nested_arrays_are_rejected_without_recursion() {
        // 100k nested arrays of one element each: this overflowed the stack.
        let mut b = gguf(0, 1);
        gstr(&mut b, "deep");
        b.extend(9u32.to_le_bytes());
        for _ in 0..100_000 {
            b.extend(9u32.to_le_bytes());
            b.extend(1u64.to_le_bytes());
        }
        let e = gguf_summary_from_bytes(&b, "m.gguf").unwrap_err();
        assert!(e.to_string().contains("nested deeper than 4"), "{e}");
        assert_eq!(field_of(e), r#"metadata "deep""#);

        // Depth 2 (an array of arrays) is still read.
        let mut b = gguf(0, 2);
        gstr(&mut b, "ok");
        b.extend(9u32.to_le_bytes());
        b.extend(9u32.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        b.extend(4u32.to_le_bytes());
        b.extend(2u64.to_le_bytes());
        b.extend([0u8; 8]);
        gstr(&mut b, "general.architecture");
        b.extend(8u32.to_le_bytes());
        gstr(&mut b, "llama");
        let s = gguf_summary_from_bytes(&b, "m.gguf").unwrap();
        assert_eq!(s.architecture.as_deref(), Some("llama"));
    }

    #[test]
    fn gguf_counts_and_lengths_are_bounded_by_the_file() {
        // Counts that cannot fit in the bytes that follow fail before any loop.
        for (t, k, field) in [
            (0, u64::MAX, "metadata_kv_count"),
            (u64::MAX, 0, "tensor_count"),
            (1 << 40, 0, "tensor_count"),
        ] {
            let e = gguf_summary_from_bytes(&gguf(t, k), "m.gguf").unwrap_err();
            assert_eq!(field_of(e), field);
        }
        // A string length beyond the file is refused before allocating it.
        let mut b = gguf(0, 1);
        b.extend((1u64 << 23).to_le_bytes());
        b.extend([0u8; 64]);
        let e = gguf_summary_from_bytes(&b, "m.gguf").unwrap_err();
        assert_eq!(field_of(e), "metadata key #0");
        let mut b = gguf(0, 1);
        b.extend(u64::MAX.to_le_bytes());
        b.extend([0u8; 64]);
        assert!(
            gguf_summary_from_bytes(&b, "m.gguf")
                .unwrap_err()
                .to_string()
                .contains("limit")
        );
        // An array claiming 2^60 u64 elements.
        let mut b = gguf(0, 1);
        gstr(&mut b, "arr");
        b.extend(9u32.to_le_bytes());
        b.extend(10u32.to_le_bytes());
        b.extend((1u64 << 60).to_le_bytes());
        let e = gguf_summary_from_bytes(&b, "m.gguf").unwrap_err();
        assert!(e.to_string().contains("count 1152921504606846976"), "{e}");
    }
}
