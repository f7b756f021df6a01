//! ModelPack validation: the HEAD JSON Schema plus lints the schema misses.
