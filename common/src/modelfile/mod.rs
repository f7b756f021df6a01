//! The Modelfile language, build-context resolution, and `modelfile generate`.
