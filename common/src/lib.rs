//! `modelpack-common`: everything the `docker-modelpack` CLI and the
//! `modelpack-snapshotter` share. Binaries stay thin; the logic lives here.
//!
//! - [`media`], [`manifest`], [`config`], [`digest`], [`reference`]: the ModelPack/OCI data model.
//! - [`modelfile`]: the Modelfile language, build-context resolution and `modelfile generate`.
//! - [`pack`]: turning files into deterministic layers, config and manifest.
//! - [`validate`]: JSON Schema plus the lints the schema misses.
//! - [`peer`]: what Docker Model Runner and KitOps write, and how we read it.
//! - [`signing`]: OpenSSF Model Signing signatures from layer digests, as referrers.
//! - [`store`]: the local OCI image layout store; [`extract`]: safe restore of files
//!   through [`confined`] directory handles that cannot leave their target.
//! - [`credentials`], [`registry`]: talking to OCI registries with the credentials people already have.
//! - [`text`]: escaping artifact-supplied strings before they reach a terminal.
//! - [`chunk`]: fixed-size chunk digests used by the snapshotter for verification;
//!   [`chunkindex`]: those digests as a published, model-bound artifact (docs/chunk-index.md).

pub mod cas;
pub mod chunk;
pub mod chunkindex;
pub mod config;
pub mod confined;
pub mod credentials;
pub mod digest;
pub mod error;
pub mod extract;
pub mod kcopy;
pub mod labels;
pub mod lazy;
pub mod manifest;
pub mod media;
pub mod modelfile;
pub mod pack;
pub mod peer;
pub mod reference;
pub mod registry;
pub mod settings;
pub mod signing;
pub mod store;
pub mod text;
pub mod transfer;
pub mod validate;
pub mod view;

pub use digest::Digest;
pub use error::{Error, ErrorKind, Result};
pub use reference::Reference;
