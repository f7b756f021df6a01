//! Filesystem writes that cannot leave their target directory.
//!
//! Every extraction and download destination is reached through a
//! [`ConfinedDir`]: an open directory handle. Paths below it are walked one
//! component at a time with `openat(…, O_NOFOLLOW | O_DIRECTORY)`, files are
//! created with `O_CREAT | O_EXCL | O_NOFOLLOW`, and renames, links, symlinks,
//! chmods and utimes act on handles or `*at` calls relative to a handle. So a
//! symlink planted by an earlier entry, by another local user, or by a
//! concurrent process is never followed: the walk fails with a clear error
//! instead of writing through it. This is the guarantee `openat2` gives with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, built from calls every Linux kernel
//! has (rustix wraps them without `unsafe` here; it is already in the tree
//! through tempfile).
//!
//! Callers pass paths already cleaned by [`crate::extract::safe_relative_path`]
//! (no `..`, not absolute); the walk re-checks each component anyway.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use crate::error::{Error, Result};

/// An open directory that all operations stay beneath. `display` is only for messages.
#[derive(Debug)]
pub struct ConfinedDir {
    fd: OwnedFd,
    display: PathBuf,
}

/// What is at a name inside a directory (never following a symlink).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File { size: u64 },
    Dir,
    Symlink,
    Other,
}

fn errno(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

/// The process umask, read once from /proc (reading it with umask(2) would
/// race with other threads creating files).
pub fn umask() -> u32 {
    static UMASK: OnceLock<u32> = OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .unwrap_or(0o022)
    })
}

/// A mode from an artifact made safe to apply: permission bits only (no
/// setuid, setgid or sticky), within the umask, never world-writable, and
/// always readable (and for directories enterable) by the owner so a later
/// re-extract can check and replace what it wrote.
pub fn sanitize_mode(mode: u32, is_dir: bool) -> u32 {
    let m = mode & 0o777 & !umask() & !0o002;
    if is_dir { m | 0o700 } else { m | 0o400 }
}

fn check_name(name: &OsStr) -> io::Result<()> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    Ok(())
}

impl ConfinedDir {
    /// Opens (creating it and its parents when `create`) the root directory
    /// the user named. The user's own path may contain symlinks; nothing below it may.
    pub fn open_root(path: &Path, create: bool) -> Result<ConfinedDir> {
        if create {
            std::fs::create_dir_all(path).map_err(|e| Error::io("create directory", path, e))?;
        }
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("open directory", path, errno(e)))?;
        Ok(ConfinedDir {
            fd,
            display: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.display
    }

    /// Another handle on the same directory.
    pub fn try_clone(&self) -> Result<ConfinedDir> {
        Ok(ConfinedDir {
            fd: self
                .fd
                .try_clone()
                .map_err(|e| Error::io("duplicate handle", &self.display, e))?,
            display: self.display.clone(),
        })
    }

    fn child_display(&self, name: &OsStr) -> PathBuf {
        self.display.join(name)
    }

    /// What is at `name` in this directory, without following symlinks.
    pub fn kind(&self, name: &OsStr) -> Result<Option<EntryKind>> {
        check_name(name).map_err(|e| Error::io("stat", self.child_display(name), e))?;
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(match FileType::from_raw_mode(st.st_mode) {
                FileType::RegularFile => EntryKind::File {
                    size: st.st_size as u64,
                },
                FileType::Directory => EntryKind::Dir,
                FileType::Symlink => EntryKind::Symlink,
                _ => EntryKind::Other,
            })),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::io("stat", self.child_display(name), errno(e))),
        }
    }

    /// Opens the directory `name` in this one, refusing a symlink or a non-directory.
    fn open_child_dir(&self, name: &OsStr) -> io::Result<OwnedFd> {
        check_name(name)?;
        rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)
    }

    /// Walks to `rel` below this directory, creating missing directories
    /// when `create` (recording each one created in `created`, so a failed
    /// extraction can remove them again). Refuses any component that is a
    /// symlink or not a directory, naming it.
    pub fn subdir(
        &self,
        rel: &Path,
        create: bool,
        mut created: Option<&mut Vec<PathBuf>>,
    ) -> Result<ConfinedDir> {
        let mut cur = self.try_clone()?;
        let mut walked = PathBuf::new();
        for c in rel.components() {
            let name = match c {
                Component::Normal(n) => n,
                Component::CurDir => continue,
                _ => {
                    return Err(Error::UnsafePath {
                        layer: self.display.display().to_string(),
                        reason: format!("{} is not a path below the directory", rel.display()),
                    });
                }
            };
            walked.push(name);
            let shown = self.display.join(&walked);
            let fd = match cur.open_child_dir(name) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc_enoent()) && create => {
                    match rustix::fs::mkdirat(&cur.fd, name, Mode::from_raw_mode(0o755)) {
                        Ok(()) => {
                            if let Some(c) = created.as_deref_mut() {
                                c.push(walked.clone());
                            }
                        }
                        Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(Error::io("create directory", &shown, errno(e))),
                    }
                    cur.open_child_dir(name)
                        .map_err(|e| refuse_component(&cur, name, &shown, e))?
                }
                Err(e) => return Err(refuse_component(&cur, name, &shown, e)),
            };
            cur = ConfinedDir { fd, display: shown };
        }
        Ok(cur)
    }

    /// Creates a new file with a unique hidden name (`O_EXCL | O_NOFOLLOW`, mode 0600).
    pub fn create_temp(&self, prefix: &str) -> Result<(OsString, File)> {
        for _ in 0..16 {
            let name = OsString::from(format!(
                ".{prefix}-{}-{:016x}",
                std::process::id(),
                rand::random::<u64>()
            ));
            match rustix::fs::openat(
                &self.fd,
                name.as_os_str(),
                OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => return Ok((name, File::from(fd))),
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => {
                    return Err(Error::io(
                        "create temp file",
                        self.child_display(&name),
                        errno(e),
                    ));
                }
            }
        }
        Err(Error::Store {
            path: self.display.clone(),
            message: "could not create a unique temp file".into(),
        })
    }

    /// Opens `name` for reading, or for read/write when `write`; never through a symlink.
    pub fn open_file(&self, name: &OsStr, write: bool) -> Result<File> {
        check_name(name).map_err(|e| Error::io("open", self.child_display(name), e))?;
        let mode = if write { OFlags::RDWR } else { OFlags::RDONLY };
        rustix::fs::openat(
            &self.fd,
            name,
            mode | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(File::from)
        .map_err(|e| Error::io("open", self.child_display(name), errno(e)))
    }

    /// Opens or creates `name` for appending writes (a resumable download), never through a symlink.
    pub fn open_or_create(&self, name: &OsStr) -> Result<File> {
        check_name(name).map_err(|e| Error::io("open", self.child_display(name), e))?;
        rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map(File::from)
        .map_err(|e| Error::io("open", self.child_display(name), errno(e)))
    }

    /// Renames `from` (in this directory) to `to` in `dest`; refuses to replace a directory.
    pub fn rename(&self, from: &OsStr, dest: &ConfinedDir, to: &OsStr) -> Result<()> {
        check_name(from).map_err(|e| Error::io("rename", self.child_display(from), e))?;
        check_name(to).map_err(|e| Error::io("rename", dest.child_display(to), e))?;
        if dest.kind(to)? == Some(EntryKind::Dir) {
            return Err(Error::io(
                "rename into place",
                dest.child_display(to),
                io::Error::new(io::ErrorKind::IsADirectory, "a directory is in the way"),
            ));
        }
        rustix::fs::renameat(&self.fd, from, &dest.fd, to)
            .map_err(|e| Error::io("rename into place", dest.child_display(to), errno(e)))
    }

    /// Removes a file or symlink (never a directory); absent is fine.
    pub fn remove_file(&self, name: &OsStr) -> Result<()> {
        check_name(name).map_err(|e| Error::io("remove", self.child_display(name), e))?;
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
            Err(e) => Err(Error::io("remove", self.child_display(name), errno(e))),
        }
    }

    /// Removes an empty directory; a non-empty or absent one is left alone.
    pub fn remove_empty_dir(&self, rel: &Path) {
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            return;
        };
        if let Ok(d) = self.subdir(parent, false, None) {
            let _ = rustix::fs::unlinkat(&d.fd, name, AtFlags::REMOVEDIR);
        }
    }

    /// Creates the symlink `name -> target` (the target is not followed or checked here).
    pub fn symlink(&self, target: &Path, name: &OsStr) -> Result<()> {
        check_name(name).map_err(|e| Error::io("create symlink", self.child_display(name), e))?;
        rustix::fs::symlinkat(target, &self.fd, name)
            .map_err(|e| Error::io("create symlink", self.child_display(name), errno(e)))
    }

    /// Hard-links `src_name` in `src` as `name` here (linkat without following).
    pub fn hard_link(&self, src: &ConfinedDir, src_name: &OsStr, name: &OsStr) -> Result<()> {
        check_name(name).map_err(|e| Error::io("create hardlink", self.child_display(name), e))?;
        check_name(src_name)
            .map_err(|e| Error::io("create hardlink", src.child_display(src_name), e))?;
        rustix::fs::linkat(&src.fd, src_name, &self.fd, name, AtFlags::empty())
            .map_err(|e| Error::io("create hardlink", self.child_display(name), errno(e)))
    }

    /// Sets this directory's permission bits.
    pub fn chmod(&self, mode: u32) -> Result<()> {
        rustix::fs::fchmod(&self.fd, Mode::from_raw_mode(mode))
            .map_err(|e| Error::io("chmod", &self.display, errno(e)))
    }

    /// Reads a user xattr of `name` (a regular file, opened without following).
    pub fn get_xattr(&self, name: &OsStr, attr: &str) -> Option<Vec<u8>> {
        let f = self.open_file(name, false).ok()?;
        let mut buf = vec![0u8; 256];
        let n = rustix::fs::fgetxattr(f.as_fd(), attr, &mut buf[..]).ok()?;
        buf.truncate(n);
        Some(buf)
    }

    /// The names in this directory (read through the handle, not the path).
    pub fn names(&self) -> Vec<OsString> {
        use std::os::fd::AsRawFd;
        std::fs::read_dir(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
            .map(|rd| rd.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default()
    }

    /// Removes hidden temp files (`.PREFIX-PID-HEX`) left by a process that
    /// died mid-write (`kill -9`, power loss): their PID is gone, or is ours
    /// and we have finished. Returns how many were removed.
    pub fn sweep_stale_temps(&self, prefix: &str) -> usize {
        let me = std::process::id();
        let start = format!(".{prefix}-");
        let mut removed = 0;
        for n in self.names() {
            let Some(rest) = n.to_str().and_then(|s| s.strip_prefix(&start)) else {
                continue;
            };
            let Some((pid, hex)) = rest.split_once('-') else {
                continue;
            };
            let Ok(pid) = pid.parse::<u32>() else {
                continue;
            };
            if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let dead = pid == me || !Path::new(&format!("/proc/{pid}")).exists();
            if dead && self.remove_file(&n).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// The display path of `name` in this directory.
    pub fn shown(&self, name: &OsStr) -> PathBuf {
        self.child_display(name)
    }
}

/// Sets a user xattr on an open file; filesystems without user xattrs are ignored.
pub fn set_xattr(file: &File, attr: &str, value: &[u8]) {
    let _ = rustix::fs::fsetxattr(file.as_fd(), attr, value, rustix::fs::XattrFlags::empty());
}

const fn libc_enoent() -> i32 {
    2
}

fn refuse_component(parent: &ConfinedDir, name: &OsStr, shown: &Path, e: io::Error) -> Error {
    let what = match parent.kind(name) {
        Ok(Some(EntryKind::Symlink)) => "is a symlink (paths are never resolved through symlinks)",
        Ok(Some(EntryKind::File { .. })) | Ok(Some(EntryKind::Other)) => "is not a directory",
        _ => return Error::io("open directory", shown, e),
    };
    Error::UnsafePath {
        layer: parent.display.display().to_string(),
        reason: format!("{} {what}", shown.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_walks_through_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        let out = t.path().join("out");
        let victim = t.path().join("victim");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::create_dir_all(&victim).unwrap();
        std::os::unix::fs::symlink(&victim, out.join("link")).unwrap();
        let root = ConfinedDir::open_root(&out, false).unwrap();
        let err = root
            .subdir(Path::new("link/deeper"), true, None)
            .unwrap_err();
        assert!(err.to_string().contains("is a symlink"), "{err}");
        assert!(!victim.join("deeper").exists());
        // An in-tree symlink to a real subdirectory is refused too.
        std::fs::create_dir(out.join("real")).unwrap();
        std::os::unix::fs::symlink("real", out.join("alias")).unwrap();
        assert!(root.subdir(Path::new("alias"), true, None).is_err());
        let mut created = Vec::new();
        let d = root
            .subdir(Path::new("a/b"), true, Some(&mut created))
            .unwrap();
        assert_eq!(created, vec![PathBuf::from("a"), PathBuf::from("a/b")]);
        assert!(d.path().ends_with("a/b"));
    }

    #[test]
    fn temp_files_never_follow_a_planted_symlink() {
        let t = tempfile::tempdir().unwrap();
        let root = ConfinedDir::open_root(t.path(), false).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", t.path().join("planted")).unwrap();
        assert!(root.open_or_create(OsStr::new("planted")).is_err());
        assert!(root.open_file(OsStr::new("planted"), false).is_err());
        let (name, _f) = root.create_temp("tmp").unwrap();
        assert_eq!(root.kind(&name).unwrap(), Some(EntryKind::File { size: 0 }));
        assert!(root.kind(OsStr::new("..")).is_err());
    }

    #[test]
    fn modes_lose_special_and_world_write_bits() {
        assert_eq!(sanitize_mode(0o4777, false) & 0o7002, 0);
        assert_eq!(sanitize_mode(0o000, false) & 0o400, 0o400);
        assert_eq!(sanitize_mode(0o1777, true) & 0o1702, 0o700);
    }
}
