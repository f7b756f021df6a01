//! A streaming tar scanner: fed the bytes of an uncompressed tar in any
//! slicing (the same write stream the chunk hasher sees), it records where
//! each regular file's data starts. No byte is buffered beyond one 512-byte
//! header and the bounded GNU long-name / PAX records, so scanning a 100 GB
//! layer costs no more memory than scanning a small one.
//!
//! Only regular files (`0`, NUL, `7`) are recorded: their data is stored
//! contiguously right after their header, so `offset..offset+size` of the
//! tar is the file. Sparse files, links and directories are skipped; a
//! lazy reader falls back to the eager path for anything not listed.

use super::FileEntry;

/// Longest GNU long name (`L`) or PAX record block (`x`) we hold in memory.
const MAX_META: u64 = 1 << 20;
/// Most regular files recorded for one layer (the index blob cap bounds it too).
pub const MAX_FILES: usize = 1 << 18;
const BLOCK: u64 = 512;

#[derive(Debug)]
enum State {
    /// Collecting a 512-byte header block.
    Header,
    /// Skipping `remaining` bytes (file data and padding).
    Skip { remaining: u64 },
    /// Collecting a metadata entry's data (`L` or `x`), then skipping `pad`.
    Meta { kind: u8, remaining: u64, pad: u64 },
    /// After the end-of-archive block: the rest is ignored.
    End,
}

/// Records `(path, offset, size, mode)` of every regular file of a tar stream.
#[derive(Debug)]
pub struct TarScanner {
    pos: u64,
    state: State,
    block: Vec<u8>,
    meta: Vec<u8>,
    long_name: Option<Vec<u8>>,
    pax_path: Option<Vec<u8>>,
    pax_size: Option<u64>,
    files: Vec<FileEntry>,
    error: Option<String>,
}

impl Default for TarScanner {
    fn default() -> Self {
        TarScanner::new()
    }
}

impl TarScanner {
    pub fn new() -> TarScanner {
        TarScanner {
            pos: 0,
            state: State::Header,
            block: Vec::with_capacity(BLOCK as usize),
            meta: Vec::new(),
            long_name: None,
            pax_path: None,
            pax_size: None,
            files: Vec::new(),
            error: None,
        }
    }

    /// Feeds the next bytes of the archive. After the first malformed
    /// header the scanner stops; [`TarScanner::finish`] reports why.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.error.is_none() {
            let used = match self.state {
                State::End => data.len(),
                State::Skip { remaining } => {
                    let n = remaining.min(data.len() as u64);
                    self.state = if n == remaining {
                        State::Header
                    } else {
                        State::Skip {
                            remaining: remaining - n,
                        }
                    };
                    n as usize
                }
                State::Meta {
                    kind,
                    remaining,
                    pad,
                } => {
                    let n = remaining.min(data.len() as u64) as usize;
                    self.meta.extend_from_slice(&data[..n]);
                    let left = remaining - n as u64;
                    if left == 0 {
                        self.end_meta(kind);
                        self.state = if pad > 0 {
                            State::Skip { remaining: pad }
                        } else {
                            State::Header
                        };
                    } else {
                        self.state = State::Meta {
                            kind,
                            remaining: left,
                            pad,
                        };
                    }
                    n
                }
                State::Header => {
                    let n = (BLOCK as usize - self.block.len()).min(data.len());
                    self.block.extend_from_slice(&data[..n]);
                    if self.block.len() == BLOCK as usize {
                        let block = std::mem::take(&mut self.block);
                        self.header(&block, self.pos + n as u64);
                        self.block = block;
                        self.block.clear();
                    }
                    n
                }
            };
            self.pos += used as u64;
            data = &data[used..];
        }
    }

    /// Bytes the scanner would skip next without looking at them (file data
    /// and padding): a reader with random access seeks past them instead.
    pub fn skippable(&self) -> u64 {
        match self.state {
            State::Skip { remaining } => remaining,
            _ => 0,
        }
    }

    /// Advances past `n` bytes the scanner does not need (at most
    /// [`TarScanner::skippable`]), as if they had been fed.
    pub fn skip(&mut self, n: u64) {
        let remaining = self.skippable();
        let n = n.min(remaining);
        self.state = if n == remaining {
            State::Header
        } else {
            State::Skip {
                remaining: remaining - n,
            }
        };
        self.pos += n;
    }

    /// The regular files found, in archive order, or why the stream is not a
    /// tar we can describe. A stream that ends inside an entry is an error.
    pub fn finish(self) -> Result<Vec<FileEntry>, String> {
        if let Some(e) = self.error {
            return Err(e);
        }
        match self.state {
            State::End => Ok(self.files),
            // Some writers omit the end blocks; ending between entries is fine.
            State::Header if self.block.is_empty() => Ok(self.files),
            _ => Err(format!(
                "the archive ends inside an entry (at byte {})",
                self.pos
            )),
        }
    }

    fn fail(&mut self, at: u64, reason: impl Into<String>) {
        self.error = Some(format!("header at byte {at}: {}", reason.into()));
    }

    /// Parses one header block; `data_at` is where its entry's data starts.
    fn header(&mut self, h: &[u8], data_at: u64) {
        let at = data_at - BLOCK;
        if h.iter().all(|b| *b == 0) {
            self.state = State::End;
            return;
        }
        let stored = parse_octal(&h[148..156]);
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    *b as u64
                }
            })
            .sum();
        if stored != Some(sum) {
            return self.fail(at, "bad checksum: not a tar archive");
        }
        let Some(mut size) = parse_size(&h[124..136]) else {
            return self.fail(at, "unreadable size field");
        };
        let typeflag = h[156];
        if matches!(typeflag, b'x' | b'L') {
            if size > MAX_META {
                return self.fail(at, format!("metadata entry of {size} bytes"));
            }
            self.meta.clear();
            let pad = padding(size);
            self.state = if size == 0 {
                self.end_meta(typeflag);
                State::Header
            } else {
                State::Meta {
                    kind: typeflag,
                    remaining: size,
                    pad,
                }
            };
            return;
        }
        if matches!(typeflag, b'g' | b'K') {
            // Global PAX records and GNU long link names say nothing about
            // the next file's path or data: skipped, pending names kept.
            let Some(skip) = size.checked_add(padding(size)) else {
                return self.fail(at, "size overflows");
            };
            if skip > 0 {
                self.state = State::Skip { remaining: skip };
            }
            return;
        }
        if let Some(s) = self.pax_size.take() {
            size = s;
        }
        let path = self
            .pax_path
            .take()
            .or_else(|| self.long_name.take())
            .unwrap_or_else(|| ustar_name(h));
        self.long_name = None;
        if matches!(typeflag, b'0' | 0 | b'7') {
            if self.files.len() >= MAX_FILES {
                return self.fail(at, format!("more than {MAX_FILES} files"));
            }
            let mode = parse_octal(&h[100..108]).unwrap_or(0o644) as u32 & 0o7777;
            if let Ok(path) = String::from_utf8(path) {
                let path = path.strip_prefix("./").unwrap_or(&path).to_string();
                if !path.is_empty() {
                    self.files.push(FileEntry {
                        mode,
                        offset: data_at,
                        path,
                        size,
                    });
                }
            }
        }
        // Links and directories carry no data even when a size is set, but
        // skipping what the header claims is what every extractor does.
        let Some(skip) = size.checked_add(padding(size)) else {
            return self.fail(at, "size overflows");
        };
        if skip > 0 {
            self.state = State::Skip { remaining: skip };
        }
    }

    fn end_meta(&mut self, kind: u8) {
        let data = std::mem::take(&mut self.meta);
        if kind == b'L' {
            let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
            self.long_name = Some(data[..end].to_vec());
            return;
        }
        // PAX records: "<len> <key>=<value>\n", the length counting itself.
        let mut rest = &data[..];
        while !rest.is_empty() {
            let Some(sp) = rest.iter().position(|b| *b == b' ') else {
                break;
            };
            let Some(len) = std::str::from_utf8(&rest[..sp])
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .filter(|l| *l > sp + 1 && *l <= rest.len())
            else {
                break;
            };
            let rec = &rest[sp + 1..len];
            let rec = rec.strip_suffix(b"\n").unwrap_or(rec);
            if let Some(eq) = rec.iter().position(|b| *b == b'=') {
                let (k, v) = (&rec[..eq], &rec[eq + 1..]);
                match k {
                    b"path" => self.pax_path = Some(v.to_vec()),
                    b"size" => {
                        self.pax_size = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok())
                    }
                    _ => {}
                }
            }
            rest = &rest[len..];
        }
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

/// `prefix/name` of a ustar header (plain `name` for old and GNU headers).
fn ustar_name(h: &[u8]) -> Vec<u8> {
    let field = |f: &[u8]| f[..f.iter().position(|b| *b == 0).unwrap_or(f.len())].to_vec();
    let name = field(&h[..100]);
    if &h[257..263] == b"ustar\0" {
        let prefix = field(&h[345..500]);
        if !prefix.is_empty() {
            let mut p = prefix;
            p.push(b'/');
            p.extend_from_slice(&name);
            return p;
        }
    }
    name
}

fn parse_octal(f: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(f).ok()?;
    let s = s.trim_matches(|c: char| c == '\0' || c == ' ');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

/// Octal, or GNU base-256 (high bit set) for sizes above 8 GiB.
fn parse_size(f: &[u8]) -> Option<u64> {
    if f[0] & 0x80 != 0 {
        if f[0] & 0x40 != 0 {
            return None; // negative
        }
        let mut v: u64 = (f[0] & 0x3f) as u64;
        for b in &f[1..] {
            v = v.checked_mul(256)?.checked_add(*b as u64)?;
        }
        return Some(v);
    }
    parse_octal(f)
}

/// Lists the regular files of an uncompressed tar file by reading only its
/// headers (a seek over every file's data), so describing a 100 GB layer
/// reads a few KiB. `size` is the verified blob size; reading stops there.
pub fn scan_file(file: &std::fs::File, size: u64) -> Result<Vec<FileEntry>, String> {
    use std::os::unix::fs::FileExt;
    let mut scanner = TarScanner::new();
    let mut pos = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    while pos < size {
        let skip = scanner.skippable().min(size - pos);
        if skip > 0 {
            scanner.skip(skip);
            pos += skip;
            continue;
        }
        if matches!(scanner.state, State::End) || scanner.error.is_some() {
            break;
        }
        // Headers and metadata come in 512-byte blocks: read one at a time
        // so the next skip is seen before any file data is read.
        let want = (BLOCK as usize).min((size - pos) as usize);
        let n = file
            .read_at(&mut buf[..want], pos)
            .map_err(|e| format!("read at byte {pos}: {e}"))?;
        if n == 0 {
            break;
        }
        scanner.update(&buf[..n]);
        pos += n as u64;
    }
    scanner.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o640);
            h.set_entry_type(tar::EntryType::Regular);
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn scan(bytes: &[u8], piece: usize) -> Result<Vec<FileEntry>, String> {
        let mut s = TarScanner::new();
        for p in bytes.chunks(piece) {
            s.update(p);
        }
        s.finish()
    }

    #[test]
    fn scanning_a_file_by_seeking_finds_what_streaming_finds_reading_only_headers() {
        let long = format!("{}/weights.bin", "d".repeat(150));
        let big = vec![7u8; 300_000];
        let files: Vec<(&str, &[u8])> = vec![
            ("a.txt", b"hello"),
            (long.as_str(), &big),
            ("z/last", b"tail"),
        ];
        let bytes = build(&files);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.tar");
        std::fs::write(&p, &bytes).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        assert_eq!(
            scan_file(&f, bytes.len() as u64).unwrap(),
            scan(&bytes, 4096).unwrap()
        );
        // A file cut inside an entry is refused, not half listed.
        let cut = dir.path().join("cut.tar");
        std::fs::write(&cut, &bytes[..40_000]).unwrap();
        let f = std::fs::File::open(&cut).unwrap();
        assert!(scan_file(&f, 40_000).is_err());
    }

    #[test]
    fn offsets_point_at_file_data_in_any_slicing() {
        let long = format!("{}/weights.bin", "d".repeat(150));
        let files: Vec<(&str, &[u8])> = vec![
            ("a.txt", b"hello"),
            (long.as_str(), &[9u8; 1500]),
            ("empty", b""),
            ("z/last", b"tail bytes"),
        ];
        let bytes = build(&files);
        for piece in [1, 7, 512, 100_000] {
            let got = scan(&bytes, piece).unwrap();
            assert_eq!(got.len(), 4, "piece {piece}");
            for (f, (path, data)) in got.iter().zip(&files) {
                assert_eq!(f.path, *path);
                assert_eq!(f.size, data.len() as u64);
                assert_eq!(f.mode, 0o640);
                assert_eq!(f.offset % 512, 0);
                let at = f.offset as usize;
                assert_eq!(&bytes[at..at + data.len()], *data, "{path}");
            }
        }
    }

    #[test]
    fn pax_path_and_size_override_the_header() {
        // A PAX record naming the file, written by hand like other tools do.
        let rec = b"27 path=pax/named/file.bin\n";
        assert_eq!(rec.len(), 27);
        let mut out = Vec::new();
        let mut h = tar::Header::new_ustar();
        h.set_path("PaxHeader").unwrap();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(rec.len() as u64);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(rec);
        out.resize(out.len().div_ceil(512) * 512, 0);
        let mut f = tar::Header::new_ustar();
        f.set_path("short").unwrap();
        f.set_size(3);
        f.set_mode(0o755);
        f.set_cksum();
        out.extend_from_slice(f.as_bytes());
        out.extend_from_slice(b"abc");
        out.resize(out.len().div_ceil(512) * 512 + 1024, 0);
        let got = scan(&out, 33).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].path, "pax/named/file.bin");
        assert_eq!(got[0].mode, 0o755);
        let at = got[0].offset as usize;
        assert_eq!(&out[at..at + 3], b"abc");
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        assert!(scan(&[1u8; 2048], 100).unwrap_err().contains("checksum"));
        let bytes = build(&[("a", &[1u8; 3000])]);
        assert!(
            scan(&bytes[..1500], 64)
                .unwrap_err()
                .contains("ends inside")
        );
        // Zero-filled trailing blocks after the end are fine.
        assert_eq!(scan(&bytes, 512).unwrap().len(), 1);
    }
}
