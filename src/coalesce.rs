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
use crate::quant::index::ScanOptions;
use crate::types::SearchHit;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// One caller's query and the place its answer is left.
pub(crate) struct Request {
    /// The query's components.
    pub query: Vec<f32>,
    /// Hits wanted.
    pub k: usize,
    /// How the scan may answer it (codes or exact, oversample): only requests with equal
    /// options share a scan.
    pub options: ScanOptions,
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
        options: ScanOptions,
        max_scans: usize,
        scan: impl Fn(&[Arc<Request>]) -> Vec<Result<Vec<SearchHit>>>,
    ) -> Result<Vec<SearchHit>> {
        let me = Arc::new(Request {
            query: query.to_vec(),
            k,
            options,
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

#[cfg(test)]
mod tests {
    //! The group paths the database cannot reach on purpose: a scan that panics or returns the
    //! wrong number of answers must fail every caller of its group, and the next search must
    //! run (no caller left waiting, no scan slot leaked).
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Barrier;
    use std::time::Duration;

    fn hit(tag: f32) -> SearchHit {
        SearchHit {
            id: format!("{tag}"),
            score: tag,
        }
    }

    /// A scan under test: the group's requests in, one answer each out.
    type Scan = fn(&[Arc<Request>]) -> Vec<Result<Vec<SearchHit>>>;

    /// Runs one blocking leader and `waiters` callers queued behind it (max_scans = 1), all with
    /// `scan` as the second scan; returns every caller's answer.
    fn group_answers(waiters: usize, scan: Scan) -> Vec<Result<Vec<SearchHit>>> {
        let c = Arc::new(Coalescer::default());
        let release = Arc::new(Barrier::new(2));
        let scans = Arc::new(AtomicUsize::new(0));
        let leader = {
            let (c, release, scans) = (c.clone(), release.clone(), scans.clone());
            std::thread::spawn(move || {
                c.search(&[0.0], 1, ScanOptions::default(), 1, |g| {
                    scans.fetch_add(1, Ordering::SeqCst);
                    release.wait(); // hold the only scan slot until the others queued
                    g.iter().map(|_| Ok(vec![hit(0.0)])).collect()
                })
            })
        };
        // Wait until the leader's scan is running.
        while scans.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        let callers: Vec<_> = (0..waiters)
            .map(|i| {
                let c = c.clone();
                std::thread::spawn(move || {
                    c.search(&[i as f32], 1, ScanOptions::default(), 1, scan)
                })
            })
            .collect();
        while lock(&c.state).queue.len() < waiters {
            std::thread::sleep(Duration::from_millis(1));
        }
        release.wait();
        assert!(leader.join().expect("leader").is_ok());
        let answers = callers
            .into_iter()
            .map(|t| t.join().expect("caller"))
            .collect();
        // The slot is free again: a lone search runs its own scan at once.
        let after = c.search(&[9.0], 1, ScanOptions::default(), 1, |g| {
            g.iter().map(|_| Ok(vec![hit(9.0)])).collect()
        });
        assert_eq!(after.expect("search after the failed group")[0].score, 9.0);
        assert_eq!(lock(&c.state).running, 0);
        answers
    }

    #[test]
    fn a_group_is_answered_by_one_scan_in_order() {
        let answers = group_answers(3, |g| {
            g.iter()
                .map(|r| Ok(vec![hit(r.query[0] + 100.0)]))
                .collect()
        });
        let mut scores: Vec<f32> = answers
            .into_iter()
            .map(|a| a.expect("answer")[0].score)
            .collect();
        scores.sort_by(f32::total_cmp);
        assert_eq!(scores, vec![100.0, 101.0, 102.0]);
    }

    #[test]
    fn a_scan_with_the_wrong_count_fails_every_caller_of_its_group() {
        let answers = group_answers(3, |_| vec![Ok(Vec::new())]);
        for a in answers {
            match a {
                Err(Error::Poisoned { reason }) => assert!(reason.contains("wrong count")),
                other => panic!("expected an error, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_panicking_scan_fails_every_caller_of_its_group() {
        let answers = group_answers(3, |_| panic!("scan failed"));
        for a in answers {
            match a {
                Err(Error::Poisoned { reason }) => assert!(reason.contains("panicked")),
                other => panic!("expected an error, got {other:?}"),
            }
        }
    }

    #[test]
    fn one_callers_error_stays_its_own() {
        let answers = group_answers(3, |g| {
            g.iter()
                .map(|r| {
                    if r.query[0] == 1.0 {
                        Err(Error::invalid("bad query"))
                    } else {
                        Ok(vec![hit(r.query[0])])
                    }
                })
                .collect()
        });
        let errors = answers.iter().filter(|a| a.is_err()).count();
        assert_eq!(errors, 1);
    }
}
