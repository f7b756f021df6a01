//! Build-context resolution: Modelfile patterns → the files to pack.
//!
//! Better than modctl's `filepath.Glob`: `**` globs, a directory means every
//! file below it, a file matched twice is one layer (first kind wins), hidden
//! files are only taken when a pattern names them, and symlinks are followed
//! only when their target stays inside the context. Only metadata is read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use globset::GlobBuilder;

use crate::error::{Error, IoContext, Result};
use crate::media::LayerKind;

use super::parser::{Entry, Modelfile};

/// A file selected for packing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextFile {
    /// '/'-separated path relative to the context.
    pub rel_path: String,
    /// Where to read it (the symlink target for links inside the context).
    pub abs_path: PathBuf,
    pub kind: LayerKind,
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
    /// Modelfile line that selected it.
    pub line: usize,
}

struct Candidate {
    rel: String,
    abs: PathBuf,
    size: u64,
    mode: u32,
    hidden: bool,
}

/// A symlink whose target leaves the context.
struct Escape {
    rel: String,
    target: PathBuf,
}

fn is_glob(p: &str) -> bool {
    p.contains(['*', '?', '[', '{'])
}

fn hidden(rel: &str) -> bool {
    rel.split('/').any(|c| c.starts_with('.'))
}

/// Walks the context once, following symlinks that stay inside it.
fn scan(root: &Path) -> Result<(Vec<Candidate>, Vec<String>, Vec<Escape>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut files = Vec::new();
    let mut dirs = Vec::new();
    let mut escapes = Vec::new();
    let walker = walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name();
    let mut stack = vec![(walker.into_iter(), String::new())];
    while let Some((it, prefix)) = stack.last_mut() {
        let Some(entry) = it.next() else {
            stack.pop();
            continue;
        };
        let prefix = prefix.clone();
        let entry =
            entry.map_err(|e| Error::Workspace(format!("cannot read the build context: {e}")))?;
        if entry.depth() == 0 {
            continue;
        }
        let rel_local = entry
            .path()
            .strip_prefix(it_root(&entry, root, &prefix))
            .unwrap_or(entry.path())
            .to_string_lossy()
            .replace('\\', "/");
        let rel = if prefix.is_empty() {
            rel_local
        } else {
            format!("{prefix}/{rel_local}")
        };
        let ft = entry.file_type();
        let (abs, meta) = if ft.is_symlink() {
            let target =
                std::fs::canonicalize(entry.path()).ctx("resolve symlink", entry.path())?;
            if !target.starts_with(root) {
                escapes.push(Escape { rel, target });
                continue;
            }
            let m = std::fs::metadata(&target).ctx("stat", &target)?;
            if m.is_dir() {
                // A directory symlink inside the context: walk it under this path.
                dirs.push(rel.clone());
                stack.push((
                    walkdir::WalkDir::new(&target)
                        .follow_links(false)
                        .sort_by_file_name()
                        .into_iter(),
                    rel,
                ));
                continue;
            }
            (target, m)
        } else {
            let m = entry.metadata().map_err(|e| {
                Error::Workspace(format!("cannot stat {}: {e}", entry.path().display()))
            })?;
            (entry.path().to_path_buf(), m)
        };
        if meta.is_dir() {
            dirs.push(rel);
        } else if meta.is_file() {
            files.push(Candidate {
                hidden: hidden(&rel),
                rel,
                abs,
                size: meta.len(),
                mode: meta.permissions().mode() & 0o7777,
            });
        }
    }
    Ok((files, dirs, escapes))
}

/// The directory a walker was started from (the context, or a linked directory).
fn it_root<'a>(entry: &'a walkdir::DirEntry, root: &'a Path, prefix: &str) -> &'a Path {
    if prefix.is_empty() {
        return root;
    }
    let mut p = entry.path();
    for _ in 0..entry.depth() {
        p = p.parent().unwrap_or(p);
    }
    p
}

/// Resolves every Modelfile entry against `context_dir`.
pub fn resolve(context_dir: &Path, modelfile: &Modelfile) -> Result<Vec<ContextFile>> {
    let root = std::fs::canonicalize(context_dir).ctx("open build context", context_dir)?;
    let (files, _dirs, escapes) = scan(&root)?;
    let mut chosen: BTreeMap<String, ContextFile> = BTreeMap::new();
    for entry in &modelfile.entries {
        let matched = match_entry(&root, entry, &files, &escapes)?;
        if matched.is_empty() {
            return Err(Error::Workspace(format!(
                "Modelfile:{}: {} {} matches no file in {}",
                entry.line,
                entry.kind.modelfile_command(),
                entry.pattern,
                context_dir.display()
            )));
        }
        for c in matched {
            chosen.entry(c.rel.clone()).or_insert_with(|| ContextFile {
                rel_path: c.rel.clone(),
                abs_path: c.abs.clone(),
                kind: entry.kind,
                size: c.size,
                mode: c.mode,
                line: entry.line,
            });
        }
    }
    let mut out: Vec<ContextFile> = chosen.into_values().collect();
    out.sort_by(|a, b| (a.kind, &a.rel_path).cmp(&(b.kind, &b.rel_path)));
    Ok(out)
}

fn match_entry<'a>(
    root: &Path,
    entry: &Entry,
    files: &'a [Candidate],
    escapes: &[Escape],
) -> Result<Vec<&'a Candidate>> {
    let pattern = entry.pattern.trim_start_matches("./").trim_end_matches('/');
    let where_ = |msg: String| {
        Error::Workspace(format!(
            "Modelfile:{}: {} {}: {msg}",
            entry.line,
            entry.kind.modelfile_command(),
            entry.pattern
        ))
    };
    if pattern.is_empty() || pattern == "." {
        return Ok(files.iter().filter(|f| !f.hidden).collect());
    }
    if pattern.starts_with('/') || pattern.split('/').any(|c| c == "..") {
        return Err(where_(
            "patterns are relative to the build context and cannot leave it".into(),
        ));
    }
    let explicit_hidden = hidden(pattern);
    let escape_hit = |rel: &str| {
        escapes
            .iter()
            .find(|e| e.rel == rel || rel.starts_with(&format!("{}/", e.rel)))
    };
    if !is_glob(pattern) {
        if let Some(e) = escape_hit(pattern) {
            return Err(where_(format!(
                "{} is a symlink to {}, outside the build context",
                e.rel,
                e.target.display()
            )));
        }
        let under = format!("{pattern}/");
        let hits: Vec<&Candidate> = files
            .iter()
            .filter(|f| {
                f.rel == pattern
                    || (f.rel.starts_with(&under)
                        && (explicit_hidden || !hidden(&f.rel[under.len()..])))
            })
            .collect();
        if hits.is_empty() && !root.join(pattern).exists() {
            return Err(where_(format!(
                "no such file or directory in {}",
                root.display()
            )));
        }
        return Ok(hits);
    }
    let glob = GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| where_(format!("invalid pattern: {e}")))?
        .compile_matcher();
    if let Some(e) = escapes.iter().find(|e| glob.is_match(&e.rel)) {
        return Err(where_(format!(
            "matches {}, a symlink to {} outside the build context",
            e.rel,
            e.target.display()
        )));
    }
    Ok(files
        .iter()
        .filter(|f| explicit_hidden || !f.hidden)
        .filter(|f| {
            // A file matches directly, or through a matching ancestor directory.
            glob.is_match(&f.rel) || {
                let parts: Vec<&str> = f.rel.split('/').collect();
                (1..parts.len()).any(|n| glob.is_match(parts[..n].join("/")))
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modelfile::parse;
    use std::fs;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for f in [
            "config.json",
            "a/b/model-1.safetensors",
            "a/model-2.safetensors",
            "docs/README.md",
            "docs/.hidden",
            ".git/config",
            "scripts/run.sh",
        ] {
            let p = d.path().join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, f).unwrap();
        }
        d
    }

    fn rels(v: &[ContextFile]) -> Vec<(&str, LayerKind)> {
        v.iter().map(|f| (f.rel_path.as_str(), f.kind)).collect()
    }

    #[test]
    fn globs_dirs_dedupe_and_order() {
        let d = tree();
        let mf = parse(
            "MODEL **/*.safetensors\nCONFIG *.json\nDOC docs\nCODE scripts/\nCODE **/run.sh\n",
            "Modelfile",
        )
        .unwrap();
        let got = resolve(d.path(), &mf).unwrap();
        assert_eq!(
            rels(&got),
            vec![
                ("config.json", LayerKind::WeightConfig),
                ("a/b/model-1.safetensors", LayerKind::Weight),
                ("a/model-2.safetensors", LayerKind::Weight),
                ("scripts/run.sh", LayerKind::Code),
                ("docs/README.md", LayerKind::Doc),
            ]
        );
    }

    #[test]
    fn first_kind_wins_and_hidden_needs_explicit_pattern() {
        let d = tree();
        let mf = parse(
            "DOC docs/README.md\nCODE docs/**\nCONFIG .git/config\n",
            "Modelfile",
        )
        .unwrap();
        let got = resolve(d.path(), &mf).unwrap();
        assert_eq!(
            rels(&got),
            vec![
                (".git/config", LayerKind::WeightConfig),
                ("docs/README.md", LayerKind::Doc)
            ]
        );
    }

    #[test]
    fn missing_files_and_escapes_are_errors_naming_the_line() {
        let d = tree();
        let e = resolve(
            d.path(),
            &parse("NAME x\nMODEL nope.bin\n", "Modelfile").unwrap(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("Modelfile:2:") && e.contains("nope.bin"), "{e}");
        let e = resolve(d.path(), &parse("MODEL *.gguf\n", "Modelfile").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("matches no file"), "{e}");
        let e = resolve(d.path(), &parse("MODEL ../x\n", "Modelfile").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot leave"), "{e}");
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret"), "s").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), d.path().join("link.bin"))
            .unwrap();
        let e = resolve(d.path(), &parse("MODEL link.bin\n", "Modelfile").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside the build context"), "{e}");
        let e = resolve(d.path(), &parse("MODEL *.bin\n", "Modelfile").unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside the build context"), "{e}");
    }

    #[test]
    fn symlinks_inside_the_context_are_followed() {
        let d = tree();
        std::os::unix::fs::symlink(
            d.path().join("a/model-2.safetensors"),
            d.path().join("alias.safetensors"),
        )
        .unwrap();
        std::os::unix::fs::symlink(d.path().join("docs"), d.path().join("docs-link")).unwrap();
        let got = resolve(
            d.path(),
            &parse("MODEL alias.safetensors\nDOC docs-link\n", "Modelfile").unwrap(),
        )
        .unwrap();
        assert_eq!(
            rels(&got),
            vec![
                ("alias.safetensors", LayerKind::Weight),
                ("docs-link/README.md", LayerKind::Doc)
            ]
        );
        assert_eq!(
            fs::read(&got[0].abs_path).unwrap(),
            b"a/model-2.safetensors"
        );
    }
}
