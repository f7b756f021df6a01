//! Which paths the layers of one artifact claim, so two layers (or two tar
//! entries) writing the same file, or one writing a file where another needs
//! a directory, are refused whatever order the layers are extracted in.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{Error, Result};

#[derive(Default)]
struct ClaimSet {
    /// Regular files, symlinks and hardlinks: exactly one claimant each.
    files: HashMap<PathBuf, String>,
    /// Directories, explicit or implied by a file below them.
    dirs: HashMap<PathBuf, String>,
}

/// Paths claimed so far in one extraction.
#[derive(Default)]
pub struct Claims {
    inner: Mutex<ClaimSet>,
}

impl Claims {
    /// Claims `rel` as a file for `layer`; its ancestors become directories.
    pub fn file(&self, layer: &str, rel: &Path) -> Result<()> {
        let mut set = self.inner.lock().unwrap();
        if let Some(other) = set.files.get(rel) {
            return Err(duplicate(layer, rel, other, "both write the file"));
        }
        if let Some(other) = set.dirs.get(rel) {
            return Err(duplicate(
                layer,
                rel,
                other,
                "writes a file where the other needs a directory",
            ));
        }
        if let Some((a, other)) = file_ancestor(&set, rel, false) {
            return Err(prefix_conflict(layer, rel, &other, a));
        }
        mark_dirs(&mut set, rel.parent(), layer);
        set.files.insert(rel.to_path_buf(), layer.to_string());
        Ok(())
    }

    /// Claims `rel` as a directory; repeating a directory is fine (real tars do).
    pub fn dir(&self, layer: &str, rel: &Path) -> Result<()> {
        let mut set = self.inner.lock().unwrap();
        if let Some((a, other)) = file_ancestor(&set, rel, true) {
            return Err(prefix_conflict(layer, rel, &other, a));
        }
        mark_dirs(&mut set, Some(rel), layer);
        Ok(())
    }
}

/// The first proper prefix of `rel` (or `rel` itself, with `include_self`) that is claimed as a file.
fn file_ancestor<'a>(
    set: &ClaimSet,
    rel: &'a Path,
    include_self: bool,
) -> Option<(&'a Path, String)> {
    let mut cur = if include_self {
        Some(rel)
    } else {
        rel.parent()
    };
    while let Some(a) = cur.filter(|a| !a.as_os_str().is_empty()) {
        if let Some(other) = set.files.get(a) {
            return Some((a, other.clone()));
        }
        cur = a.parent();
    }
    None
}

/// Records `from` and its ancestors as directories.
fn mark_dirs(set: &mut ClaimSet, from: Option<&Path>, layer: &str) {
    let mut cur = from;
    while let Some(a) = cur.filter(|a| !a.as_os_str().is_empty()) {
        set.dirs
            .entry(a.to_path_buf())
            .or_insert_with(|| layer.to_string());
        cur = a.parent();
    }
}

fn prefix_conflict(layer: &str, rel: &Path, other: &str, a: &Path) -> Error {
    duplicate(
        layer,
        rel,
        other,
        &format!(
            "needs {} to be a directory, but the other writes it as a file",
            a.display()
        ),
    )
}

fn duplicate(layer: &str, rel: &Path, other: &str, why: &str) -> Error {
    let reason = if other == layer {
        format!("{} appears twice in this layer: it {why}", rel.display())
    } else {
        format!("{} conflicts with layer {other}: it {why}", rel.display())
    };
    Error::UnsafePath {
        layer: layer.to_string(),
        reason: format!("duplicate path: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_and_prefixes_are_refused_in_any_order() {
        let c = Claims::default();
        c.file("A", Path::new("a/b.bin")).unwrap();
        assert!(c.file("B", Path::new("a/b.bin")).is_err());
        assert!(c.file("B", Path::new("a")).is_err());
        assert!(c.file("B", Path::new("a/b.bin/c")).is_err());
        c.dir("B", Path::new("a")).unwrap();
        c.dir("B", Path::new("a")).unwrap();
        let c = Claims::default();
        c.file("A", Path::new("x/y/z")).unwrap();
        let e = c.file("B", Path::new("x/y")).unwrap_err().to_string();
        assert!(
            e.contains("B") && e.contains("x/y") && e.contains("A"),
            "{e}"
        );
    }
}
