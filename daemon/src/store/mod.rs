//! Durable state in an embedded SQLite database (`strata.db` in the data
//! directory): the compiled-metadata cache keyed by revision hash, instance
//! specs with their pinned hash and last state, and the audit journal.
//!
//! Every call is synchronous and short; async callers run them on the
//! blocking pool. The connection sits behind a mutex: SQLite serialises
//! writers anyway, and one connection keeps WAL checkpoints simple.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, params};
use strata_shared::RevisionHash;
use strata_shared::metadata::ModuleMetadata;

mod instances;
mod usage;
pub use instances::{AuditEntry, AuditRecord, InstanceStore, InstanceWrite, StoredInstance, StoredState};

/// File name of the database inside the data directory.
pub const DATABASE_FILE: &str = "strata.db";

/// Schema migrations, applied in order; `PRAGMA user_version` records how many ran.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE module_metadata (
        hash TEXT PRIMARY KEY NOT NULL,
        metadata TEXT NOT NULL,
        compiled_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    ) WITHOUT ROWID;",
    "CREATE TABLE instances (
        id TEXT PRIMARY KEY NOT NULL,
        spec TEXT NOT NULL,
        state TEXT NOT NULL,
        last_error TEXT,
        updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
    ) WITHOUT ROWID;
    CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        ts TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
        action TEXT NOT NULL,
        instance_id TEXT,
        strategy TEXT,
        hash TEXT,
        detail TEXT
    );",
    "CREATE TABLE revision_usage (
        strategy TEXT NOT NULL,
        hash TEXT NOT NULL,
        first_seen TEXT,
        last_seen TEXT,
        stopped TEXT NOT NULL DEFAULT '[]',
        PRIMARY KEY (strategy, hash)
    ) WITHOUT ROWID;",
];

/// A store error: the database could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value could not be decoded.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
}

/// The SQLite store.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir` and migrates it.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(data_dir.join(DATABASE_FILE))?;
        // WAL + synchronous=FULL: a commit that returned is on disk, even after kill -9
        // or power loss, while readers never block the writer.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let store = Self { conn: Mutex::new(conn) };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.lock();
        let applied: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(applied).unwrap_or(0)) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", index as i64 + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Checks the database answers (used by `/healthz`).
    pub fn ping(&self) -> Result<(), StoreError> {
        self.conn.lock().query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    /// Every cached metadata entry. Undecodable rows are skipped (and so
    /// recompiled), never fatal.
    pub fn load_metadata(&self) -> Result<HashMap<RevisionHash, Arc<ModuleMetadata>>, StoreError> {
        let conn = self.conn.lock();
        let mut stmt = conn.prepare("SELECT hash, metadata FROM module_metadata")?;
        let rows = stmt.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?)))?;
        let mut cache = HashMap::new();
        for row in rows {
            let (hash, json) = row?;
            match (hash.parse::<RevisionHash>(), serde_json::from_str::<ModuleMetadata>(&json)) {
                (Ok(hash), Ok(metadata)) => {
                    cache.insert(hash, Arc::new(metadata));
                }
                _ => tracing::warn!(%hash, "skipping undecodable cached metadata"),
            }
        }
        Ok(cache)
    }

    /// One cached metadata entry.
    pub fn metadata(&self, hash: &RevisionHash) -> Result<Option<ModuleMetadata>, StoreError> {
        let conn = self.conn.lock();
        let json: Option<String> = conn
            .query_row("SELECT metadata FROM module_metadata WHERE hash = ?1", [hash.to_string()], |row| row.get(0))
            .optional()?;
        json.map(|json| serde_json::from_str(&json).map_err(|e| StoreError::Corrupt(e.to_string()))).transpose()
    }

    /// Caches compiled metadata for many revisions in one transaction.
    pub fn save_metadata<'a>(
        &self,
        entries: impl IntoIterator<Item = (&'a RevisionHash, &'a ModuleMetadata)>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        {
            let mut stmt =
                tx.prepare_cached("INSERT OR REPLACE INTO module_metadata (hash, metadata) VALUES (?1, ?2)")?;
            for (hash, metadata) in entries {
                let json = serde_json::to_string(metadata).expect("metadata serialises");
                stmt.execute(params![hash.to_string(), json])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Forgets cached metadata of deleted revisions.
    pub fn forget_metadata<'a>(&self, hashes: impl IntoIterator<Item = &'a RevisionHash>) -> Result<(), StoreError> {
        let mut conn = self.conn.lock();
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare_cached("DELETE FROM module_metadata WHERE hash = ?1")?;
            for hash in hashes {
                stmt.execute([hash.to_string()])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

impl Store {
    /// Runs `f` on the connection (short, synchronous work only).
    fn with_conn<R>(&self, f: impl FnOnce(&mut Connection) -> Result<R, StoreError>) -> Result<R, StoreError> {
        f(&mut self.conn.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata() -> ModuleMetadata {
        ModuleMetadata {
            name: "noop".into(),
            display_name: "No-op".into(),
            description: None,
            tag: Some("v1".into()),
            version: None,
            config: vec![],
            events: vec![],
        }
    }

    #[test]
    fn metadata_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let hash = RevisionHash::of(b"noop");
        {
            let store = Store::open(dir.path()).unwrap();
            store.save_metadata([(&hash, &metadata())]).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load_metadata().unwrap()[&hash].as_ref(), &metadata());
        assert_eq!(store.metadata(&hash).unwrap(), Some(metadata()));
        store.forget_metadata([&hash]).unwrap();
        assert!(store.load_metadata().unwrap().is_empty());
        store.ping().unwrap();
    }
}
