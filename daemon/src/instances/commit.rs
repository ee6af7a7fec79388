//! Group commit: one writer thread owns every instance write. Callers hand
//! it a group of writes and wait for its acknowledgement; the writer takes
//! every group queued meanwhile and commits them, with the usage entries
//! changed so far, in one SQLite transaction (one fsync). Concurrent
//! lifecycle operations therefore share commits, and a caller is answered
//! only once its own writes are durable.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};

use super::InstanceError;
use crate::store::{InstanceWrite, Store};
use crate::usage::UsageIndex;

/// Most groups one transaction takes; more wait for the next commit.
const MAX_GROUPS: usize = 4096;

/// A group of writes and who waits for it.
struct Job {
    writes: Vec<InstanceWrite>,
    done: SyncSender<Result<(), Failed>>,
}

/// The handle on the writer thread. Dropping it ends the thread once the
/// queue is drained.
#[derive(Debug)]
pub(super) struct Committer {
    queue: Sender<Job>,
}

/// The acknowledgement of one enqueued group.
#[must_use = "a write is acknowledged only once its ticket is waited for"]
pub(super) struct Ticket(Receiver<Result<(), Failed>>);

/// Why a group was not committed: the message, and whether the disk was full.
type Failed = (String, bool);

impl Ticket {
    /// Blocks until the group is durable (or failed).
    pub(super) fn wait(self) -> Result<(), InstanceError> {
        match self.0.recv() {
            Ok(Ok(())) => Ok(()),
            Ok(Err((error, true))) => Err(InstanceError::StorageFull(error)),
            Ok(Err((error, false))) => Err(InstanceError::Persist(error)),
            Err(_) => Err(InstanceError::Persist("the store writer stopped".into())),
        }
    }
}

impl Committer {
    /// Starts the writer thread on `store`; every commit also writes the
    /// usage entries `usage` marked dirty.
    pub(super) fn start(store: Arc<Store>, usage: Arc<UsageIndex>) -> Self {
        let (sender, receiver) = channel::<Job>();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || Self::run(&store, &usage, &receiver))
            .expect("spawn the store writer thread");
        Self { queue: sender }
    }

    /// Queues `writes` as one group (applied all or nothing) and returns the
    /// ticket to wait on. Never blocks on the disk: safe to call under a
    /// slot lock, which is how writes of one instance keep their order.
    pub(super) fn enqueue(&self, writes: Vec<InstanceWrite>) -> Ticket {
        let (done, ack) = sync_channel(1);
        // A send fails only if the writer is gone; the ticket then says so.
        let _ = self.queue.send(Job { writes, done });
        Ticket(ack)
    }

    fn run(store: &Store, usage: &UsageIndex, receiver: &Receiver<Job>) {
        while let Ok(first) = receiver.recv() {
            let mut jobs = vec![first];
            while jobs.len() < MAX_GROUPS
                && let Ok(job) = receiver.try_recv()
            {
                jobs.push(job);
            }
            // Taken after the groups: every usage change made before a group
            // was queued is in this same transaction.
            let dirty = usage.take_dirty();
            match store.commit_groups(jobs.iter().map(|job| job.writes.as_slice()), &dirty) {
                Ok(outcomes) => {
                    for (job, outcome) in jobs.into_iter().zip(outcomes) {
                        let _ = job.done.send(outcome.map_err(|e| (e.to_string(), e.is_storage_full())));
                    }
                }
                Err(error) => {
                    tracing::error!(%error, groups = jobs.len(), "could not commit instance writes");
                    let failed = (error.to_string(), error.is_storage_full());
                    for job in jobs {
                        let _ = job.done.send(Err(failed.clone()));
                    }
                }
            }
        }
    }
}
