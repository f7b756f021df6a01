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

const MAX_SAFETENSORS_HEADER: u64 = 100 << 20;

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

pub fn read_safetensors_summary(path: &Path) -> Result<TensorSummary> {
    let bad = |m: String| {
        Error::Artifact(format!(
            "{}: not a valid safetensors file: {m}",
            path.display()
        ))
    };
    let mut f = File::open(path).ctx("open", path)?;
    let file_len = f.metadata().ctx("stat", path)?.len();
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| bad("shorter than its 8-byte header length".into()))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_SAFETENSORS_HEADER || n + 8 > file_len {
        return Err(bad(format!(
            "header length {n} is larger than the file or the 100 MiB limit"
        )));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).ctx("read header", path)?;
    let v: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("header is not a JSON object".into()))?;
    let mut s = TensorSummary::default();
    for (name, t) in obj {
        if name == "__metadata__" {
            continue;
        }
        let dtype = t
            .get("dtype")
            .and_then(|d| d.as_str())
            .ok_or_else(|| bad(format!("tensor {name} has no dtype")))?;
        let shape = t
            .get("shape")
            .and_then(|d| d.as_array())
            .ok_or_else(|| bad(format!("tensor {name} has no shape")))?;
        let elems = shape
            .iter()
            .try_fold(1u64, |acc, d| d.as_u64().and_then(|d| acc.checked_mul(d)))
            .ok_or_else(|| bad(format!("tensor {name} has an invalid shape")))?;
        s.parameters += elems;
        if let Some(p) = safetensors_precision(dtype) {
            *s.by_precision.entry(p.to_string()).or_default() += elems;
        }
    }
    Ok(s)
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

struct Gguf<R> {
    r: R,
    path: String,
}

impl<R: Read> Gguf<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut b = [0u8; N];
        self.r
            .read_exact(&mut b)
            .map_err(|_| Error::Artifact(format!("{}: GGUF header is truncated", self.path)))?;
        Ok(b)
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    fn string(&mut self) -> Result<String> {
        let n = self.u64()?;
        if n > 1 << 24 {
            return Err(Error::Artifact(format!(
                "{}: GGUF string of {n} bytes is implausible",
                self.path
            )));
        }
        let mut b = vec![0u8; n as usize];
        self.r
            .read_exact(&mut b)
            .map_err(|_| Error::Artifact(format!("{}: GGUF header is truncated", self.path)))?;
        Ok(String::from_utf8_lossy(&b).into_owned())
    }
    /// Reads a value of `ty`; returns it when it is a string or an integer.
    fn value(&mut self, ty: u32) -> Result<Option<GgufValue>> {
        Ok(match ty {
            0 | 1 | 7 => Some(GgufValue::Int(self.bytes::<1>()?[0] as u64)),
            2 | 3 => Some(GgufValue::Int(u16::from_le_bytes(self.bytes()?) as u64)),
            4 | 5 => Some(GgufValue::Int(self.u32()? as u64)),
            6 => {
                self.bytes::<4>()?;
                None
            }
            8 => Some(GgufValue::Str(self.string()?)),
            9 => {
                let inner = self.u32()?;
                let n = self.u64()?;
                for _ in 0..n {
                    self.value(inner)?;
                }
                None
            }
            10 | 11 => Some(GgufValue::Int(self.u64()?)),
            12 => {
                self.bytes::<8>()?;
                None
            }
            other => {
                return Err(Error::Artifact(format!(
                    "{}: unknown GGUF value type {other}",
                    self.path
                )));
            }
        })
    }
}

enum GgufValue {
    Int(u64),
    Str(String),
}

pub fn read_gguf_summary(path: &Path) -> Result<TensorSummary> {
    let f = File::open(path).ctx("open", path)?;
    let mut g = Gguf {
        r: BufReader::with_capacity(64 << 10, f),
        path: path.display().to_string(),
    };
    if &g.bytes::<4>()? != b"GGUF" {
        return Err(Error::Artifact(format!(
            "{}: not a GGUF file (bad magic)",
            g.path
        )));
    }
    let version = g.u32()?;
    if !(2..=3).contains(&version) {
        return Err(Error::Artifact(format!(
            "{}: GGUF version {version} is not supported (2 or 3)",
            g.path
        )));
    }
    let tensors = g.u64()?;
    let kvs = g.u64()?;
    let mut s = TensorSummary::default();
    for _ in 0..kvs {
        let key = g.string()?;
        let ty = g.u32()?;
        match (key.as_str(), g.value(ty)?) {
            ("general.file_type", Some(GgufValue::Int(t))) => {
                s.quantization = gguf_file_type(t).map(str::to_string)
            }
            ("general.architecture", Some(GgufValue::Str(a))) => s.architecture = Some(a),
            _ => {}
        }
    }
    for _ in 0..tensors {
        g.string()?;
        let dims = g.u32()?;
        let mut elems = 1u64;
        for _ in 0..dims {
            elems = elems.saturating_mul(g.u64()?);
        }
        let ty = g.u32()?;
        g.u64()?;
        s.parameters += elems;
        let p = match ty {
            0 => Some("float32"),
            1 => Some("float16"),
            30 => Some("bfloat16"),
            _ => None,
        };
        if let Some(p) = p {
            *s.by_precision.entry(p.into()).or_default() += elems;
        }
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
}
