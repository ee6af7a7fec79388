//! Targeted refresh (SPEC §2.2): re-resolve exactly the instances of some
//! hashes or strategies, re-pin those whose selector moved, restart only
//! those that were running, and say why for each.

use std::collections::BTreeSet;

use strata_shared::api::{InstanceState, RefreshReason, RefreshRequest, RefreshResult};
use strata_shared::{RevisionHash, Selector};

use super::lifecycle::Repin;
use super::{InstanceError, Instances};
use crate::registry::ResolveError;

impl Instances {
    /// The strategies whose registry entries a refresh must re-read, or
    /// `None` when it concerns every instance (or a target cannot be placed
    /// without reading everything).
    pub fn refresh_scope(&self, request: &RefreshRequest) -> Option<Vec<String>> {
        if request.hashes.is_empty() && request.strategies.is_empty() {
            return None;
        }
        let mut names = BTreeSet::new();
        for text in &request.hashes {
            names.insert(self.registry.resolve(text).ok()?.strategy.to_string());
        }
        for text in &request.strategies {
            match Selector::parse(text).ok()?.strategy() {
                Some(name) => names.insert(name.to_owned()),
                None => names.insert(self.registry.resolve(text).ok()?.strategy.to_string()),
            };
        }
        Some(names.into_iter().collect())
    }

    /// Runs a refresh. The registry must have been re-read by the caller
    /// (see [`Instances::refresh_scope`]). The instances concerned come from
    /// the usage index, never from a scan.
    pub fn refresh(&self, request: &RefreshRequest) -> Result<Vec<RefreshResult>, InstanceError> {
        self.run_refresh(request, true)
    }

    /// Refreshes the instances following `selector` exactly as typed or of
    /// its strategy, as a tag move does: one result per instance and none
    /// for the target itself, so a tag nobody follows yields no result, in
    /// the answer, the metrics and the `refreshCompleted` delta alike.
    pub fn refresh_followers(&self, selector: &str) -> Result<Vec<RefreshResult>, InstanceError> {
        let request = RefreshRequest { hashes: Vec::new(), strategies: vec![selector.to_owned()] };
        self.run_refresh(&request, false)
    }

    /// [`Instances::refresh`], with or without a result for each target
    /// that matched no instance.
    fn run_refresh(
        &self,
        request: &RefreshRequest,
        report_unmatched: bool,
    ) -> Result<Vec<RefreshResult>, InstanceError> {
        let everything = request.hashes.is_empty() && request.strategies.is_empty();
        let mut target_hashes = Vec::new();
        let mut results = Vec::new();
        for text in &request.hashes {
            let selector = Selector::parse(text).map_err(|e| InstanceError::BadRequest(e.to_string()))?;
            match self.registry.resolve_selector(&selector) {
                Ok(resolved) => target_hashes.push((text.clone(), resolved.strategy, resolved.hash)),
                Err(ResolveError::Invalid(m)) => return Err(InstanceError::BadRequest(m)),
                Err(e @ ResolveError::Ambiguous { .. }) => return Err(e.into()),
                Err(_) => results.push(unmatched(text, None, None, RefreshReason::NotFound)),
            }
        }
        let mut strategy_targets = Vec::new();
        for text in &request.strategies {
            let selector = Selector::parse(text).map_err(|e| InstanceError::BadRequest(e.to_string()))?;
            let strategy = selector
                .strategy()
                .map(str::to_owned)
                .or_else(|| self.registry.resolve_selector(&selector).ok().map(|r| r.strategy.to_string()));
            strategy_targets.push((text.clone(), strategy));
        }

        // Which instances: pinned to a target hash, of a target strategy, or
        // following a target selector exactly as typed.
        let mut ids: BTreeSet<String> = BTreeSet::new();
        if everything {
            ids.extend(self.slots.read().keys().cloned());
        }
        for (_, _, hash) in &target_hashes {
            ids.extend(self.usage.pinned_to(*hash));
        }
        let mut by_strategy: Vec<(String, Vec<String>)> = Vec::new();
        for (_, strategy) in &strategy_targets {
            if let Some(strategy) = strategy
                && !by_strategy.iter().any(|(s, _)| s == strategy)
            {
                by_strategy.push((strategy.clone(), self.usage.strategy_instances(strategy)));
            }
        }
        let chosen: Vec<(String, String, String, RevisionHash)> = {
            let candidates = ids.iter().chain(by_strategy.iter().flat_map(|(_, ids)| ids.iter()));
            let mut seen = BTreeSet::new();
            candidates
                .filter(|id| seen.insert(id.as_str()))
                .filter_map(|id| {
                    let slot = self.slots.read().get(id).cloned()?;
                    let s = slot.lock();
                    let r = &s.record;
                    let hit = everything
                        || target_hashes.iter().any(|(_, _, h)| *h == r.hash)
                        || request.strategies.iter().any(|t| *t == r.strategy || *t == r.selector);
                    hit.then(|| (r.id.clone(), r.selector.clone(), r.strategy.clone(), r.hash))
                })
                .collect()
        };
        for (text, strategy, hash) in &target_hashes {
            if !chosen.iter().any(|(_, _, _, h)| h == hash) {
                results.push(unmatched(text, Some(strategy.to_string()), Some(*hash), RefreshReason::Retired));
            }
        }
        let matched: BTreeSet<&str> =
            chosen.iter().flat_map(|(_, sel, strat, _)| [sel.as_str(), strat.as_str()]).collect();
        for (text, strategy) in &strategy_targets {
            if !matched.contains(text.as_str()) {
                let reason = match self.registry.resolve(text) {
                    Ok(_) => RefreshReason::Retired,
                    Err(_) => RefreshReason::NotFound,
                };
                results.push(unmatched(text, strategy.clone(), None, reason));
            }
        }

        // Decide every instance's fate first, then move all that must move
        // in one batch (one transaction, restarts spread over threads).
        let mut per_instance = Vec::new();
        let mut moves = Vec::new();
        for (id, selector, strategy, pinned) in chosen {
            let mut result = RefreshResult {
                selector: selector.clone(),
                strategy: Some(strategy),
                hash: Some(pinned),
                previous_hash: None,
                instances: vec![id.clone()],
                reason: RefreshReason::AlreadyPinned,
                error: None,
            };
            match self.refresh_target(&selector, pinned) {
                Ok(Some(target)) => {
                    moves.push((id, target, None));
                    result.reason = RefreshReason::Refreshed;
                    result.hash = Some(target);
                    result.previous_hash = Some(pinned);
                }
                Ok(None) => {}
                Err(reason) => result.reason = reason,
            }
            per_instance.push(result);
        }
        let mut outcomes = self.repin_many(moves).into_iter();
        for result in per_instance.iter_mut().filter(|r| r.reason == RefreshReason::Refreshed) {
            match outcomes.next() {
                // Moved: from where it was when the move claimed it.
                Some(Ok(Some(previous))) => result.previous_hash = Some(previous),
                // Already there by then (another move got there first).
                Some(Ok(None)) => {
                    result.reason = RefreshReason::AlreadyPinned;
                    result.previous_hash = None;
                }
                // Re-pinned but not restarted, or not moved at all: say where
                // the instance is pinned now.
                Some(Err(error)) => {
                    let id = &result.instances[0];
                    let now = self.slot(id).ok().map(|slot| slot.lock().record.hash);
                    result.reason = RefreshReason::Failed;
                    if now == result.previous_hash {
                        result.hash = result.previous_hash.take();
                    }
                    result.error = Some(error.to_string());
                }
                None => {}
            }
        }
        per_instance.sort_by(|a, b| a.instances.cmp(&b.instances));
        results.sort_by(|a, b| a.selector.cmp(&b.selector));
        if report_unmatched {
            per_instance.extend(results);
        }
        for result in per_instance.iter().filter(|r| r.reason == RefreshReason::Refreshed) {
            if let (Some(strategy), Some(hash)) = (&result.strategy, result.hash) {
                self.usage.count_action(strategy, hash, "refresh");
            }
        }
        self.usage.refresh_completed(&per_instance);
        Ok(per_instance)
    }

    /// Where an instance following `selector` and pinned to `pinned` must
    /// move: `Some(hash)`, `None` when it stays (unchanged, or an `@hash`
    /// pin), or `Retired` when the selector no longer resolves (it keeps
    /// running on its pin).
    fn refresh_target(&self, selector: &str, pinned: RevisionHash) -> Result<Option<RevisionHash>, RefreshReason> {
        if matches!(Selector::parse(selector), Ok(Selector::Revision { .. } | Selector::Hash(_))) {
            return Ok(None);
        }
        match self.registry.resolve(selector) {
            Ok(resolved) if resolved.hash != pinned => Ok(Some(resolved.hash)),
            Ok(_) => Ok(None),
            Err(_) => Err(RefreshReason::Retired),
        }
    }

    /// Moves instances onto new hashes (and selectors, when given), keeping
    /// their config; running ones restart there, stopped ones stay stopped.
    /// Returns one outcome per move, in order: the hash it moved from, or
    /// `None` when it was already there by the time it was claimed.
    ///
    /// Done in chunks: claim and re-pin a chunk (the writes of the stopped
    /// ones queued together, so they share a commit), restart its running
    /// instances in parallel, then wait for the chunk's writes. A running
    /// instance is down for about one chunk's restart time.
    pub fn repin_many(
        &self,
        moves: Vec<(String, RevisionHash, Option<String>)>,
    ) -> Vec<Result<Option<RevisionHash>, InstanceError>> {
        let mut outcomes = Vec::with_capacity(moves.len());
        for chunk in moves.chunks(REPIN_CHUNK) {
            let first = outcomes.len();
            let mut restarts = Vec::new();
            let mut written = Vec::new();
            for (offset, (id, hash, selector)) in chunk.iter().enumerate() {
                match self.repin(id, *hash, selector.clone()) {
                    Ok(repin @ Repin::Restart(..)) => restarts.push((first + offset, repin)),
                    Ok(repin) => written.push((first + offset, repin)),
                    Err(error) => {
                        outcomes.push(Err(error));
                        continue;
                    }
                }
                outcomes.push(Ok(None));
            }
            let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).min(restarts.len().max(1));
            let per_thread = restarts.len().div_ceil(threads).max(1);
            let mut parts: Vec<Vec<(usize, Repin<'_>)>> = Vec::new();
            let mut restarts = restarts.into_iter().peekable();
            while restarts.peek().is_some() {
                parts.push(restarts.by_ref().take(per_thread).collect());
            }
            let restarted: Vec<(usize, Result<Option<RevisionHash>, InstanceError>)> = std::thread::scope(|scope| {
                let workers: Vec<_> = parts
                    .into_iter()
                    .map(|part| {
                        scope.spawn(move || {
                            part.into_iter().map(|(index, repin)| (index, self.finish_repin(repin))).collect::<Vec<_>>()
                        })
                    })
                    .collect();
                workers.into_iter().flat_map(|w| w.join().expect("restart worker panicked")).collect()
            });
            for (index, repin) in written {
                outcomes[index] = self.finish_repin(repin);
            }
            for (index, outcome) in restarted {
                outcomes[index] = outcome;
            }
        }
        outcomes
    }
}

/// The config an instance takes to another revision. Fields the target's
/// schema does not know are dropped when they only hold the default the
/// current revision filled in (nobody chose them), so rolling back to an
/// older schema works; a value someone set is kept, and a target that does
/// not accept it refuses the move.
pub(super) fn carry_config(
    config: &serde_json::Map<String, serde_json::Value>,
    current: Option<&strata_shared::metadata::ModuleMetadata>,
    target: &strata_shared::metadata::ModuleMetadata,
) -> serde_json::Map<String, serde_json::Value> {
    let is_filled_default = |key: &str, value: &serde_json::Value| {
        current.and_then(|m| m.config.iter().find(|f| f.name == key)).and_then(|f| f.default.as_ref()) == Some(value)
    };
    config
        .iter()
        .filter(|(key, value)| target.config.iter().any(|f| f.name == **key) || !is_filled_default(key, value))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// Instances re-pinned per transaction and restart wave.
const REPIN_CHUNK: usize = 128;

fn unmatched(
    selector: &str,
    strategy: Option<String>,
    hash: Option<RevisionHash>,
    reason: RefreshReason,
) -> RefreshResult {
    RefreshResult {
        selector: selector.to_owned(),
        strategy,
        hash,
        previous_hash: None,
        instances: Vec::new(),
        reason,
        error: None,
    }
}

impl Instances {
    /// Restarts every running instance pinned to `hash` (the rollout and
    /// rollback helper); stopped ones are reported `alreadyPinned` and left.
    pub fn restart_all(&self, hash: RevisionHash) -> Vec<strata_shared::api::BatchResult> {
        self.usage
            .pinned_to(hash)
            .into_iter()
            .map(|id| {
                let running = self.view(&id).map(|v| v.state == InstanceState::Running).unwrap_or(false);
                let outcome = if running { self.restart(&id).map(|_| ()) } else { Ok(()) };
                batch_result(id, hash, hash, running, outcome)
            })
            .collect()
    }

    /// Moves every instance pinned to `from` onto `to` (resolved within the
    /// same strategy), setting each one's selector to `to` as typed so that a
    /// later refresh does not undo the move. Running instances restart on the
    /// new hash; stopped ones stay stopped.
    pub fn repin_all(
        &self,
        from: RevisionHash,
        to: &str,
        target: RevisionHash,
    ) -> Vec<strata_shared::api::BatchResult> {
        let ids = self.usage.pinned_to(from);
        let outcomes = if from == target {
            ids.iter().map(|_| Ok(None)).collect()
        } else {
            self.repin_many(ids.iter().map(|id| (id.clone(), target, Some(to.to_owned()))).collect())
        };
        ids.into_iter()
            .zip(outcomes)
            .map(|(id, outcome)| {
                // A failed restart leaves the instance on the new pin.
                let now = self.slot(&id).ok().map_or(from, |slot| slot.lock().record.hash);
                let acted = matches!(outcome, Ok(Some(_)));
                batch_result(id, from, now, acted, outcome.map(|_| ()))
            })
            .collect()
    }
}

fn batch_result(
    id: String,
    previous: RevisionHash,
    hash: RevisionHash,
    acted: bool,
    outcome: Result<(), InstanceError>,
) -> strata_shared::api::BatchResult {
    let (hash, reason, error) = match outcome {
        Ok(()) if acted => (hash, RefreshReason::Refreshed, None),
        Ok(()) => (hash, RefreshReason::AlreadyPinned, None),
        Err(e) => (hash, RefreshReason::Failed, Some(e.to_string())),
    };
    strata_shared::api::BatchResult { instance_id: id, previous_hash: previous, hash, reason, error }
}
