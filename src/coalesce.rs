//! Query coalescing: single searches that arrive on one handle while a scan is running wait for
//! it to end, and are then answered together by one batch scan, which reads every row once for
//! the whole group and scores it with the batch kernel. Sixteen threads then cost one pass over
//! memory per round instead of sixteen passes competing for bandwidth.
//!
//! A query that finds fewer than `max_scans` scans running leads a scan; one that finds them
//! all busy queues. When a scan ends, its leader hands the whole queue to one of the queued
//! callers, which leads the next scan; the leader itself returns as soon as its answers are
//! delivered.
//!
//! Callers that a scan has just answered usually call again at once, while the next scan runs,
//! and would then form the group after it: the callers split into cohorts that take turns (16
//! callers measured alternating groups of 1 and 15, each scan of 1 costing nearly as much as
//! one of 15). So a leader first waits, briefly, for the callers answered by the scan before it
//! that have not called again yet, and takes them into its group: at most a fraction
//! ([`WINDOW_DIVISOR`]) of the last scan's time, and not at all when none is expected (a lone
//! query after a quiet spell starts at once).
//!
//! The coalescer is generic over what a caller asks (`Q`): the native engine queues a vector,
//! its `k` and its scan options; `srvdb-host` queues a sandboxed request (vector, `k`, filter,
//! options) and answers a group with one guest batch call. The scan function groups the
//! requests it is given as it needs.

use crate::error::{Error, Result};
use crate::types::SearchHit;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
#[cfg(not(target_arch = "wasm32"))]
use std::time::Instant;

/// A leader waits for the callers it expects back at most the last scan's time divided by
/// this.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
pub const WINDOW_DIVISOR: u32 = 8;

/// One caller's query and the place its answer is left.
pub struct Request<Q> {
    /// What the caller asked.
    pub query: Q,
    slot: Mutex<Slot<Q>>,
    ready: Condvar,
}

enum Slot<Q> {
    Waiting,
    /// This caller leads the next scan, over these requests (its own among them).
    Lead(Vec<Arc<Request<Q>>>),
    Done(Result<Vec<SearchHit>>),
}

struct State<Q> {
    /// Scans running now.
    running: usize,
    /// Requests waiting for the next scan.
    queue: Vec<Arc<Request<Q>>>,
    /// Callers answered by the last scans that have not called again yet (an estimate: a
    /// caller that never comes back is forgotten when a leader's wait for it times out).
    expected: usize,
    /// How long the last scan took (not measured on wasm32, which never waits).
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    last_scan: Duration,
}

impl<Q> Default for State<Q> {
    fn default() -> Self {
        State {
            running: 0,
            queue: Vec::new(),
            expected: 0,
            last_scan: Duration::ZERO,
        }
    }
}

/// Counts, for tests and reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoalesceStats {
    /// Single searches answered.
    pub queries: u64,
    /// Scans that answered them.
    pub scans: u64,
}

/// The coalescer of one database handle, over requests `Q`.
pub struct Coalescer<Q> {
    state: Mutex<State<Q>>,
    /// Signalled when a request queues, for a leader waiting for the callers it expects.
    arrived: Condvar,
    stats: Mutex<CoalesceStats>,
}

impl<Q> Default for Coalescer<Q> {
    fn default() -> Self {
        Coalescer {
            state: Mutex::new(State::default()),
            arrived: Condvar::new(),
            stats: Mutex::new(CoalesceStats::default()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<Q> Coalescer<Q> {
    /// Answers `query` with `scan`, alone or in a group. `scan` gets the group's requests and
    /// returns one answer per request, in order; it must not call back into this coalescer.
    /// `max_scans` is how many scans may run at once (1 when one scan already uses every core).
    pub fn search(
        &self,
        query: Q,
        max_scans: usize,
        scan: impl Fn(&[Arc<Request<Q>>]) -> Vec<Result<Vec<SearchHit>>>,
    ) -> Result<Vec<SearchHit>> {
        let me = Arc::new(Request {
            query,
            slot: Mutex::new(Slot::Waiting),
            ready: Condvar::new(),
        });
        let mut st = lock(&self.state);
        // This caller may be one the last scan answered.
        st.expected = st.expected.saturating_sub(1);
        let mut group = if st.running < max_scans.max(1) {
            st.running += 1;
            vec![me.clone()]
        } else {
            st.queue.push(me.clone());
            self.arrived.notify_all();
            drop(st);
            let mut slot = lock(&me.slot);
            let group = loop {
                match std::mem::replace(&mut *slot, Slot::Waiting) {
                    Slot::Waiting => {
                        slot = me.ready.wait(slot).unwrap_or_else(|p| p.into_inner());
                    }
                    Slot::Done(answer) => return answer,
                    Slot::Lead(group) => break group,
                }
            };
            drop(slot);
            st = lock(&self.state);
            group
        };
        st = self.wait_for_expected(st);
        group.append(&mut st.queue);
        drop(st);

        // Lead this group's scan. A panic inside it must not leave the group waiting forever.
        #[cfg(not(target_arch = "wasm32"))]
        let started = Instant::now();
        let answers = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scan(&group)));
        {
            let mut st = lock(&self.state);
            #[cfg(not(target_arch = "wasm32"))]
            {
                st.last_scan = started.elapsed();
            }
            // Every caller of this group may call again (this leader too).
            st.expected = st.expected.saturating_add(group.len());
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

    /// Waits, holding a scan slot, until the callers the last scans answered have queued again
    /// or the window (the last scan's time / [`WINDOW_DIVISOR`]) has passed; a timeout forgets
    /// the callers still expected.
    #[cfg(not(target_arch = "wasm32"))]
    fn wait_for_expected<'a>(
        &'a self,
        mut st: MutexGuard<'a, State<Q>>,
    ) -> MutexGuard<'a, State<Q>> {
        let deadline = Instant::now() + st.last_scan / WINDOW_DIVISOR;
        while st.expected > 0 {
            let now = Instant::now();
            if now >= deadline {
                st.expected = 0;
                break;
            }
            st = self
                .arrived
                .wait_timeout(st, deadline - now)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        st
    }

    /// On wasm32 there is one thread: nobody else can arrive while it waits.
    #[cfg(target_arch = "wasm32")]
    fn wait_for_expected<'a>(&'a self, st: MutexGuard<'a, State<Q>>) -> MutexGuard<'a, State<Q>> {
        st
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
    type Scan = fn(&[Arc<Request<Vec<f32>>>]) -> Vec<Result<Vec<SearchHit>>>;

    /// Runs one blocking leader and `waiters` callers queued behind it (max_scans = 1), all with
    /// `scan` as the second scan; returns every caller's answer.
    fn group_answers(waiters: usize, scan: Scan) -> Vec<Result<Vec<SearchHit>>> {
        let c = Arc::new(Coalescer::<Vec<f32>>::default());
        let release = Arc::new(Barrier::new(2));
        let scans = Arc::new(AtomicUsize::new(0));
        let leader = {
            let (c, release, scans) = (c.clone(), release.clone(), scans.clone());
            std::thread::spawn(move || {
                c.search(vec![0.0], 1, |g| {
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
                std::thread::spawn(move || c.search(vec![i as f32], 1, scan))
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
        let after = c.search(vec![9.0], 1, |g| {
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

    /// Three callers the last scan answered call again: the first leads and waits for the
    /// other two, so one scan answers all three (without the wait it would scan alone).
    #[test]
    fn a_leader_takes_the_callers_the_last_scan_answered() {
        let c = Arc::new(Coalescer::<Vec<f32>>::default());
        {
            let mut st = lock(&c.state);
            st.expected = 3;
            // A window of 10 s: the test would hang for it, not pass, if nobody arrived.
            st.last_scan = Duration::from_secs(10) * WINDOW_DIVISOR;
        }
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let callers: Vec<_> = (0..3)
            .map(|i| {
                let (c, sizes) = (c.clone(), sizes.clone());
                std::thread::spawn(move || {
                    c.search(vec![i as f32], 1, |g| {
                        lock(&sizes).push(g.len());
                        g.iter().map(|r| Ok(vec![hit(r.query[0])])).collect()
                    })
                })
            })
            .collect();
        for (i, t) in callers.into_iter().enumerate() {
            let hits = t.join().expect("caller").expect("answer");
            assert_eq!(hits[0].score, i as f32);
        }
        assert_eq!(*lock(&sizes), vec![3]);
        let st = lock(&c.state);
        assert_eq!((st.running, st.expected), (0, 3));
    }

    /// A caller expected back that never comes is forgotten when the window passes: the
    /// leader scans alone.
    #[test]
    fn a_caller_that_does_not_come_back_is_forgotten() {
        let c = Coalescer::<Vec<f32>>::default();
        {
            let mut st = lock(&c.state);
            st.expected = 5;
            st.last_scan = Duration::from_millis(1) * WINDOW_DIVISOR;
        }
        let answer = c.search(vec![4.0], 1, |g| {
            assert_eq!(g.len(), 1);
            g.iter().map(|_| Ok(vec![hit(4.0)])).collect()
        });
        assert_eq!(answer.expect("answer")[0].score, 4.0);
        // Forgotten, then this caller's own scan expects it back.
        assert_eq!(lock(&c.state).expected, 1);
    }
}
