//! The baseline's database: redb, one file, one transaction per batch.
//!
//! Why redb and not SQLite: see `docs/architecture.md` ("Baseline store").
//! Every commit is durable when it returns (redb's default), so a crash,
//! SIGKILL included, loses at most the batch being written and what was
//! not batched yet; redb repairs a file left mid-write when it is opened.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{Batch, Client, Edge, Meta, Snapshot};

/// The layout this build reads and writes. A file with a higher number was
/// written by a newer smbwatch and is refused; a lower one is upgraded when
/// opened (2 added hosts, weekend hours and usual servers to the client
/// record: schema-1 records still decode, and are rewritten as they change).
pub const SCHEMA_VERSION: u64 = 2;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const CLIENTS: TableDefinition<u128, &[u8]> = TableDefinition::new("clients");
const EDGES: TableDefinition<(u128, u128), &[u8]> = TableDefinition::new("edges");

/// What to do about a database that cannot be used.
const REMEDY: &str = "move the file away to start a new baseline (smbwatch creates it), \
                      or restore one with `smbwatch baseline import`";

/// Errors of the store; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file cannot be created or opened as a redb database (damaged,
    /// not a database, unreadable).
    #[error("{}: cannot open the baseline database: {source}; {REMEDY}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// redb's reason.
        #[source]
        source: redb::DatabaseError,
    },
    /// The directory for a new file cannot be created.
    #[error("{}: cannot create its directory: {source}", path.display())]
    Dir {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Written by a newer smbwatch.
    #[error("{}: baseline schema version {found}, newer than this smbwatch reads ({SCHEMA_VERSION}): run the newer smbwatch, or export the baseline with it and import that here, or {REMEDY}", path.display())]
    Newer {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u64,
    },
    /// A record that does not decode: the file is damaged.
    #[error("{}: damaged baseline database: {detail}; {REMEDY}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A read or write failed.
    #[error("{}: baseline database {op} failed: {detail}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What was done.
        op: &'static str,
        /// redb's reason.
        detail: String,
        /// The reason is the file's content (a page that does not decode,
        /// a file shorter than its header says), not the disk or a lock.
        damaged: bool,
    },
    /// The database library panicked reading the file (it does on some
    /// damaged files).
    #[error("{}: the baseline database library failed reading it: {detail}", path.display())]
    Panicked {
        /// The file.
        path: PathBuf,
        /// The panic's message.
        detail: String,
    },
    /// A damaged file could not be moved aside.
    #[error("{}: cannot move the damaged baseline aside to {}: {source}", path.display(), to.display())]
    SetAside {
        /// The file.
        path: PathBuf,
        /// Where it was to go.
        to: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// True when the file's content is damaged (not a database, a page or
    /// record that does not decode, a library panic on it): moving it
    /// aside and starting anew loses nothing usable. A lock held by
    /// another process, permissions, a full disk and a newer schema are
    /// not damage.
    pub fn is_damage(&self) -> bool {
        use redb::{DatabaseError, StorageError};
        match self {
            Self::Corrupt { .. } | Self::Panicked { .. } => true,
            Self::Io { damaged, .. } => *damaged,
            Self::Open { source, .. } => match source {
                DatabaseError::Storage(StorageError::Corrupted(_)) => true,
                DatabaseError::Storage(StorageError::Io(e)) => damaged_io(e),
                _ => false,
            },
            Self::Dir { .. } | Self::Newer { .. } | Self::SetAside { .. } => false,
        }
    }
}

fn damaged_io(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::InvalidData
    )
}

/// Whether a redb error is about the file's content (see
/// [`StoreError::is_damage`]).
fn damaged(e: &redb::Error) -> bool {
    match e {
        redb::Error::Corrupted(_)
        | redb::Error::TableTypeMismatch { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TableIsNotMultimap(_)
        | redb::Error::TypeDefinitionChanged { .. } => true,
        redb::Error::Io(e) => damaged_io(e),
        _ => false,
    }
}

/// A damaged file moved aside by [`Store::open_or_set_aside`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetAside {
    /// Where the damaged file is now.
    pub moved_to: PathBuf,
    /// What was wrong with it.
    pub reason: String,
}

/// An open baseline database.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Opens `path`, creating it (and its directory) when absent. Refuses a
    /// damaged file and one from a newer schema.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: path.to_owned(),
                source,
            })?;
        }
        let db = Database::create(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        let store = Self {
            db,
            path: path.to_owned(),
        };
        store.init()?;
        Ok(store)
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, op: &'static str) -> impl Fn(redb::Error) -> StoreError + '_ {
        move |e| StoreError::Io {
            path: self.path.clone(),
            op,
            damaged: damaged(&e),
            detail: e.to_string(),
        }
    }

    /// Opens and loads `path` like [`Store::open`] and [`Store::load`]; a
    /// damaged file ([`StoreError::is_damage`]) is renamed to
    /// `<name>.damaged-<UTC time>` beside it and a new, empty database
    /// created in its place, so a damaged baseline costs what it had
    /// learned, never the monitor. Other errors are returned.
    pub fn open_or_set_aside(
        path: &Path,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(Self, Snapshot, Option<SetAside>), StoreError> {
        let attempt = || -> Result<(Self, Snapshot), StoreError> {
            // redb panics on some damaged files (5 flipped bytes in the
            // header did, in 4 cases of 10): a panic reading is damage.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let store = Self::open(path)?;
                let snap = store.load()?;
                Ok((store, snap))
            }))
            .unwrap_or_else(|panic| {
                let detail = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                Err(StoreError::Panicked {
                    path: path.to_owned(),
                    detail,
                })
            })
        };
        match attempt() {
            Ok((store, snap)) => Ok((store, snap, None)),
            Err(e) if e.is_damage() => {
                let name = path
                    .file_name()
                    .map_or_else(|| "baseline".into(), |n| n.to_string_lossy().into_owned());
                let stamp = now.format("%Y%m%dT%H%M%SZ");
                let mut to = path.with_file_name(format!("{name}.damaged-{stamp}"));
                let mut n = 1;
                while to.exists() {
                    n += 1;
                    to = path.with_file_name(format!("{name}.damaged-{stamp}-{n}"));
                }
                std::fs::rename(path, &to).map_err(|source| StoreError::SetAside {
                    path: path.to_owned(),
                    to: to.clone(),
                    source,
                })?;
                let store = Self::open(path)?;
                let snap = store.load()?;
                let reason = e.to_string();
                let set_aside = SetAside {
                    moved_to: to,
                    // The remedy is what was just done.
                    reason: reason
                        .strip_suffix(&format!("; {REMEDY}"))
                        .unwrap_or(&reason)
                        .to_string(),
                };
                Ok((store, snap, Some(set_aside)))
            }
            Err(e) => Err(e),
        }
    }

    /// Checks the schema version; writes it and the tables into a new file.
    fn init(&self) -> Result<(), StoreError> {
        let w = self
            .db
            .begin_write()
            .map_err(|e| self.io("write")(e.into()))?;
        {
            let mut meta = w.open_table(META).map_err(|e| self.io("open")(e.into()))?;
            let found = meta
                .get("schema")
                .map_err(|e| self.io("read")(e.into()))?
                .map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::Newer {
                        path: self.path.clone(),
                        found: v,
                    })
                }
                Some(v) if v == SCHEMA_VERSION => {}
                Some(_) | None => {
                    meta.insert("schema", SCHEMA_VERSION)
                        .map_err(|e| self.io("write")(e.into()))?;
                }
            }
            w.open_table(CLIENTS)
                .map_err(|e| self.io("open")(e.into()))?;
            w.open_table(EDGES).map_err(|e| self.io("open")(e.into()))?;
        }
        w.commit().map_err(|e| self.io("commit")(e.into()))
    }

    /// Everything in the database.
    pub fn load(&self) -> Result<Snapshot, StoreError> {
        let r = self
            .db
            .begin_read()
            .map_err(|e| self.io("read")(e.into()))?;
        let meta_t = r.open_table(META).map_err(|e| self.io("open")(e.into()))?;
        let get = |k: &str| -> Result<Option<u64>, StoreError> {
            Ok(meta_t
                .get(k)
                .map_err(|e| self.io("read")(e.into()))?
                .map(|v| v.value()))
        };
        let meta = Meta {
            started: get("started")?.map(|v| v as i64),
            last: get("last")?.map(|v| v as i64),
            learned: get("learned")?.unwrap_or(0),
            evicted_clients: get("evicted_clients")?.unwrap_or(0),
            evicted_edges: get("evicted_edges")?.unwrap_or(0),
            batches: get("batches")?.unwrap_or(0),
        };
        let corrupt = |what: String| StoreError::Corrupt {
            path: self.path.clone(),
            detail: what,
        };
        let ct = r
            .open_table(CLIENTS)
            .map_err(|e| self.io("open")(e.into()))?;
        let mut clients = Vec::with_capacity(ct.len().unwrap_or(0) as usize);
        for row in ct.iter().map_err(|e| self.io("read")(e.into()))? {
            let (k, v) = row.map_err(|e| self.io("read")(e.into()))?;
            let c = Client::decode(v.value())
                .ok_or_else(|| corrupt(format!("client record of {} bytes", v.value().len())))?;
            clients.push((k.value(), c));
        }
        let et = r.open_table(EDGES).map_err(|e| self.io("open")(e.into()))?;
        let mut edges = Vec::with_capacity(et.len().unwrap_or(0) as usize);
        for row in et.iter().map_err(|e| self.io("read")(e.into()))? {
            let (k, v) = row.map_err(|e| self.io("read")(e.into()))?;
            let e = Edge::decode(v.value())
                .ok_or_else(|| corrupt(format!("edge record of {} bytes", v.value().len())))?;
            edges.push((k.value(), e));
        }
        Ok(Snapshot {
            meta,
            clients,
            edges,
        })
    }

    /// Writes one batch in one transaction: deletions, then upserts, then
    /// the meta. Durable when it returns.
    pub fn write(&self, b: &Batch) -> Result<(), StoreError> {
        let w = self
            .db
            .begin_write()
            .map_err(|e| self.io("write")(e.into()))?;
        {
            let mut ct = w
                .open_table(CLIENTS)
                .map_err(|e| self.io("open")(e.into()))?;
            for k in &b.deleted_clients {
                ct.remove(*k).map_err(|e| self.io("write")(e.into()))?;
            }
            for (k, c) in &b.clients {
                ct.insert(*k, c.encode().as_slice())
                    .map_err(|e| self.io("write")(e.into()))?;
            }
            let mut et = w.open_table(EDGES).map_err(|e| self.io("open")(e.into()))?;
            for k in &b.deleted_edges {
                et.remove(*k).map_err(|e| self.io("write")(e.into()))?;
            }
            for (k, e) in &b.edges {
                et.insert(*k, e.encode().as_slice())
                    .map_err(|e| self.io("write")(e.into()))?;
            }
            let mut mt = w.open_table(META).map_err(|e| self.io("open")(e.into()))?;
            let m = &b.meta;
            let mut put = |k: &str, v: Option<u64>| -> Result<(), StoreError> {
                if let Some(v) = v {
                    mt.insert(k, v).map_err(|e| self.io("write")(e.into()))?;
                }
                Ok(())
            };
            put("started", m.started.map(|v| v as u64))?;
            put("last", m.last.map(|v| v as u64))?;
            put("learned", Some(m.learned))?;
            put("evicted_clients", Some(m.evicted_clients))?;
            put("evicted_edges", Some(m.evicted_edges))?;
            put("batches", Some(m.batches))?;
        }
        w.commit().map_err(|e| self.io("commit")(e.into()))
    }

    /// Gives back the space of pages freed by earlier batches (redb keeps
    /// them for reuse; a file learned in many batches holds many). Takes
    /// as long as a full rewrite: for `baseline learn`'s end, not the daemon.
    pub fn compact(&mut self) -> Result<(), StoreError> {
        self.db
            .compact()
            .map(drop)
            .map_err(|e| self.io("compaction")(e.into()))
    }

    /// Deletes every client and edge (an import replacing the baseline).
    pub fn clear(&self) -> Result<(), StoreError> {
        let w = self
            .db
            .begin_write()
            .map_err(|e| self.io("write")(e.into()))?;
        w.delete_table(CLIENTS)
            .map_err(|e| self.io("write")(e.into()))?;
        w.delete_table(EDGES)
            .map_err(|e| self.io("write")(e.into()))?;
        w.open_table(CLIENTS)
            .map_err(|e| self.io("open")(e.into()))?;
        w.open_table(EDGES).map_err(|e| self.io("open")(e.into()))?;
        w.commit().map_err(|e| self.io("commit")(e.into()))
    }

    /// The schema version the file says (tests).
    #[doc(hidden)]
    pub fn schema_for_test(&self) -> Result<u64, StoreError> {
        let r = self
            .db
            .begin_read()
            .map_err(|e| self.io("read")(e.into()))?;
        let t = r.open_table(META).map_err(|e| self.io("open")(e.into()))?;
        let v = t.get("schema").map_err(|e| self.io("read")(e.into()))?;
        Ok(v.map_or(0, |v| v.value()))
    }

    /// Writes raw client records (tests of older layouts).
    #[doc(hidden)]
    pub fn write_raw_clients_for_test(
        &self,
        rows: impl Iterator<Item = (u128, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let w = self
            .db
            .begin_write()
            .map_err(|e| self.io("write")(e.into()))?;
        {
            let mut t = w
                .open_table(CLIENTS)
                .map_err(|e| self.io("open")(e.into()))?;
            for (k, v) in rows {
                t.insert(k, v.as_slice())
                    .map_err(|e| self.io("write")(e.into()))?;
            }
        }
        w.commit().map_err(|e| self.io("commit")(e.into()))
    }

    /// Sets the schema version (tests of the newer-version refusal).
    #[doc(hidden)]
    pub fn set_schema_for_test(&self, v: u64) -> Result<(), StoreError> {
        let w = self
            .db
            .begin_write()
            .map_err(|e| self.io("write")(e.into()))?;
        w.open_table(META)
            .map_err(|e| self.io("open")(e.into()))?
            .insert("schema", v)
            .map_err(|e| self.io("write")(e.into()))?;
        w.commit().map_err(|e| self.io("commit")(e.into()))
    }
}
