//! Path sanitising for extraction.

use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Turns an annotation or tar entry path into a safe relative path, refusing
/// absolute paths, `..`, empty paths, NUL bytes and backslashes (which mean
/// separators to Windows-built producers).
pub fn safe_relative_path(layer: &str, p: &str) -> Result<PathBuf> {
    let refuse = |why: &str| Error::UnsafePath {
        layer: layer.to_string(),
        reason: format!("path {p:?} {why}"),
    };
    if p.is_empty() {
        return Err(refuse("is empty"));
    }
    if p.contains('\0') {
        return Err(refuse("contains a NUL byte"));
    }
    if p.contains('\\') {
        return Err(refuse("contains a backslash"));
    }
    if p.starts_with('/') {
        return Err(refuse("is absolute"));
    }
    let mut out = PathBuf::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err(refuse("contains '..'")),
            Component::RootDir | Component::Prefix(_) => return Err(refuse("is absolute")),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(refuse("names the output directory itself"));
    }
    Ok(out)
}

/// Creates the parent directories of `out/rel`, refusing to pass through any
/// existing symlink (which could point outside `out`). Returns `out/rel`.
pub(super) fn prepare_parent(layer: &str, out: &Path, rel: &Path) -> Result<PathBuf> {
    let mut cur = out.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for c in &parts[..parts.len().saturating_sub(1)] {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::UnsafePath {
                    layer: layer.to_string(),
                    reason: format!(
                        "{} passes through the symlink {}",
                        rel.display(),
                        cur.display()
                    ),
                });
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::UnsafePath {
                    layer: layer.to_string(),
                    reason: format!(
                        "{} needs {} to be a directory, but it is a file",
                        rel.display(),
                        cur.display()
                    ),
                });
            }
            Err(_) => fs::create_dir(&cur)
                .or_else(|e| if cur.is_dir() { Ok(()) } else { Err(e) })
                .ctx("create directory", &cur)?,
        }
    }
    let dest = out.join(rel);
    if let Ok(m) = fs::symlink_metadata(&dest)
        && m.is_dir()
    {
        return Err(Error::UnsafePath {
            layer: layer.to_string(),
            reason: format!("{} exists and is a directory", dest.display()),
        });
    }
    Ok(dest)
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
    }

    #[test]
    fn refuses_paths_through_symlinks() {
        let out = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), out.path().join("link")).unwrap();
        let err = prepare_parent("L", out.path(), Path::new("link/evil")).unwrap_err();
        assert!(err.to_string().contains("symlink"), "{err}");
        assert!(prepare_parent("L", out.path(), Path::new("ok/dir/file")).is_ok());
        assert!(out.path().join("ok/dir").is_dir());
    }
}
