//! Small blobs (configs) fetched into memory, bounded before a byte is read
//! and verified; one entry point for every verb that needs a remote config.

use crate::error::Result;
use crate::manifest::Descriptor;
use crate::reference::Reference;
use crate::registry::RegistryClient;

/// Downloads the config `desc` names (at most the client's `max_config_size`,
/// 4 MiB by default) and returns its verified bytes.
pub async fn fetch_small_blob(
    client: &RegistryClient,
    remote: &Reference,
    desc: &Descriptor,
) -> Result<Vec<u8>> {
    client.pull_config(remote, &desc.digest, desc.size).await
}
