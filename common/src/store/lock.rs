//! The store's write lock: an exclusive advisory lock on `<store>/.lock`,
//! held for the duration of index updates and prune.

use std::fs::{File, OpenOptions};
use std::path::Path;

use crate::error::{IoContext, Result};

/// Released on drop.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
}

impl StoreLock {
    pub fn exclusive(path: &Path) -> Result<StoreLock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .ctx("open lock file", path)?;
        file.lock().ctx("lock", path)?;
        Ok(StoreLock { _file: file })
    }
}
