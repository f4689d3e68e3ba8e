//! After an insertion, every node is reachable from the entry on the bottom layer.
//!
//! A search only returns nodes it can walk to. Pruning a full list drops links, and in a
//! parallel build a node's last in-link can be pruned away (about one row in a few thousand
//! was left so on the shared data), so that row was never found, not even by its own vector.
//! The repair links each such node from its nearest reachable neighbour.
//!
//! Two checks, so a one-row insertion into a large graph stays cheap:
//! - always: nodes no bottom-layer list links to (the in-degree counts [`Links::set`] keeps);
//! - while the graph is small, or when the insertion added a large share of its nodes (a
//!   build): a walk of the whole bottom layer from the entry, which also finds groups of
//!   nodes that link only to each other.
//!
//! [`Links::set`]: super::graph::Links

use super::graph::{lock, Builder, LOCK_STRIPES};
use super::layer::{search_layer, LayerSearch};
use super::score::RowScorer;
use super::visited::{Scored, Scratch};
use super::Entry;
use crate::error::Result;

/// Up to this many nodes the whole bottom layer is walked after every insertion (a walk
/// reads every node's list once; its cost is not measured yet).
pub(super) const WALK_ALWAYS_NODES: u32 = 65_536;
/// Above that, it is walked when an insertion adds at least one node in this many.
const WALK_SHARE: u64 = 16;
/// Walks (each followed by re-linking what it missed) before the repair stops: re-linking
/// can replace a link, rarely the one a node depended on, which the next walk catches.
const MAX_WALKS: usize = 8;

impl Builder<'_> {
    /// Links every node of `0..nodes` left unreachable by the insertion of nodes `from..`,
    /// adding to `changed` the nodes whose lists changed.
    pub(super) fn repair(
        &self,
        from: u64,
        scratch: &mut Scratch,
        changed: &mut Vec<u32>,
    ) -> Result<()> {
        let Some(entry) = *lock(&self.graph.entry) else {
            return Ok(());
        };
        if self.nodes < 2 {
            return Ok(());
        }
        let added = u64::from(self.nodes).saturating_sub(from);
        let walk = self.nodes <= self.graph.repair_walk_nodes
            || added * WALK_SHARE >= u64::from(self.nodes);
        if !walk {
            let orphans: Vec<u32> = (0..self.nodes)
                .filter(|&n| n != entry.node && self.links.in_degree(n) == 0)
                .collect();
            for node in orphans {
                self.relink(node, entry, None, scratch, changed)?;
            }
            return Ok(());
        }
        for _ in 0..MAX_WALKS {
            let mut reached = vec![false; self.nodes as usize];
            self.reach(entry.node, &mut reached);
            let missed: Vec<u32> = (0..self.nodes).filter(|&n| !reached[n as usize]).collect();
            if missed.is_empty() {
                break;
            }
            for node in missed {
                if reached[node as usize] {
                    continue;
                }
                self.relink(node, entry, Some(&reached), scratch, changed)?;
                self.reach(node, &mut reached);
            }
        }
        Ok(())
    }

    /// Marks in `reached` every node the bottom layer leads to from `start` (and `start`),
    /// walking only from nodes not marked yet.
    fn reach(&self, start: u32, reached: &mut [bool]) {
        let mut queue = vec![start];
        if let Some(r) = reached.get_mut(start as usize) {
            *r = true;
        }
        while let Some(n) = queue.pop() {
            self.links.for_each(n, 0, |l| {
                if let Some(r) = reached.get_mut(l as usize) {
                    if !*r {
                        *r = true;
                        queue.push(l);
                    }
                }
            });
        }
    }

    /// Adds `node` to the bottom-layer list of its nearest neighbour that is in `reached`
    /// (any node when `None`) and has room, or a link it can replace.
    fn relink(
        &self,
        node: u32,
        entry: Entry,
        reached: Option<&[bool]>,
        scratch: &mut Scratch,
        changed: &mut Vec<u32>,
    ) -> Result<()> {
        let q = self.row(node)?;
        let mut scorer = RowScorer::new(self.view, self.resident, self.space, &q, q[self.dim]);
        let usable =
            |n: u32| n != node && reached.is_none_or(|r| r.get(n as usize).copied() == Some(true));
        let (from_entry, at) = self.descend(entry, 0, &mut scorer, &mut scratch.batch);
        let p = LayerSearch {
            layer: 0,
            ef: self.graph.params().ef_construction.max(1),
            nodes: self.nodes,
            skip: None,
            budget: None,
        };
        let mut near: Vec<Scored> = Vec::new();
        // The descent may end where the bottom layer does not lead back to the entry; a
        // search from the entry itself only meets nodes the entry reaches.
        for start in [at, from_entry] {
            search_layer(self.links, &p, &[start], &mut scorer, scratch);
            near.extend(
                scratch
                    .results
                    .drain()
                    .map(|r| r.0)
                    .filter(|s| usable(s.node)),
            );
            if !near.is_empty() {
                break;
            }
        }
        if let Some(e) = scorer.failed {
            return Err(e);
        }
        near.sort_unstable_by(|a, b| b.cmp(a));
        // First into the nearest list with room: an appended link cuts nothing off. Only
        // when every list found is full is a link replaced, which can cut off a node whose
        // other in-links come from nodes only it leads to; the next walk then re-links that
        // one. Replacing first (the nearest list, full or not) made walks cut off and
        // re-link the same groups in turn: on 3,000 rows, nine in ten copies of 3 vectors,
        // the walks missed 8, 11, 8, 11 ... nodes until they gave up, in about one build in
        // ten.
        for replace in [false, true] {
            for n in &near {
                if self.link_to(n.node, node, replace)? {
                    changed.push(n.node);
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// Adds `node` to `to`'s bottom-layer list: appended when there is room, else (when
    /// `replace`) in place of the link farthest from `to` among those to nodes with another
    /// in-link (so no node loses its only one). False when the list is full and `replace`
    /// is not set, or every link is some node's only in-link.
    fn link_to(&self, to: u32, node: u32, replace: bool) -> Result<bool> {
        let _l = lock(&self.graph.locks[to as usize % LOCK_STRIPES]);
        let mut list = Vec::new();
        self.links.get(to, 0, &mut list);
        if list.contains(&node) {
            return Ok(true);
        }
        if list.len() < self.links.capacity(0) {
            list.push(node);
            self.links.set(to, 0, &list);
            return Ok(true);
        }
        if !replace {
            return Ok(false);
        }
        let base = self.row(to)?;
        let mut farthest: Option<(f32, usize)> = None;
        for (i, &l) in list.iter().enumerate() {
            if self.links.in_degree(l) < 2 {
                continue;
            }
            let key = Scored::new(self.pair(&base, &self.row(l)?), l).key;
            if farthest.is_none_or(|(k, _)| key < k) {
                farthest = Some((key, i));
            }
        }
        let Some((_, i)) = farthest else {
            return Ok(false);
        };
        list[i] = node;
        self.links.set(to, 0, &list);
        Ok(true)
    }
}
