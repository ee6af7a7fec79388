//! Instance persistence: each instance's spec (selector as typed, pinned
//! hash, config, scope), its last lifecycle state, and an append-only audit
//! journal. Behind [`InstanceStore`] so another backend can be added.

use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

/// The persisted spec of one instance. The JSON form is what the database
/// holds, so its fields only ever gain optional companions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredInstance {
    /// Instance id.
    pub id: String,
    /// The selector exactly as the operator typed it.
    pub selector: String,
    /// The strategy it belongs to.
    pub strategy: String,
    /// The pinned revision (`sha256:<hex>`): never re-resolved at boot.
    pub hash: strata_shared::RevisionHash,
    /// Validated config, defaults filled in.
    pub config: serde_json::Map<String, serde_json::Value>,
    /// Provider name → symbols.
    pub scope: strata_shared::api::Scope,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: time::OffsetDateTime,
}

/// The lifecycle state that survives a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredState {
    /// Started again at boot.
    Running,
    /// Restored stopped.
    Stopped,
    /// Restored failed, with its last error.
    Failed,
}

impl StoredState {
    fn as_str(self) -> &'static str {
        match self {
            StoredState::Running => "running",
            StoredState::Stopped => "stopped",
            StoredState::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "running" => StoredState::Running,
            "failed" => StoredState::Failed,
            _ => StoredState::Stopped,
        }
    }
}

/// One line of the audit journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// What happened: `create`, `start`, `stop`, `fail`, `delete`, `update`,
    /// and for the registry `upload`, `tag-move`, `tag-delete`, `revision-delete`.
    pub action: &'static str,
    /// The instance concerned (empty for registry operations).
    pub instance_id: String,
    /// Its strategy.
    pub strategy: String,
    /// Its pinned hash.
    pub hash: String,
    /// Free-form detail (an error, a previous hash).
    pub detail: Option<String>,
}

/// One stored line of the audit journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the journal.
    pub seq: i64,
    /// What happened.
    pub action: String,
    /// The instance concerned.
    pub instance_id: Option<String>,
    /// Free-form detail.
    pub detail: Option<String>,
}

/// Durable instance state. Every method commits before returning: a caller
/// acknowledges an operation only after its write is on disk.
pub trait InstanceStore: Send + Sync {
    /// Every instance with its last state and error.
    fn load_instances(&self) -> Result<Vec<(StoredInstance, StoredState, Option<String>)>, StoreError>;
    /// Inserts or replaces an instance, with its audit line, in one transaction.
    fn save_instance(
        &self,
        instance: &StoredInstance,
        state: StoredState,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;
    /// Records a state change, with its audit line.
    fn set_state(
        &self,
        id: &str,
        state: StoredState,
        error: Option<&str>,
        audit: &AuditEntry,
    ) -> Result<(), StoreError>;
    /// Removes an instance, with its audit line.
    fn delete_instance(&self, id: &str, audit: &AuditEntry) -> Result<(), StoreError>;
    /// Appends an audit line on its own (registry operations: uploads, tag
    /// moves, deletions).
    fn append_audit(&self, audit: &AuditEntry) -> Result<(), StoreError>;
    /// The last `limit` audit lines, newest first.
    fn recent_audit(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;
}

impl Store {
    /// Runs `change` and appends `audit` in one transaction: a change and its
    /// journal line are committed together or not at all.
    fn audited(
        &self,
        audit: &AuditEntry,
        change: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        self.with_conn(|conn| {
            let tx = conn.transaction()?;
            change(&tx)?;
            Self::journal(&tx, audit)?;
            tx.commit()?;
            Ok(())
        })
    }

    fn journal(tx: &rusqlite::Connection, audit: &AuditEntry) -> Result<(), StoreError> {
        tx.prepare_cached(
            "INSERT INTO audit (action, instance_id, strategy, hash, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![audit.action, audit.instance_id, audit.strategy, audit.hash, audit.detail])?;
        Ok(())
    }

    fn upsert(
        tx: &rusqlite::Connection,
        instance: &StoredInstance,
        state: StoredState,
        last_error: Option<&str>,
    ) -> Result<(), StoreError> {
        let spec = serde_json::to_string(instance).expect("instance spec serialises");
        tx.prepare_cached(
            "INSERT INTO instances (id, spec, state, last_error) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(id) DO UPDATE SET spec = excluded.spec, state = excluded.state,
             last_error = excluded.last_error, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
        )?
        .execute(params![instance.id, spec, state.as_str(), last_error])?;
        Ok(())
    }

    fn apply(tx: &rusqlite::Connection, write: &InstanceWrite) -> Result<(), StoreError> {
        match write {
            InstanceWrite::Save { instance, state, last_error, audits } => {
                Self::upsert(tx, instance, *state, last_error.as_deref())?;
                audits.iter().try_for_each(|audit| Self::journal(tx, audit))
            }
            InstanceWrite::Delete { id, audit } => {
                tx.prepare_cached("DELETE FROM instances WHERE id = ?1")?.execute([id])?;
                Self::journal(tx, audit)
            }
        }
    }

    /// Group commit: applies several callers' writes and the changed usage
    /// entries in ONE transaction (one fsync). Each group runs in its own
    /// savepoint, so a group that fails is rolled back alone and reported in
    /// its slot of the answer; the outer error means the commit itself failed
    /// and nothing was written.
    pub fn commit_groups<'a>(
        &self,
        groups: impl IntoIterator<Item = &'a [InstanceWrite]>,
        usage: &[crate::usage::Persisted],
    ) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        self.with_conn(|conn| {
            let mut tx = conn.transaction()?;
            let mut outcomes = Vec::new();
            for group in groups {
                let mut savepoint = tx.savepoint()?;
                let applied = group.iter().try_for_each(|write| Self::apply(&savepoint, write));
                if applied.is_ok() {
                    savepoint.commit()?;
                } else {
                    savepoint.rollback()?;
                }
                outcomes.push(applied);
            }
            Self::write_usage(&tx, usage)?;
            tx.commit()?;
            Ok(outcomes)
        })
    }
}

/// One durable change of an instance, applied by [`Store::commit_groups`].
#[derive(Debug, Clone, PartialEq)]
pub enum InstanceWrite {
    /// Inserts or replaces the instance with its state, last error and
    /// audit lines.
    Save {
        /// The spec.
        instance: StoredInstance,
        /// Its state.
        state: StoredState,
        /// Its last error (`failed` only).
        last_error: Option<String>,
        /// The journal lines of the transition.
        audits: Vec<AuditEntry>,
    },
    /// Removes the instance, with its audit line.
    Delete {
        /// Instance id.
        id: String,
        /// The journal line.
        audit: AuditEntry,
    },
}

impl InstanceStore for Store {
    fn load_instances(&self) -> Result<Vec<(StoredInstance, StoredState, Option<String>)>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare("SELECT spec, state, last_error FROM instances ORDER BY id")?;
            let rows = stmt.query_map([], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?, row.get::<_, Option<String>>(2)?))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (spec, state, error) = row?;
                let spec: StoredInstance =
                    serde_json::from_str(&spec).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                out.push((spec, StoredState::parse(&state), error));
            }
            Ok(out)
        })
    }

    fn save_instance(
        &self,
        instance: &StoredInstance,
        state: StoredState,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        self.audited(audit, |tx| Self::upsert(tx, instance, state, None))
    }

    fn set_state(
        &self,
        id: &str,
        state: StoredState,
        error: Option<&str>,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        self.audited(audit, |tx| {
            tx.prepare_cached(
                "UPDATE instances SET state = ?2, last_error = ?3, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
                 WHERE id = ?1",
            )?
            .execute(params![id, state.as_str(), error])?;
            Ok(())
        })
    }

    fn delete_instance(&self, id: &str, audit: &AuditEntry) -> Result<(), StoreError> {
        self.audited(audit, |tx| {
            tx.prepare_cached("DELETE FROM instances WHERE id = ?1")?.execute([id])?;
            Ok(())
        })
    }

    fn append_audit(&self, audit: &AuditEntry) -> Result<(), StoreError> {
        self.audited(audit, |_| Ok(()))
    }

    fn recent_audit(&self, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt =
                conn.prepare_cached("SELECT seq, action, instance_id, detail FROM audit ORDER BY seq DESC LIMIT ?1")?;
            let rows = stmt.query_map([limit as i64], |row| {
                Ok(AuditRecord { seq: row.get(0)?, action: row.get(1)?, instance_id: row.get(2)?, detail: row.get(3)? })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn instance(id: &str) -> StoredInstance {
        StoredInstance {
            id: id.into(),
            selector: "noop:prod".into(),
            strategy: "noop".into(),
            hash: strata_shared::RevisionHash::of(b"noop"),
            config: serde_json::Map::from_iter([("dry_run".to_owned(), serde_json::Value::Bool(true))]),
            scope: Default::default(),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    fn audit(action: &'static str, id: &str) -> AuditEntry {
        AuditEntry { action, instance_id: id.into(), strategy: "noop".into(), hash: "h".into(), detail: None }
    }

    #[test]
    fn grouped_writes_commit_together_with_their_journal() {
        let dir = tempfile::tempdir().unwrap();
        let save = |id: &str, state, error: Option<&str>, actions: &[&'static str]| InstanceWrite::Save {
            instance: instance(id),
            state,
            last_error: error.map(str::to_owned),
            audits: actions.iter().map(|action| audit(action, id)).collect(),
        };
        {
            let store = Store::open(dir.path()).unwrap();
            let first = [
                save("a", StoredState::Running, None, &["create", "start"]),
                save("b", StoredState::Stopped, None, &["create"]),
            ];
            let second = [save("c", StoredState::Failed, Some("boom"), &["create", "fail"])];
            let outcomes = store.commit_groups([&first[..], &second[..]], &[]).unwrap();
            assert!(outcomes.iter().all(Result::is_ok));
            let third = [InstanceWrite::Delete { id: "b".into(), audit: audit("delete", "b") }];
            store.commit_groups([&third[..]], &[]).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let loaded = store.load_instances().unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[0], (instance("a"), StoredState::Running, None));
        assert_eq!(loaded[1], (instance("c"), StoredState::Failed, Some("boom".into())));
        let actions: Vec<_> = store.recent_audit(10).unwrap().into_iter().map(|r| r.action).collect();
        assert_eq!(actions, ["delete", "fail", "create", "create", "start", "create"]);
    }

    #[test]
    fn instances_and_their_state_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.save_instance(&instance("a"), StoredState::Stopped, &audit("create", "a")).unwrap();
            store.save_instance(&instance("b"), StoredState::Stopped, &audit("create", "b")).unwrap();
            store.set_state("a", StoredState::Running, None, &audit("start", "a")).unwrap();
            store.set_state("b", StoredState::Failed, Some("boom"), &audit("fail", "b")).unwrap();
            store.save_instance(&instance("c"), StoredState::Stopped, &audit("create", "c")).unwrap();
            store.delete_instance("c", &audit("delete", "c")).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let loaded = store.load_instances().unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[0], (instance("a"), StoredState::Running, None));
        assert_eq!(loaded[1], (instance("b"), StoredState::Failed, Some("boom".into())));
        let journal = store.recent_audit(10).unwrap();
        assert_eq!(journal.len(), 6);
        assert_eq!(journal[0].action, "delete");
        assert!(journal.windows(2).all(|w| w[0].seq > w[1].seq));
        assert_eq!(StoredState::parse("unknown"), StoredState::Stopped);
    }
}
