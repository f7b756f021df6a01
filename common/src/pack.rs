//! Packing files into layers, config and manifest.
