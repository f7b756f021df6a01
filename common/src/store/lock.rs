//! The store's write lock: an exclusive advisory lock on `<store>/.lock`,
//! held for the duration of index updates and prune.

use std::fs::{File, OpenOptions};
use std::path::Path;

use crate::error::{Error, IoContext, Result};

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

/// A lease on the store's garbage collector: shared for builds and pulls,
/// exclusive for `prune` and `fsck`. Released on drop.
#[derive(Debug)]
pub struct StoreLease {
    _file: File,
}

impl StoreLease {
    fn open(path: &Path) -> Result<File> {
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .ctx("open lock file", path)
    }

    pub fn shared(path: &Path) -> Result<StoreLease> {
        let file = Self::open(path)?;
        file.lock_shared().ctx("lock", path)?;
        Ok(StoreLease { _file: file })
    }

    pub fn exclusive(path: &Path) -> Result<StoreLease> {
        let file = Self::open(path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                tracing::warn!("waiting for running builds and pulls to finish");
                file.lock().ctx("lock", path)?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", path, e)),
        }
        Ok(StoreLease { _file: file })
    }
}
