//! Small blobs (configs, chunk indexes, signatures) fetched into memory —
//! bounded before a byte is read, verified, never through a named temp file
//! another local user could predict.

use std::io::Read;

use crate::error::{Error, IoContext, Result};
use crate::manifest::Descriptor;
use crate::reference::Reference;
use crate::registry::RegistryClient;

/// The largest config (or other small JSON blob) accepted: distribution's manifest limit.
pub const MAX_SMALL_BLOB: u64 = 4 << 20;

/// Downloads the blob `desc` names (at most [`MAX_SMALL_BLOB`]) and returns its verified bytes.
pub async fn fetch_small_blob(
    client: &RegistryClient,
    remote: &Reference,
    desc: &Descriptor,
    what: &str,
) -> Result<Vec<u8>> {
    if desc.size > MAX_SMALL_BLOB {
        return Err(Error::Artifact(format!(
            "the {what} of {remote} ({}) declares {} bytes; at most {MAX_SMALL_BLOB} are accepted",
            desc.digest, desc.size
        )));
    }
    // An unnamed file (O_TMPFILE where available): nothing to predict or plant.
    let mut file = tempfile::tempfile().ctx("create temp file", std::env::temp_dir())?;
    let shown = std::env::temp_dir().join(format!("(unnamed {what} download)"));
    client
        .pull_blob_to_file(remote, &desc.digest, desc.size, &file, &shown, &())
        .await?;
    let mut buf = Vec::with_capacity(desc.size as usize);
    std::io::Seek::rewind(&mut file).ctx("seek", &shown)?;
    file.take(MAX_SMALL_BLOB + 1)
        .read_to_end(&mut buf)
        .ctx("read", &shown)?;
    Ok(buf)
}
