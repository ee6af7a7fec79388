//! Persistence of the revision usage index: timestamps and stopped-instance
//! history per `{strategy, hash}`. Running ids are not stored here: they come
//! back with the instances that are restarted at boot.

use rusqlite::params;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Store, StoreError};
use crate::usage::Persisted;

fn format(ts: Option<OffsetDateTime>) -> Option<String> {
    ts.and_then(|t| t.format(&Rfc3339).ok())
}

fn parse(text: Option<String>) -> Option<OffsetDateTime> {
    text.and_then(|t| OffsetDateTime::parse(&t, &Rfc3339).ok())
}

impl Store {
    /// Writes changed usage entries (and removes deleted ones) in one transaction.
    pub fn save_usage(&self, entries: &[Persisted]) -> Result<(), StoreError> {
        self.with_conn(|conn| {
            let tx = conn.transaction()?;
            Self::write_usage(&tx, entries)?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Writes changed usage entries inside the caller's transaction.
    pub(super) fn write_usage(tx: &rusqlite::Connection, entries: &[Persisted]) -> Result<(), StoreError> {
        for entry in entries {
            if entry.removed {
                tx.prepare_cached("DELETE FROM revision_usage WHERE strategy = ?1 AND hash = ?2")?
                    .execute(params![entry.strategy, entry.hash.to_string()])?;
                continue;
            }
            let stopped = serde_json::to_string(&entry.stopped).expect("ids serialise");
            tx.prepare_cached(
                "INSERT INTO revision_usage (strategy, hash, first_seen, last_seen, stopped) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(strategy, hash) DO UPDATE SET first_seen = excluded.first_seen,
                 last_seen = excluded.last_seen, stopped = excluded.stopped",
            )?
            .execute(params![
                entry.strategy,
                entry.hash.to_string(),
                format(entry.first_seen),
                format(entry.last_seen),
                stopped
            ])?;
        }
        Ok(())
    }

    /// Every stored usage entry.
    pub fn load_usage(&self) -> Result<Vec<Persisted>, StoreError> {
        self.with_conn(|conn| {
            let mut stmt = conn.prepare("SELECT strategy, hash, first_seen, last_seen, stopped FROM revision_usage")?;
            let rows = stmt.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, Option<String>>(2)?,
                    row.get::<_, Option<String>>(3)?,
                    row.get::<_, String>(4)?,
                ))
            })?;
            let mut out = Vec::new();
            for row in rows {
                let (strategy, hash, first, last, stopped) = row?;
                let Ok(hash) = hash.parse() else { continue };
                out.push(Persisted {
                    strategy,
                    hash,
                    first_seen: parse(first),
                    last_seen: parse(last),
                    stopped: serde_json::from_str(&stopped).unwrap_or_default(),
                    removed: false,
                });
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_shared::RevisionHash;

    #[test]
    fn usage_survives_reopening_and_removal_deletes_it() {
        let dir = tempfile::tempdir().unwrap();
        let entry = Persisted {
            strategy: "s".into(),
            hash: RevisionHash::of(b"s"),
            first_seen: Some(OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()),
            last_seen: None,
            stopped: vec!["a".into(), "b".into()],
            removed: false,
        };
        Store::open(dir.path()).unwrap().save_usage(std::slice::from_ref(&entry)).unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load_usage().unwrap(), vec![entry.clone()]);
        store.save_usage(&[Persisted { removed: true, ..entry }]).unwrap();
        assert!(store.load_usage().unwrap().is_empty());
    }
}
