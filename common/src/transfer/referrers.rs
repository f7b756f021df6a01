//! Chunk index referrers in registries: publishing one (index blobs, the
//! empty config, the referrer manifest by digest, then the referrers tag
//! schema unless the registry answered `OCI-Subject`), finding a model's
//! (referrers API, else tag schema, as ORAS does), copying them into the
//! store on pull, and `modelpack index`: indexing an artifact another tool
//! pushed by streaming each layer once through the chunk hasher.
//!
//! Everything fetched is bounded: lists and manifests by `MAX_MANIFEST`,
//! index blobs by `MAX_INDEX_BLOB` each and [`MAX_INDEX_BYTES`] per model,
//! referrers by `MAX_CHUNK_REFERRERS`; a referrer with one bad index is
//! refused whole, with a warning, and never breaks the model's own pull.

use std::collections::BTreeMap;

use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;

use crate::chunkindex::referrer::{self, MAX_CHUNK_REFERRERS};
use crate::chunkindex::{IndexFormat, Indexer, LayerIndex, LayerRef, MAX_INDEX_BLOB, local};
use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::manifest::{Descriptor, Manifest};
use crate::media;
use crate::reference::Reference;
use crate::registry::{MAX_MANIFEST, RegistryClient};
use crate::store::Store;

use super::TransferProgress;

/// Most index bytes fetched for one model, over all its referrers.
pub const MAX_INDEX_BYTES: u64 = 256 << 20;

/// Pushes the referrer `bytes` to `remote`'s repository: its index blobs
/// (from `blob`), the empty config, the manifest by digest and, when the
/// registry did not say it tracks subjects, the referrers tag schema entry.
pub async fn publish(
    client: &RegistryClient,
    remote: &Reference,
    bytes: &[u8],
    blob: &(dyn Fn(&Digest) -> Result<Vec<u8>> + Sync),
) -> Result<Digest> {
    let m = Manifest::parse(bytes, "chunk index referrer")?;
    let subject = m
        .subject
        .clone()
        .ok_or_else(|| Error::Invalid("a chunk index referrer needs a subject".into()))?;
    referrer::parse(bytes, &subject.digest, "to publish")?;
    client.push_blob_bytes(remote, b"{}").await?;
    for l in &m.layers {
        let data = blob(&l.digest)?;
        client.push_blob_bytes(remote, &data).await?;
    }
    put_referrer_manifest(
        client,
        remote,
        bytes,
        &m,
        &subject.digest,
        "chunk index referrer",
    )
    .await
}

/// Puts a referrer manifest (its blobs already pushed) by digest, checks
/// the digest the registry answered, and adds it to the subject's tag
/// schema index unless the registry said it tracks subjects. Shared by
/// chunk index and signature referrers.
pub(crate) async fn put_referrer_manifest(
    client: &RegistryClient,
    remote: &Reference,
    bytes: &[u8],
    m: &Manifest,
    subject: &Digest,
    what: &str,
) -> Result<Digest> {
    let digest = Digest::of(bytes);
    let (got, tracked) = client
        .put_manifest_detail(
            &remote.with_digest(digest.clone()),
            bytes,
            media::OCI_MANIFEST,
        )
        .await?;
    if got != digest {
        return Err(Error::DigestMismatch {
            what: format!("{what} pushed to {remote}"),
            expected: digest.to_string(),
            actual: got.to_string(),
        });
    }
    if !tracked {
        update_tag_schema(client, remote, subject, referrer::entry_for(bytes, m)).await?;
    }
    Ok(digest)
}

/// Adds `entry` to the `sha256-<hex>` tag index of `subject`, keeping every
/// entry already there (other tools' signatures, SBOMs). Two concurrent
/// updaters can still lose one entry: the schema has no compare-and-swap.
async fn update_tag_schema(
    client: &RegistryClient,
    remote: &Reference,
    subject: &Digest,
    entry: Descriptor,
) -> Result<()> {
    let tag = remote.with_tag(&referrer::tag_for(subject));
    let existing = match client.get_manifest(&tag).await {
        Ok(f) => Some(f.bytes),
        Err(Error::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    let what = format!("referrers tag {tag}");
    if let Some(index) = referrer::merge_list(existing.as_deref(), entry, &what)? {
        client
            .put_manifest(&tag, &index.to_bytes(), media::OCI_INDEX)
            .await?;
    }
    Ok(())
}

/// Descriptors of `subject`'s chunk index referrers in `remote`'s
/// repository: from the referrers API, else from the tag schema.
pub async fn find(
    client: &RegistryClient,
    remote: &Reference,
    subject: &Digest,
) -> Result<Vec<Descriptor>> {
    let list = match client.get_referrers(remote, subject).await? {
        Some(bytes) => referrer::parse_list(&bytes, &format!("referrers of {subject}"))?,
        None => {
            let tag = remote.with_tag(&referrer::tag_for(subject));
            match client.get_manifest(&tag).await {
                Ok(f) => referrer::parse_list(&f.bytes, &format!("referrers tag {tag}"))?,
                Err(Error::NotFound { .. }) => Vec::new(),
                Err(e) => return Err(e),
            }
        }
    };
    let mut out: Vec<Descriptor> = Vec::new();
    for d in list {
        if d.artifact_type.as_deref() == Some(media::CHUNK_INDEX)
            && !out.iter().any(|o| o.digest == d.digest)
        {
            out.push(d);
        }
    }
    out.truncate(MAX_CHUNK_REFERRERS);
    Ok(out)
}

/// An index blob as fetched: digest, exact bytes, parsed form.
pub type FetchedIndex = (Digest, Vec<u8>, LayerIndex);

/// A model's chunk index referrers fetched and checked against the model.
#[derive(Debug, Default)]
pub struct Fetched {
    /// `(digest, bytes)` of each referrer whose every index was good.
    pub referrers: Vec<(Digest, Vec<u8>)>,
    /// `(digest, bytes, parsed)` of their index blobs.
    pub indexes: Vec<FetchedIndex>,
    /// Why a referrer was refused, per refused referrer.
    pub warnings: Vec<String>,
}

/// Finds and downloads `model`'s chunk index referrers. Each index must
/// describe the model layer its referrer entry names; a referrer failing
/// any check is left out whole (reported in `warnings`). Bound indexes
/// that no referrer brought (a registry that lost or never had the tag
/// schema tag) are fetched by the digest the manifest names, and a
/// referrer is rebuilt for them: the one `build` makes, bit for bit, when
/// every bound index comes this way. `subject` describes `model`.
pub async fn fetch(
    client: &RegistryClient,
    remote: &Reference,
    subject: &Descriptor,
    model: &Manifest,
) -> Result<Fetched> {
    let digest = &subject.digest;
    let mut out = Fetched::default();
    let mut budget = MAX_INDEX_BYTES;
    for desc in find(client, remote, digest).await? {
        let res: Result<(Vec<u8>, Vec<FetchedIndex>)> = async {
            if desc.size > MAX_MANIFEST {
                return Err(Error::TooLarge {
                    what: format!("referrer {}", desc.digest),
                    limit: MAX_MANIFEST,
                    declared: Some(desc.size),
                });
            }
            let f = client
                .get_manifest(&remote.with_digest(desc.digest.clone()))
                .await?;
            let m = referrer::parse(&f.bytes, digest, &desc.digest.to_string())?;
            let mut got = Vec::new();
            for l in &m.layers {
                let layer_digest = referrer::indexed_layer(l).expect("checked by parse");
                let Some(layer) = model.layers.iter().find(|x| x.digest == layer_digest) else {
                    return Err(Error::ChunkIndex {
                        what: l.digest.to_string(),
                        reason: format!(
                            "names layer {layer_digest}, which the model does not have"
                        ),
                    });
                };
                if let Some((_, b, i)) = out.indexes.iter().find(|(d, _, _)| d == &l.digest) {
                    got.push((l.digest.clone(), b.clone(), i.clone()));
                    continue;
                }
                budget = budget.checked_sub(l.size).ok_or_else(|| Error::TooLarge {
                    what: format!("chunk indexes of {remote}"),
                    limit: MAX_INDEX_BYTES,
                    declared: None,
                })?;
                let what = format!("chunk index {} of {remote}", l.digest);
                let bytes = client
                    .pull_small_blob(remote, &l.digest, l.size, MAX_INDEX_BLOB, &what)
                    .await?;
                let idx = LayerIndex::parse(&bytes, &l.digest.to_string())?;
                idx.describes(layer)?;
                got.push((l.digest.clone(), bytes, idx));
            }
            Ok((f.bytes, got))
        }
        .await;
        match res {
            Ok((bytes, got)) => {
                out.referrers.push((desc.digest.clone(), bytes));
                for g in got {
                    if !out.indexes.iter().any(|(d, _, _)| d == &g.0) {
                        out.indexes.push(g);
                    }
                }
            }
            Err(e) => out
                .warnings
                .push(format!("chunk index referrer {} refused: {e}", desc.digest)),
        }
    }
    let mut direct = 0;
    let mut bound = Vec::new();
    for l in &model.layers {
        let Some(want) = l
            .annotations
            .get(media::ANNOTATION_CHUNKS_DIGEST)
            .and_then(|s| s.parse::<Digest>().ok())
        else {
            continue;
        };
        if IndexFormat::for_media_type(&l.media_type).is_none() {
            continue;
        }
        if !out.indexes.iter().any(|(d, _, _)| d == &want) {
            let res: Result<FetchedIndex> = async {
                let what = format!("bound chunk index {want} of {remote}");
                // The size is not in the manifest: the blob cap bounds the read.
                let limit = MAX_INDEX_BLOB.min(budget);
                let bytes = client
                    .pull_small_blob(remote, &want, limit, limit, &what)
                    .await?;
                budget -= bytes.len() as u64;
                let idx = LayerIndex::parse(&bytes, &want.to_string())?;
                idx.describes(l)?;
                Ok((want.clone(), bytes, idx))
            }
            .await;
            match res {
                Ok(f) => {
                    out.indexes.push(f);
                    direct += 1;
                }
                Err(e) => {
                    out.warnings.push(format!("layer {}: {e}", l.digest));
                    continue;
                }
            }
        }
        let (_, bytes, _) = out
            .indexes
            .iter()
            .find(|(d, _, _)| d == &want)
            .expect("just checked or fetched");
        bound.push((want.clone(), bytes.len() as u64, l.digest.clone()));
    }
    if direct > 0 {
        let bytes = referrer::build(subject, &bound).to_bytes();
        let d = Digest::of(&bytes);
        if !out.referrers.iter().any(|(x, _)| x == &d) {
            out.referrers.push((d, bytes));
        }
    }
    Ok(out)
}

/// After a pull: copies `model`'s chunk index referrers into the store, as
/// local referrers of `remote`'s repository (so `push` carries them on).
/// Returns how many were stored and the warnings about refused ones.
pub async fn pull_into_store(
    client: &RegistryClient,
    store: &Store,
    remote: &Reference,
    subject: &Descriptor,
    model: &Manifest,
) -> Result<(usize, Vec<String>)> {
    let f = fetch(client, remote, subject, model).await?;
    for (_, bytes, _) in &f.indexes {
        store.put_bytes(bytes)?;
    }
    store.put_bytes(b"{}")?;
    for (_, bytes) in &f.referrers {
        local::put_referrer(store, remote, bytes)?;
    }
    let mut warnings = f.warnings;
    // Signatures come along too, so `verify` and `push` work offline.
    match crate::signing::referrer::fetch_remote(client, remote, &subject.digest).await {
        Ok(sigs) => {
            for (_, _, bundle) in sigs {
                crate::signing::referrer::put_local(store, remote, &subject.digest, &bundle)?;
            }
        }
        Err(e) => warnings.push(format!("signatures not fetched: {e}")),
    }
    Ok((f.referrers.len(), warnings))
}

/// Pushes every local chunk index referrer of the stored model `digest` to
/// `remote`. Returns the referrer digests.
pub async fn push_from_store(
    client: &RegistryClient,
    store: &Store,
    remote: &Reference,
    digest: &Digest,
) -> Result<Vec<Digest>> {
    let mut out = Vec::new();
    for m in local::referrers(store, digest)? {
        out.push(publish(client, remote, &m.bytes, &|d| store.read_blob(d)).await?);
    }
    Ok(out)
}

/// One layer of a `modelpack index` run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexedLayer {
    pub digest: Digest,
    pub filepath: Option<String>,
    /// The index blob's digest, or `None` when the layer was skipped.
    pub index: Option<Digest>,
    pub chunks: usize,
    pub files: usize,
    /// `local` (read from the store), `downloaded`, or why it was skipped.
    pub source: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IndexReport {
    pub reference: String,
    pub digest: Digest,
    pub referrer: Option<Digest>,
    pub chunk_size: u64,
    pub layers: Vec<IndexedLayer>,
    pub bytes_received: u64,
    pub pinned: bool,
    /// The model is in the local store, and the referrer was recorded there too.
    pub stored_locally: bool,
}

/// `modelpack index REF`: indexes every raw and tar layer of `remote` (a
/// blob already in the store is read there; any other is streamed once
/// from the registry through the chunk hasher while its whole digest is
/// verified, and not stored), publishes the referrer, and with `pin`
/// records the index digests as trusted for this manifest.
pub async fn index_remote(
    client: &RegistryClient,
    store: &Store,
    remote: &Reference,
    chunk_size: u64,
    pin: bool,
    progress: &dyn TransferProgress,
) -> Result<IndexReport> {
    crate::chunk::check_chunk_size(chunk_size)?;
    let fetched = client.get_manifest(remote).await?;
    if fetched.media_type == media::OCI_INDEX || fetched.media_type == media::DOCKER_MANIFEST_LIST {
        return Err(Error::Artifact(format!(
            "{remote} is an image index; index one of its manifests by digest"
        )));
    }
    let model = Manifest::parse(&fetched.bytes, &format!("manifest of {remote}"))?;
    let digest = fetched.digest.clone();
    let mut distinct: Vec<&Descriptor> = Vec::new();
    for l in &model.layers {
        if !distinct.iter().any(|d| d.digest == l.digest) {
            distinct.push(l);
        }
    }
    // Chunk digests alone: the smallest an index of this layer can be.
    let too_big = |size: u64| size.div_ceil(chunk_size).saturating_mul(74) > MAX_INDEX_BLOB;
    type Row = (IndexedLayer, Option<(Digest, Vec<u8>)>, u64);
    let results: Vec<Row> = stream::iter(distinct.into_iter().map(|l| async move {
        let row = |index, chunks, files, source: &str| IndexedLayer {
            digest: l.digest.clone(),
            filepath: l.filepath().map(str::to_string),
            index,
            chunks,
            files,
            source: source.to_string(),
        };
        let Some(format) = IndexFormat::for_media_type(&l.media_type) else {
            return Ok((row(None, 0, 0, "skipped: compressed"), None, 0));
        };
        if too_big(l.size) {
            return Ok((
                row(None, 0, 0, "skipped: too large for one index blob"),
                None,
                0,
            ));
        }
        let name = l.filepath().unwrap_or("layer").to_string();
        let (idx, source, received) = if store.has_blob(&l.digest) {
            let (path, layer) = (store.blob_path(&l.digest), LayerRef::of(l));
            let idx =
                tokio::task::spawn_blocking(move || index_local(&path, chunk_size, format, layer))
                    .await
                    .map_err(|e| Error::Invalid(format!("indexing worker failed: {e}")))??;
            progress.blob_finished(&name, l.size, "local");
            (idx, "local", 0)
        } else {
            progress.blob_started(&name, l.size);
            let mut ix = Indexer::new(chunk_size, format);
            client
                .stream_blob(
                    remote,
                    &l.digest,
                    l.size,
                    &mut |b| {
                        ix.update(b);
                        Ok(())
                    },
                    progress,
                )
                .await?;
            progress.blob_finished(&name, l.size, "indexed");
            (ix.finish(LayerRef::of(l))?, "downloaded", l.size)
        };
        let bytes = idx.to_bytes();
        let d = Digest::of(&bytes);
        let r = row(Some(d.clone()), idx.chunks.len(), idx.files.len(), source);
        Ok::<_, Error>((r, Some((d, bytes)), received))
    }))
    .buffered(client.options().concurrency.max(1))
    .try_collect()
    .await?;
    let mut blobs: BTreeMap<Digest, Vec<u8>> = BTreeMap::new();
    let mut entries = Vec::new();
    for (row, blob, _) in &results {
        if let Some((d, bytes)) = blob {
            entries.push((d.clone(), bytes.len() as u64, row.digest.clone()));
            blobs.insert(d.clone(), bytes.clone());
        }
    }
    let subject = referrer::subject_of(&fetched.bytes, &digest);
    let mut referrer_digest = None;
    let mut stored_locally = false;
    if !entries.is_empty() {
        let bytes = referrer::build(&subject, &entries).to_bytes();
        let lookup = |d: &Digest| {
            blobs.get(d).cloned().ok_or_else(|| Error::NotFound {
                what: format!("chunk index {d}"),
                hint: None,
            })
        };
        referrer_digest = Some(publish(client, remote, &bytes, &lookup).await?);
        if store.has_blob(&digest) {
            for b in blobs.values() {
                store.put_bytes(b)?;
            }
            store.put_bytes(b"{}")?;
            local::put_referrer(store, remote, &bytes)?;
            stored_locally = true;
        }
        if pin {
            local::pin(store, &digest, &blobs.keys().cloned().collect::<Vec<_>>())?;
        }
    }
    Ok(IndexReport {
        reference: remote.to_string(),
        digest,
        referrer: referrer_digest,
        chunk_size,
        bytes_received: results.iter().map(|r| r.2).sum(),
        layers: results.into_iter().map(|r| r.0).collect(),
        pinned: pin && !entries.is_empty(),
        stored_locally,
    })
}

/// Indexes a blob of the local store (trusted: verified when it was written).
fn index_local(
    path: &std::path::Path,
    chunk_size: u64,
    format: IndexFormat,
    layer: LayerRef,
) -> Result<LayerIndex> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut ix = Indexer::threaded(chunk_size, format);
    let mut buf = vec![0u8; crate::digest::COPY_BUF];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io("read", path, e))?;
        if n == 0 {
            break;
        }
        ix.update(&buf[..n]);
    }
    ix.finish(layer)
}
