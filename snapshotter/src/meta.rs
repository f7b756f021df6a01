//! Snapshot records in an embedded transactional store (redb): name, parent,
//! kind, labels, timestamps, data directory id, and for model layers the
//! per-file index entry (path → blob, size, mode). A transaction commits last,
//! after data is in place, so a crash never leaves a committed record without
//! its data; directories without a record are removed at start.

use std::collections::BTreeMap;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SnapError};

const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const CHUNKS: TableDefinition<&str, &[u8]> = TableDefinition::new("chunks");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    View = 1,
    Active = 2,
    Committed = 3,
}

/// One model file provided by a committed snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFile {
    pub filepath: String,
    pub blob: String,
    pub offset: u64,
    pub size: u64,
    pub mode: u32,
    pub media_type: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub id: u64,
    pub name: String,
    pub parent: String,
    pub kind: Kind,
    pub labels: BTreeMap<String, String>,
    /// Unix nanoseconds.
    pub created: i128,
    pub updated: i128,
    #[serde(default)]
    pub model: Vec<ModelFile>,
}

pub struct Meta {
    db: Database,
}

fn db_err(e: impl std::fmt::Display) -> SnapError {
    SnapError::Internal(format!("metadata store: {e}"))
}

impl Meta {
    pub fn open(path: &Path) -> Result<Meta> {
        let db = Database::create(path).map_err(db_err)?;
        let tx = db.begin_write().map_err(db_err)?;
        tx.open_table(SNAPSHOTS).map_err(db_err)?;
        tx.open_table(COUNTERS).map_err(db_err)?;
        tx.open_table(CHUNKS).map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        Ok(Meta { db })
    }

    pub fn get(&self, key: &str) -> Result<Option<Record>> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(SNAPSHOTS).map_err(db_err)?;
        Ok(match t.get(key).map_err(db_err)? {
            Some(v) => Some(serde_json::from_slice(v.value()).map_err(db_err)?),
            None => None,
        })
    }

    pub fn all(&self) -> Result<Vec<Record>> {
        let tx = self.db.begin_read().map_err(db_err)?;
        let t = tx.open_table(SNAPSHOTS).map_err(db_err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db_err)? {
            let (_, v) = item.map_err(db_err)?;
            out.push(serde_json::from_slice(v.value()).map_err(db_err)?);
        }
        Ok(out)
    }

    /// Runs `f` in one write transaction over the snapshot table.
    pub fn update<T>(&self, f: impl FnOnce(&mut Txn<'_>) -> Result<T>) -> Result<T> {
        let tx = self.db.begin_write().map_err(db_err)?;
        let out = {
            let mut t = Txn {
                snaps: tx.open_table(SNAPSHOTS).map_err(db_err)?,
                counters: tx.open_table(COUNTERS).map_err(db_err)?,
            };
            f(&mut t)?
        };
        tx.commit().map_err(db_err)?;
        Ok(out)
    }

    /// Chunk digest records of eager blobs, which earlier versions kept and
    /// nothing reads: GC drops them with their blob.
    pub fn drop_chunks(&self, blob: &str) -> Result<()> {
        let tx = self.db.begin_write().map_err(db_err)?;
        tx.open_table(CHUNKS)
            .map_err(db_err)?
            .remove(blob)
            .map_err(db_err)?;
        tx.commit().map_err(db_err)
    }
}

pub struct Txn<'a> {
    snaps: redb::Table<'a, &'static str, &'static [u8]>,
    counters: redb::Table<'a, &'static str, u64>,
}

impl Txn<'_> {
    pub fn get(&self, key: &str) -> Result<Option<Record>> {
        Ok(match self.snaps.get(key).map_err(db_err)? {
            Some(v) => Some(serde_json::from_slice(v.value()).map_err(db_err)?),
            None => None,
        })
    }

    pub fn put(&mut self, r: &Record) -> Result<()> {
        let bytes = serde_json::to_vec(r).map_err(db_err)?;
        self.snaps
            .insert(r.name.as_str(), bytes.as_slice())
            .map_err(db_err)?;
        Ok(())
    }

    pub fn delete(&mut self, key: &str) -> Result<()> {
        self.snaps.remove(key).map_err(db_err)?;
        Ok(())
    }

    pub fn has_children(&self, key: &str) -> Result<bool> {
        for item in self.snaps.iter().map_err(db_err)? {
            let (_, v) = item.map_err(db_err)?;
            let r: Record = serde_json::from_slice(v.value()).map_err(db_err)?;
            if r.parent == key {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub fn next_id(&mut self) -> Result<u64> {
        let cur = self
            .counters
            .get("next_id")
            .map_err(db_err)?
            .map(|v| v.value())
            .unwrap_or(1);
        self.counters.insert("next_id", cur + 1).map_err(db_err)?;
        Ok(cur)
    }
}
