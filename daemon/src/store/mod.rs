//! Durable state in an embedded SQLite database (`strata.db` in the data
//! directory): the compiled-metadata cache keyed by revision hash, instance
//! specs with their pinned hash and last state, and the audit journal.
//!
//! Every call is synchronous and short; async callers run them on the
//! blocking pool. The connection sits behind a mutex: SQLite serialises
//! writers anyway, and one connection keeps WAL checkpoints simple.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
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

/// Tables every migrated database has; one missing is damage.
const TABLES: &[&str] = &["module_metadata", "instances", "audit", "revision_usage"];

/// A store error: the database could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite reported an error.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A stored value could not be decoded.
    #[error("corrupt stored value: {0}")]
    Corrupt(String),
    /// The database file itself could not be written.
    #[error("database file I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The database file exists but cannot be used: empty, not a database,
    /// damaged, or without Strata's tables. Never replaced by an empty one.
    #[error(
        "the database {} {problem}; refusing to start rather than run without its instances \
         (move it aside and restore a backup, or remove it to start empty; see docs/operations.md)",
        path.display()
    )]
    Unusable {
        /// The database file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// [`Store::close`] was called (the daemon is shutting down).
    #[error("the database is closed: the daemon is shutting down")]
    Closed,
}

impl StoreError {
    /// Whether the disk (or the quota) was full: the API answers 507.
    pub fn is_storage_full(&self) -> bool {
        match self {
            StoreError::Sqlite(e) => e.sqlite_error_code() == Some(ErrorCode::DiskFull),
            StoreError::Io(e) => {
                matches!(e.kind(), std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
            }
            _ => false,
        }
    }

    /// Whether the failure was the disk's (full, I/O error, read-only)
    /// rather than the request's.
    fn is_storage_failure(&self) -> bool {
        match self {
            StoreError::Sqlite(e) => matches!(
                e.sqlite_error_code(),
                Some(ErrorCode::DiskFull | ErrorCode::SystemIoFailure | ErrorCode::ReadOnly | ErrorCode::CannotOpen)
            ),
            StoreError::Io(_) => true,
            _ => false,
        }
    }
}

/// Where durable writes are failing, by target (`database`, `strategies
/// directory`): `/healthz` is `degraded` while any is. A target recovers at
/// its next successful write.
#[derive(Debug, Default)]
pub struct WriteHealth {
    failing: Mutex<BTreeMap<&'static str, String>>,
}

impl WriteHealth {
    /// A write to `target` failed for `reason`.
    pub fn failed(&self, target: &'static str, reason: &str) {
        let message = format!("writes to the {target} are failing: {reason}");
        if self.failing.lock().insert(target, message.clone()).is_none() {
            tracing::error!("{message}");
        }
    }

    /// A write to `target` succeeded.
    pub fn succeeded(&self, target: &'static str) {
        if self.failing.lock().remove(target).is_some() {
            tracing::info!("writes to the {target} succeed again");
        }
    }

    /// One message per failing target.
    pub fn failures(&self) -> Vec<String> {
        self.failing.lock().values().cloned().collect()
    }
}

/// The SQLite store.
#[derive(Debug)]
pub struct Store {
    /// `None` once [`Store::close`]d.
    conn: Mutex<Option<Connection>>,
    health: WriteHealth,
}

/// The write-health target of the database.
const DATABASE_TARGET: &str = "database";

impl Store {
    /// Opens the database in `data_dir` and migrates it. A missing file is a
    /// new data directory: the database is created (under a temporary name,
    /// then renamed, so a crash never leaves a half-made one). A file that is
    /// present but empty, not a database, damaged or without Strata's tables
    /// is [`StoreError::Unusable`], naming the file.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let path = data_dir.join(DATABASE_FILE);
        let unusable = |problem: String| StoreError::Unusable { path: path.clone(), problem };
        match std::fs::metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Self::create(&path).map_err(|e| unusable(format!("could not be created: {e}")))?;
            }
            Err(e) => return Err(unusable(format!("cannot be read: {e}"))),
            Ok(meta) if meta.len() == 0 => return Err(unusable("is empty (0 bytes)".into())),
            Ok(_) => {}
        }
        let conn = Self::connect(&path).map_err(|e| unusable(format!("cannot be opened: {e}")))?;
        Self::check(&conn).map_err(unusable)?;
        let store = Self { conn: Mutex::new(Some(conn)), health: WriteHealth::default() };
        store.migrate().map_err(|e| unusable(format!("could not be migrated: {e}")))?;
        Ok(store)
    }

    /// Opens a connection the way the daemon uses it.
    fn connect(path: &Path) -> rusqlite::Result<Connection> {
        // The usual flags, less CREATE: the file was checked (or made) just before.
        let flags = rusqlite::OpenFlags::default() - rusqlite::OpenFlags::SQLITE_OPEN_CREATE;
        let conn = Connection::open_with_flags(path, flags)?;
        // WAL + synchronous=FULL: a commit that returned is on disk, even after kill -9
        // or power loss, while readers never block the writer.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(conn)
    }

    /// Creates a migrated database at `path`: built beside it under a
    /// temporary name, fsynced, then renamed into place.
    fn create(path: &Path) -> Result<(), StoreError> {
        let tmp = path.with_file_name(format!(".{DATABASE_FILE}.new-{}", std::process::id()));
        let remove_tmp = || {
            for suffix in ["", "-journal", "-wal", "-shm"] {
                let mut name = tmp.clone().into_os_string();
                name.push(suffix);
                let _ = std::fs::remove_file(name);
            }
        };
        remove_tmp();
        let created = (|| {
            let mut conn = Connection::open(&tmp)?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            Self::apply_migrations(&mut conn)?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.close().map_err(|(_, e)| e)?;
            std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(StoreError::Io)?;
            std::fs::rename(&tmp, path).map_err(StoreError::Io)?;
            crate::registry::file::sync_dir(path.parent().unwrap_or(Path::new("."))).map_err(StoreError::Io)
        })();
        if created.is_err() {
            remove_tmp();
        }
        created
    }

    /// Checks an existing database is one: readable pages, Strata's schema.
    fn check(conn: &Connection) -> Result<(), String> {
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(|e| format!("is not a usable SQLite database ({e})"))?;
        if usize::try_from(version).is_ok_and(|v| v > MIGRATIONS.len()) {
            return Err(format!("has schema version {version}, newer than this stratad knows ({})", MIGRATIONS.len()));
        }
        let mut problems = Vec::new();
        conn.pragma_query(None, "quick_check", |row| {
            let line: String = row.get(0)?;
            if line != "ok" && problems.len() < 3 {
                problems.push(line);
            }
            Ok(())
        })
        .map_err(|e| format!("is damaged ({e})"))?;
        if !problems.is_empty() {
            return Err(format!("is damaged (integrity check: {})", problems.join("; ")));
        }
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .and_then(|mut stmt| stmt.query_map([], |row| row.get(0))?.collect())
            .map_err(|e| format!("is damaged ({e})"))?;
        if version == 0 {
            return Err(format!("holds no Strata schema (tables: {})", list_or_none(&tables)));
        }
        // Tables created by the migrations already applied must all be there.
        let expected = TABLES.iter().filter(|t| MIGRATIONS[..version as usize].iter().any(|m| m.contains(*t)));
        let missing: Vec<&str> = expected.filter(|t| !tables.iter().any(|n| n == *t)).copied().collect();
        if !missing.is_empty() {
            return Err(format!("is missing tables: {}", missing.join(", ")));
        }
        Ok(())
    }

    fn migrate(&self) -> Result<(), StoreError> {
        Self::apply_migrations(&mut *self.lock()?)
    }

    /// The open connection, locked.
    fn lock(&self) -> Result<parking_lot::MappedMutexGuard<'_, Connection>, StoreError> {
        parking_lot::MutexGuard::try_map(self.conn.lock(), Option::as_mut).map_err(|_| StoreError::Closed)
    }

    /// Closes the database now (SQLite checkpoints its WAL into the file),
    /// rather than whenever the last holder of the store lets go: after
    /// this, nothing the daemon does can touch the file, and every call
    /// answers [`StoreError::Closed`]. Called at shutdown.
    pub fn close(&self) {
        let Some(conn) = self.conn.lock().take() else { return };
        if let Err((_, error)) = conn.close() {
            tracing::warn!(%error, "closing the database failed");
        }
    }

    fn apply_migrations(conn: &mut Connection) -> Result<(), StoreError> {
        let applied: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(applied).unwrap_or(0)) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", index as i64 + 1)?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Where durable writes are failing (the database's own state, and the
    /// strategies directory's as the registry reports it).
    pub fn write_health(&self) -> &WriteHealth {
        &self.health
    }

    /// Checks the database answers (used by `/healthz`).
    pub fn ping(&self) -> Result<(), StoreError> {
        self.lock()?.query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    /// Every cached metadata entry. Undecodable rows are skipped (and so
    /// recompiled), never fatal.
    pub fn load_metadata(&self) -> Result<HashMap<RevisionHash, Arc<ModuleMetadata>>, StoreError> {
        let conn = self.lock()?;
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
        let conn = self.lock()?;
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
        self.with_conn(|conn| {
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
        })
    }

    /// Forgets cached metadata of deleted revisions.
    pub fn forget_metadata<'a>(&self, hashes: impl IntoIterator<Item = &'a RevisionHash>) -> Result<(), StoreError> {
        self.with_conn(|conn| {
            let tx = conn.transaction()?;
            {
                let mut stmt = tx.prepare_cached("DELETE FROM module_metadata WHERE hash = ?1")?;
                for hash in hashes {
                    stmt.execute([hash.to_string()])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
    }
}

impl Store {
    /// Runs `f` on the connection (short, synchronous work only), and keeps
    /// [`WriteHealth`] up to date: a disk failure marks the database failing,
    /// a successful write clears it.
    fn with_conn<R>(&self, f: impl FnOnce(&mut Connection) -> Result<R, StoreError>) -> Result<R, StoreError> {
        let mut conn = self.lock()?;
        let before = conn.total_changes();
        let result = f(&mut conn);
        let wrote = conn.total_changes() != before;
        drop(conn);
        match &result {
            Err(e) if e.is_storage_failure() => self.health.failed(DATABASE_TARGET, &e.to_string()),
            Ok(_) if wrote => self.health.succeeded(DATABASE_TARGET),
            _ => {}
        }
        result
    }
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() { "none".into() } else { names.join(", ") }
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

    /// The message `Store::open` refuses `data_dir` with.
    fn refusal(data_dir: &Path) -> String {
        let error = Store::open(data_dir).expect_err("refused");
        assert!(matches!(error, StoreError::Unusable { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.contains(&*data_dir.join(DATABASE_FILE).to_string_lossy()), "names the file: {message}");
        message
    }

    #[test]
    fn a_missing_database_is_created_whole_and_an_empty_or_damaged_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATABASE_FILE);
        drop(Store::open(dir.path()).unwrap());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(names.iter().all(|n| n.to_string_lossy().starts_with(DATABASE_FILE)), "no temporary left: {names:?}");
        drop(Store::open(dir.path()).unwrap());

        std::fs::write(&path, b"").unwrap();
        assert!(refusal(dir.path()).contains("is empty (0 bytes)"));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0, "left as found");

        let noise: Vec<u8> = (0..65_536u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        std::fs::write(&path, &noise).unwrap();
        let message = refusal(dir.path());
        assert!(message.contains("file is not a database"), "{message}");
        assert_eq!(std::fs::read(&path).unwrap(), noise, "left as found");
    }

    #[test]
    fn a_database_without_strata_tables_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATABASE_FILE);
        Connection::open(&path).unwrap().execute_batch("CREATE TABLE other (x)").unwrap();
        assert!(refusal(dir.path()).contains("holds no Strata schema (tables: other)"));

        std::fs::remove_file(&path).unwrap();
        drop(Store::open(dir.path()).unwrap());
        Connection::open(&path).unwrap().execute_batch("DROP TABLE instances").unwrap();
        assert!(refusal(dir.path()).contains("is missing tables: instances"));

        Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();
        assert!(refusal(dir.path()).contains("schema version 99"));
    }

    #[test]
    fn damaged_pages_are_found_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DATABASE_FILE);
        {
            let store = Store::open(dir.path()).unwrap();
            let entries: Vec<_> = (0..200u32).map(|i| (RevisionHash::of(&i.to_le_bytes()), metadata())).collect();
            store.save_metadata(entries.iter().map(|(h, m)| (h, m))).unwrap();
        }
        // Keep the header page, scribble over the rest.
        let mut bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() > 8192, "{} bytes", bytes.len());
        for (i, byte) in bytes.iter_mut().enumerate().skip(4096) {
            *byte = (i * 7 % 251) as u8;
        }
        std::fs::write(&path, &bytes).unwrap();
        assert!(refusal(dir.path()).contains("is damaged"));
    }
}
