//! OCI distribution client: auth, blobs, manifests, retries, per-host transport settings.
