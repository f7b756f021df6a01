//! Fixed-size chunk digests.
