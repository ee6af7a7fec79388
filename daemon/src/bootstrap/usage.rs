//! Usage exports (`GET /strategies/registry`) and pruning candidates.
//!
//! An export is read from a file or fetched from a loopback URL (the tool
//! never talks to another host: the export carries the whole registry). Every
//! revision of the registry being migrated that the export lists with zero
//! running instances is a pruning candidate; a candidate is *prunable* when
//! the export also says it is `retired` and no tag of the registry being
//! written points to it (checked again here, as the registry may have changed
//! since the export).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Serialize;
use strata_shared::RevisionHash;
use strata_shared::api::RegistryExport;
use time::OffsetDateTime;

use super::BootstrapError;
use crate::registry::file::StrategyDoc;

/// Where a usage export comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageSource {
    /// A file holding the JSON of `GET /strategies/registry`.
    File(PathBuf),
    /// `http://<loopback>:<port>/strategies/registry` of a running daemon.
    Url(String),
}

impl UsageSource {
    /// Interprets a `--usage` argument: anything with a `scheme://` prefix is
    /// a URL and must be plain HTTP on a loopback host; the rest is a path.
    pub fn parse(arg: &str) -> Result<UsageSource, BootstrapError> {
        if !arg.contains("://") {
            return Ok(UsageSource::File(PathBuf::from(arg)));
        }
        let refuse = || BootstrapError::NotLoopback(arg.to_owned());
        let url = reqwest::Url::parse(arg).map_err(|_| refuse())?;
        let host = url.host_str().ok_or_else(refuse)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let loopback =
            host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        if url.scheme() != "http" || !loopback {
            return Err(refuse());
        }
        Ok(UsageSource::Url(arg.to_owned()))
    }

    /// The file name or URL, for messages.
    pub fn name(&self) -> String {
        match self {
            UsageSource::File(path) => path.display().to_string(),
            UsageSource::Url(url) => url.clone(),
        }
    }
}

/// Reads or fetches a usage export. The URL is fetched with redirects
/// disabled (a redirect could leave the loopback host) and a 30 s timeout.
pub fn load_export(source: &UsageSource) -> Result<RegistryExport, BootstrapError> {
    let error = |message: String| BootstrapError::Usage { source_name: source.name(), message };
    let bytes = match source {
        UsageSource::File(path) => std::fs::read(path).map_err(|e| error(e.to_string()))?,
        UsageSource::Url(url) => {
            let client = reqwest::blocking::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| error(e.to_string()))?;
            let response = client.get(url).send().map_err(|e| error(e.to_string()))?;
            let status = response.status();
            if !status.is_success() {
                return Err(error(format!("the server answered {status}")));
            }
            response.bytes().map_err(|e| error(e.to_string()))?.to_vec()
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| error(format!("not a GET /strategies/registry export: {e}")))
}

/// A revision with zero usage in the export.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageCandidate {
    /// Strategy name.
    pub strategy: String,
    /// The revision.
    pub hash: RevisionHash,
    /// Its primary tag in the registry being written.
    pub tag: String,
    /// Tags pointing to it in the registry being written.
    pub tags: Vec<String>,
    /// First time any instance ran it (from the export).
    #[serde(with = "time::serde::rfc3339::option")]
    pub first_seen: Option<OffsetDateTime>,
    /// Last time an instance ran it (from the export).
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_seen: Option<OffsetDateTime>,
    /// Whether the export calls it retired.
    pub retired: bool,
    /// Retired and untagged: what `--prune` removes.
    pub prunable: bool,
}

/// The usage side of a plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    /// The file or URL the export came from.
    pub source: String,
    /// Revisions of the registry that the export lists.
    pub revisions_in_export: usize,
    /// Revisions of the registry the export does not list (new ones, or an
    /// export of another directory): never candidates.
    pub not_in_export: usize,
    /// Revisions with zero usage, in registry order.
    pub candidates: Vec<UsageCandidate>,
}

/// Matches the export against the registry about to be written.
pub fn report(source: &str, export: &RegistryExport, registry: &IndexMap<String, StrategyDoc>) -> UsageReport {
    let usage: std::collections::HashMap<(&str, RevisionHash), _> =
        export.usage.iter().map(|u| ((u.strategy.as_str(), u.hash), u)).collect();
    let mut report =
        UsageReport { source: source.to_owned(), revisions_in_export: 0, not_in_export: 0, candidates: Vec::new() };
    for (name, doc) in registry {
        for (key, rev) in &doc.hashes {
            let Ok(hash) = key.parse::<RevisionHash>() else { continue };
            let Some(entry) = usage.get(&(name.as_str(), hash)) else {
                report.not_in_export += 1;
                continue;
            };
            report.revisions_in_export += 1;
            if entry.count > 0 {
                continue;
            }
            let tags: Vec<String> = doc.tags.iter().filter(|(_, h)| *h == key).map(|(t, _)| t.clone()).collect();
            report.candidates.push(UsageCandidate {
                strategy: name.clone(),
                hash,
                tag: rev.tag.clone(),
                prunable: entry.retired && tags.is_empty(),
                tags,
                first_seen: entry.first_seen,
                last_seen: entry.last_seen,
                retired: entry.retired,
            });
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::file::RevisionDoc;
    use strata_shared::api::UsageEntry;

    #[test]
    fn only_plain_http_loopback_urls_are_accepted() {
        for ok in ["http://127.0.0.1:8880/strategies/registry", "http://localhost:1/x", "http://[::1]:9/x"] {
            assert_eq!(UsageSource::parse(ok).unwrap(), UsageSource::Url(ok.into()), "{ok}");
        }
        for bad in ["http://10.0.0.1:8880/x", "https://127.0.0.1/x", "http://example.com/x", "ftp://127.0.0.1/x"] {
            assert!(matches!(UsageSource::parse(bad), Err(BootstrapError::NotLoopback(_))), "{bad}");
        }
        assert_eq!(UsageSource::parse("usage.json").unwrap(), UsageSource::File("usage.json".into()));
    }

    #[test]
    fn zero_usage_revisions_are_candidates_and_retired_untagged_ones_prunable() {
        let [a, b, c, d] = [b"a", b"b", b"c", b"d"].map(|x| RevisionHash::of(x));
        let mut doc = StrategyDoc::default();
        for (h, tag) in [(a, "v1"), (b, "v2"), (c, "v3"), (d, "v4")] {
            doc.hashes.insert(h.to_string(), RevisionDoc { tag: tag.into(), path: String::new() });
        }
        doc.tags.insert("latest".into(), c.to_string());
        let registry = IndexMap::from([("s".to_owned(), doc)]);
        let entry = |hash, count, retired| UsageEntry {
            strategy: "s".into(),
            hash,
            count,
            instances: Vec::new(),
            first_seen: None,
            last_seen: None,
            retired,
            drift: false,
        };
        let export = RegistryExport {
            registry: serde_json::json!({}),
            // b runs; c is retired per the export but `latest` now points to it; d is not listed.
            usage: vec![entry(a, 0, true), entry(b, 2, false), entry(c, 0, true)],
            errors: Vec::new(),
        };
        let report = report("f", &export, &registry);
        assert_eq!((report.revisions_in_export, report.not_in_export), (3, 1));
        let got: Vec<_> = report.candidates.iter().map(|c| (c.hash, c.prunable, c.tags.clone())).collect();
        assert_eq!(got, [(a, true, vec![]), (c, false, vec!["latest".to_owned()])]);
    }

    #[test]
    fn an_export_without_optional_fields_is_read_with_defaults() {
        let (a, b) = (RevisionHash::of(b"a"), RevisionHash::of(b"b"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("usage.json");
        // Only what a pruning decision needs: no `registry`, no `errors`, and
        // entries with neither `instances`, timestamps, `retired` nor `drift`.
        let minimal = serde_json::json!({"usage": [
            {"strategy": "s", "hash": a.to_string(), "count": 0},
            {"strategy": "s", "hash": b.to_string(), "count": 1, "lastSeen": "2026-01-02T03:04:05Z"},
        ]});
        std::fs::write(&path, minimal.to_string()).unwrap();
        let export = load_export(&UsageSource::File(path)).expect("a minimal export is accepted");
        assert_eq!((export.registry.clone(), export.errors.len()), (serde_json::Value::Null, 0));
        let first = &export.usage[0];
        assert_eq!((first.instances.len(), first.first_seen, first.last_seen, first.retired), (0, None, None, false));
        assert!(export.usage[1].last_seen.is_some());

        let mut doc = StrategyDoc::default();
        doc.hashes.insert(a.to_string(), RevisionDoc { tag: "v1".into(), path: String::new() });
        let report = report("usage.json", &export, &IndexMap::from([("s".to_owned(), doc)]));
        assert_eq!(report.candidates.len(), 1, "zero usage: a candidate");
        assert!(!report.candidates[0].prunable, "not said to be retired: kept");
    }
}
