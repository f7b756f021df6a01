//! Shared support for the end-to-end tests: a scratch model generator, service harnesses.
