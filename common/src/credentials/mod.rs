//! Registry credentials from docker config.json, credential helpers, podman auth.json and oras files.
