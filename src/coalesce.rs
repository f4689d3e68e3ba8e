//! Query coalescing: single searches that arrive on one handle while a scan is running wait for
//! it to end, and are then answered together by one batch scan, which reads every row once for
//! the whole group and scores it with the batch kernel. Sixteen threads then cost one pass over
//! memory per round instead of sixteen passes competing for bandwidth.
//!
//! No query waits for a timer: a query that finds fewer than `max_scans` scans running starts
//! its own at once. A query that finds them all busy queues. When a scan ends, its leader hands
//! the whole queue to one of the queued callers, which leads the next scan; the leader itself
//! returns as soon as its answers are delivered.

use crate::error::{Error, Result};
use crate::types::SearchHit;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// One caller's query and the place its answer is left.
pub(crate) struct Request {
    /// The query's components.
    pub query: Vec<f32>,
    /// Hits wanted.
    pub k: usize,
    slot: Mutex<Slot>,
    ready: Condvar,
}

enum Slot {
    Waiting,
    /// This caller leads the next scan, over these requests (its own among them).
    Lead(Vec<Arc<Request>>),
    Done(Result<Vec<SearchHit>>),
}

#[derive(Default)]
struct State {
    /// Scans running now.
    running: usize,
    /// Requests waiting for the next scan.
    queue: Vec<Arc<Request>>,
}

/// Counts, for tests and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoalesceStats {
    /// Single searches answered.
    pub queries: u64,
    /// Scans that answered them.
    pub scans: u64,
}

/// The coalescer of one database handle.
#[derive(Default)]
pub(crate) struct Coalescer {
    state: Mutex<State>,
    stats: Mutex<CoalesceStats>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Coalescer {
    /// Answers `query` with `scan`, alone or in a group. `scan` gets the group's requests and
    /// returns one answer per request, in order; it must not call back into this coalescer.
    /// `max_scans` is how many scans may run at once (1 when one scan already uses every core).
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        max_scans: usize,
        scan: impl Fn(&[Arc<Request>]) -> Vec<Result<Vec<SearchHit>>>,
    ) -> Result<Vec<SearchHit>> {
        let me = Arc::new(Request {
            query: query.to_vec(),
            k,
            slot: Mutex::new(Slot::Waiting),
            ready: Condvar::new(),
        });
        let mut group = {
            let mut st = lock(&self.state);
            if st.running < max_scans.max(1) {
                st.running += 1;
                vec![me.clone()]
            } else {
                st.queue.push(me.clone());
                drop(st);
                let mut slot = lock(&me.slot);
                loop {
                    match std::mem::replace(&mut *slot, Slot::Waiting) {
                        Slot::Waiting => {
                            slot = me.ready.wait(slot).unwrap_or_else(|p| p.into_inner());
                        }
                        Slot::Done(answer) => return answer,
                        Slot::Lead(group) => break group,
                    }
                }
            }
        };

        // Lead this group's scan. A panic inside it must not leave the group waiting forever.
        let answers = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scan(&group)));
        {
            let mut st = lock(&self.state);
            if st.queue.is_empty() {
                st.running -= 1;
            } else {
                let next = std::mem::take(&mut st.queue);
                let leader = next[0].clone();
                *lock(&leader.slot) = Slot::Lead(next);
                leader.ready.notify_one();
            }
        }
        {
            let mut stats = lock(&self.stats);
            stats.queries += group.len() as u64;
            stats.scans += 1;
        }
        let mut answers = match answers {
            Ok(a) if a.len() == group.len() => a,
            Ok(_) => vec_of_errors(group.len(), "a coalesced scan returned the wrong count"),
            Err(_) => vec_of_errors(group.len(), "a coalesced scan panicked"),
        };
        let mine = group.iter().position(|r| Arc::ptr_eq(r, &me));
        let mut own = Err(Error::Poisoned {
            reason: "coalesced scan lost this query's answer".into(),
        });
        for (i, (req, answer)) in group.drain(..).zip(answers.drain(..)).enumerate() {
            if Some(i) == mine {
                own = answer;
            } else {
                *lock(&req.slot) = Slot::Done(answer);
                req.ready.notify_one();
            }
        }
        own
    }

    /// Queries answered and scans run so far.
    pub fn stats(&self) -> CoalesceStats {
        *lock(&self.stats)
    }
}

fn vec_of_errors(n: usize, reason: &str) -> Vec<Result<Vec<SearchHit>>> {
    (0..n)
        .map(|_| {
            Err(Error::Poisoned {
                reason: reason.into(),
            })
        })
        .collect()
}
