//! The ModelPack config (`application/vnd.cncf.model.config.v1+json`) and the
//! per-layer file metadata annotation.
//!
//! We always write camelCase HEAD-schema configs with `"config": {}` present;
//! on read we accept the v0.0.6 snake_case spellings, a missing `config`, and
//! v0.0.7's `capabilities.embedding`.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelConfig {
    #[serde(default)]
    pub descriptor: ModelDescriptor,
    #[serde(default)]
    pub config: ModelSettings,
    pub modelfs: ModelFs,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelDescriptor {
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "created_at")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authors: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub family: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "docURL",
        alias = "doc_url"
    )]
    pub doc_url: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "sourceURL",
        alias = "source_url"
    )]
    pub source_url: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        rename = "datasetsURL",
        alias = "datasets_url"
    )]
    pub datasets_url: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub licenses: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "param_size")]
    pub param_size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "input_types"
    )]
    pub input_types: Option<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "output_types"
    )]
    pub output_types: Option<Vec<String>>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        alias = "knowledge_cutoff"
    )]
    pub knowledge_cutoff: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none", alias = "tool_usage")]
    pub tool_usage: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub languages: Option<Vec<String>>,
    /// Written by v0.0.7-pinned producers; read and dropped on write.
    #[serde(default, skip_serializing)]
    pub embedding: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModelFs {
    #[serde(rename = "type")]
    pub fs_type: String,
    #[serde(alias = "diff_ids")]
    pub diff_ids: Vec<Digest>,
}

impl Default for ModelFs {
    fn default() -> Self {
        ModelFs {
            fs_type: "layers".into(),
            diff_ids: Vec::new(),
        }
    }
}

impl ModelConfig {
    pub fn parse(bytes: &[u8], what: &str) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| Error::json(what, e))
    }

    /// Compact camelCase JSON in a fixed key order.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("config serialisation cannot fail")
    }
}

/// The `org.cncf.model.file.metadata+json` annotation value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMetadata {
    pub name: String,
    pub mode: u32,
    #[serde(default)]
    pub uid: u32,
    #[serde(default)]
    pub gid: u32,
    pub size: u64,
    /// RFC 3339.
    #[serde(default = "epoch_string")]
    pub mtime: String,
    /// Producers disagree on the encoding (0 vs b'0'); any value is accepted.
    #[serde(default)]
    pub typeflag: u8,
}

fn epoch_string() -> String {
    "1970-01-01T00:00:00Z".into()
}

impl FileMetadata {
    pub fn to_annotation(&self) -> String {
        serde_json::to_string(self).expect("metadata serialisation cannot fail")
    }

    /// Seconds since the epoch, if `mtime` parses.
    pub fn mtime_unix(&self) -> Option<i64> {
        chrono::DateTime::parse_from_rfc3339(&self.mtime)
            .ok()
            .map(|t| t.timestamp())
    }

    /// The mtime with its sub-second part (modctl writes nanoseconds), if it parses.
    pub fn mtime_time(&self) -> Option<std::time::SystemTime> {
        let t = chrono::DateTime::parse_from_rfc3339(&self.mtime).ok()?;
        let secs = t.timestamp();
        let nanos = t.timestamp_subsec_nanos();
        let base = if secs >= 0 {
            std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_secs(secs as u64))?
        } else {
            std::time::UNIX_EPOCH
                .checked_sub(std::time::Duration::from_secs(secs.unsigned_abs()))?
        };
        base.checked_add(std::time::Duration::from_nanos(nanos as u64))
    }
}

/// Formats a time as RFC 3339 in UTC with its sub-second digits when it has
/// any (`2026-12-03T09:41:07.123456789Z`), as modctl writes file mtimes.
pub fn rfc3339_nanos(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Formats a unix timestamp as RFC 3339 in UTC with second precision (`1970-01-01T00:00:00Z`).
pub fn rfc3339(unix_seconds: i64) -> String {
    chrono::DateTime::from_timestamp(unix_seconds, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_round_trips() {
        let raw = include_str!("../spec/modelpack-example-config.json");
        let c = ModelConfig::parse(raw.as_bytes(), "example").unwrap();
        assert_eq!(c.modelfs.fs_type, "layers");
        let again = ModelConfig::parse(&c.to_bytes(), "again").unwrap();
        assert_eq!(c, again);
    }

    #[test]
    fn reads_snake_case_and_writes_camel_case() {
        let raw = r#"{"descriptor":{},"config":{"capabilities":{"tool_usage":true}},"modelfs":{"type":"layers","diff_ids":["sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"]}}"#;
        let c = ModelConfig::parse(raw.as_bytes(), "snake").unwrap();
        let out = String::from_utf8(c.to_bytes()).unwrap();
        assert!(out.contains("\"diffIds\""), "{out}");
        assert!(out.contains("\"toolUsage\":true"), "{out}");
    }

    #[test]
    fn empty_config_object_is_always_written() {
        let c = ModelConfig::default();
        assert_eq!(
            String::from_utf8(c.to_bytes()).unwrap(),
            r#"{"descriptor":{},"config":{},"modelfs":{"type":"layers","diffIds":[]}}"#
        );
    }

    #[test]
    fn metadata_annotation_shape() {
        let m = FileMetadata {
            name: "a".into(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            size: 3,
            mtime: rfc3339(0),
            typeflag: 0,
        };
        assert_eq!(
            m.to_annotation(),
            r#"{"name":"a","mode":420,"uid":0,"gid":0,"size":3,"mtime":"1970-01-01T00:00:00Z","typeflag":0}"#
        );
        assert_eq!(m.mtime_unix(), Some(0));
    }
}
