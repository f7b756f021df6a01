//! Safe extraction of model files from layers.
