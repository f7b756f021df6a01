//! The CLI's end-to-end tests, one module per area, linked into one test
//! binary: nine binaries that each link the whole dependency tree cost CI
//! gigabytes of disk and minutes of linking on two cores.

mod chunk_index;
mod cli_core;
mod cli_registry;
mod cli_text;
mod faults;
mod hostile;
mod interop;
mod lazy_mount;
mod reflink;
mod signing;
mod store_safety;
