//! Path rules for extraction: what an artifact may name, and where its symlinks may point.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// Turns an annotation or tar entry path into a safe relative path, refusing
/// absolute paths, `..`, empty paths, NUL bytes and backslashes (which mean
/// separators to Windows-built producers).
pub fn safe_relative_path(layer: &str, p: &str) -> Result<PathBuf> {
    let out = clean_relative(layer, p)?;
    if out.as_os_str().is_empty() {
        return Err(refuse(layer, p, "names the output directory itself"));
    }
    Ok(out)
}

/// Like [`safe_relative_path`] but `.` / `./` (the root itself) gives an empty path.
pub(super) fn clean_relative(layer: &str, p: &str) -> Result<PathBuf> {
    if p.is_empty() {
        return Err(refuse(layer, p, "is empty"));
    }
    if p.contains('\0') {
        return Err(refuse(layer, p, "contains a NUL byte"));
    }
    if p.contains('\\') {
        return Err(refuse(layer, p, "contains a backslash"));
    }
    if p.starts_with('/') {
        return Err(refuse(layer, p, "is absolute"));
    }
    let mut out = PathBuf::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err(refuse(layer, p, "contains '..'")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse(layer, p, "is absolute"));
            }
        }
    }
    Ok(out)
}

fn refuse(layer: &str, p: &str, why: &str) -> Error {
    Error::UnsafePath {
        layer: layer.to_string(),
        reason: format!("path {p:?} {why}"),
    }
}

/// A symlink at `rel` pointing to `target` must resolve inside the output
/// directory — by construction, not by a lexical guess: the target is
/// relative, its `..` components all come first and climb no higher than
/// the output directory, and no `..` follows a name. The symlink's own
/// directory is a real directory (extraction never walks through symlinks),
/// so the leading `..`s climb real directories; every name after them is a
/// real entry or another symlink obeying the same rule. So whatever later
/// entries turn a name into, resolution stays inside (the lexical check it
/// replaces let `up -> ../../..` then `esc -> up/../../etc` out).
pub(super) fn check_symlink_target(layer: &str, rel: &Path, target: &Path) -> Result<()> {
    let refuse = |why: &str| Error::UnsafePath {
        layer: layer.to_string(),
        reason: format!("symlink {} -> {} {why}", rel.display(), target.display()),
    };
    let t = target.as_os_str();
    if t.is_empty() {
        return Err(refuse("has an empty target"));
    }
    if t.as_encoded_bytes().contains(&0) || t.as_encoded_bytes().contains(&b'\\') {
        return Err(refuse("has a NUL byte or backslash in its target"));
    }
    let depth = rel.components().count().saturating_sub(1);
    let mut ups = 0usize;
    let mut seen_name = false;
    for c in target.components() {
        match c {
            Component::ParentDir if seen_name => {
                return Err(refuse(
                    "uses '..' after a name (it could climb out through another symlink)",
                ));
            }
            Component::ParentDir => {
                ups += 1;
                if ups > depth {
                    return Err(refuse("points outside the output directory"));
                }
            }
            Component::CurDir => {}
            Component::Normal(_) => seen_name = true,
            Component::RootDir | Component::Prefix(_) => {
                return Err(refuse("is absolute (points outside the output directory)"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_escapes() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a\\b",
            "./",
            "a/\0b",
        ] {
            assert!(safe_relative_path("L", bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            safe_relative_path("L", "./a/b.txt").unwrap(),
            PathBuf::from("a/b.txt")
        );
        let e = safe_relative_path("sha256:x (p)", "../x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sha256:x (p)") && e.contains(".."), "{e}");
        assert_eq!(clean_relative("L", "./").unwrap(), PathBuf::new());
    }

    #[test]
    fn symlink_targets_stay_inside_by_construction() {
        let ok = |rel: &str, t: &str| check_symlink_target("L", Path::new(rel), Path::new(t));
        assert!(ok("a/b/c/d/up", "../../../..").is_ok());
        assert!(ok("esc", "a/b/c/d/up/../../../../../etc").is_err());
        assert!(ok("a/link", "../../x").is_err());
        assert!(ok("a/link", "../x").is_ok());
        assert!(ok("link", "/etc").is_err());
        assert!(ok("link", "sub/./file").is_ok());
        assert!(ok("link", "sub/../file").is_err());
        assert!(ok("blobs/m.safetensors", "../store/abc").is_ok());
    }
}
