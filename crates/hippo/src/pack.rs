//! Packing ranked hits into excerpts under a token budget.
//!
//! A search result is an *excerpt*: consecutive messages of one conversation
//! around one or more hits. Packing has two passes. First the hits, best
//! first, each alone: a hit is taken while it fits the token budget and the
//! number of excerpts (the best hit is taken regardless, so a search never
//! comes back empty because of the budget). Then context, a message at a
//! time and spread over all hits (every hit's reply before any hit's second
//! message; see [`Packer::add_context`]), while the budget lasts. So context
//! never crowds out a hit, and long messages cost results only when the hits
//! themselves do not fit. A hit's neighbours come from `Store::windows` (the
//! in-memory message chain), and rows are read only for what may be shown.
//!
//! Whenever two excerpts would touch, overlap or leave a single message
//! between them, they become one (the gap message is added): the reader gets
//! one coherent passage instead of fragments, and no message is paid twice.
//!
//! Invariants: a message is shown at most once per response; an excerpt is a
//! contiguous run of one exact scope; there are at most `top_k` excerpts; the
//! results stay within the token budget unless the best hit alone exceeds it;
//! filters select hits, not context.

use std::collections::{HashMap, HashSet};

use crate::error::Result;
use crate::model::MemoryId;

/// Token cost of an excerpt's header (its date line).
pub const HEADER_TOKENS: usize = 4;

/// One packed result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Excerpt {
    /// Its messages, oldest first.
    pub members: Vec<MemoryId>,
    /// The hits among them, best first.
    pub hits: Vec<MemoryId>,
}

/// Builds excerpts from offers (see the module docs).
#[derive(Debug)]
pub struct Packer {
    budget: usize,
    max_excerpts: usize,
    used: usize,
    members: HashSet<MemoryId>,
    /// Chain links learnt from the offered windows.
    prev: HashMap<MemoryId, MemoryId>,
    next: HashMap<MemoryId, MemoryId>,
    /// Hits taken, best first.
    hits: Vec<MemoryId>,
    /// Each taken hit's window, as offered.
    windows: HashMap<MemoryId, Vec<MemoryId>>,
}

impl Packer {
    /// A packer for at most `max_excerpts` excerpts within `budget` tokens.
    pub fn new(budget: usize, max_excerpts: usize) -> Self {
        Packer {
            budget,
            max_excerpts: max_excerpts.max(1),
            used: 0,
            members: HashSet::new(),
            prev: HashMap::new(),
            next: HashMap::new(),
            hits: Vec::new(),
            windows: HashMap::new(),
        }
    }

    /// True when no further offer can add anything: the budget is spent and
    /// the excerpts are all there.
    pub fn is_full(&self) -> bool {
        self.used >= self.budget && self.excerpts_in(&self.members) >= self.max_excerpts
    }

    /// Whether [`Self::offer`] could take `hit` (so its row is worth
    /// reading): it is shown already, or budget is left and either another
    /// excerpt fits or its window reaches an excerpt it could join.
    pub fn may_take(&self, hit: MemoryId, window: &[MemoryId]) -> bool {
        self.members.contains(&hit)
            || self.used < self.budget
                && (self.excerpts_in(&self.members) < self.max_excerpts
                    || window.iter().any(|m| {
                        // One message beyond, as a gap the hit could fill.
                        [Some(m), self.prev.get(m), self.next.get(m)]
                            .into_iter()
                            .flatten()
                            .any(|x| self.members.contains(x))
                    }))
    }

    /// Pass 1: offers `hit` alone. `window` is its conversation window in
    /// chain order, the hit included, reaching one message beyond the
    /// context on each side (to find one-message gaps); `cost` gives a
    /// message's tokens. Taken when it is already shown, or when it fits the
    /// budget (the first hit always does) and the excerpt cap (a hit next to
    /// an excerpt, or one message from it, joins it). Returns whether taken.
    pub fn offer(
        &mut self,
        hit: MemoryId,
        window: &[MemoryId],
        cost: &mut dyn FnMut(MemoryId) -> Result<usize>,
    ) -> Result<bool> {
        for pair in window.windows(2) {
            self.next.insert(pair[0], pair[1]);
            self.prev.insert(pair[1], pair[0]);
        }
        let taken = self.members.contains(&hit) || {
            let first = self.hits.is_empty();
            self.try_add(vec![hit], first, cost)?
        };
        if taken {
            self.hits.push(hit);
            self.windows.entry(hit).or_insert_with(|| window.to_vec());
        }
        Ok(taken)
    }

    /// Pass 2: grows the excerpts by up to `before`/`after` messages of
    /// context per hit, one message at a time while the budget allows: first
    /// the message after every hit (best hit first), then the one before,
    /// then the second after, and so on. Spreading context over all hits
    /// before deepening any one of them is what makes a reply to the fifth
    /// hit worth more than a third message around the first.
    pub fn add_context(
        &mut self,
        (before, after): (usize, usize),
        cost: &mut dyn FnMut(MemoryId) -> Result<usize>,
    ) -> Result<()> {
        let mut offsets: Vec<isize> = Vec::new();
        for d in 1..=before.max(after) as isize {
            if d as usize <= after {
                offsets.push(d);
            }
            if d as usize <= before {
                offsets.push(-d);
            }
        }
        let hits = self.hits.clone();
        for offset in offsets {
            for hit in &hits {
                let Some(w) = self.windows.get(hit) else {
                    continue;
                };
                let Some(i) = w.iter().position(|m| m == hit) else {
                    continue;
                };
                let j = i as isize + offset;
                if j < 0 || j as usize >= w.len() {
                    continue;
                }
                let (lo, hi) = (i.min(j as usize), i.max(j as usize));
                // Context stays contiguous: the closer messages are shown.
                if !w[lo..=hi]
                    .iter()
                    .filter(|m| *m != &w[j as usize])
                    .all(|m| self.members.contains(m))
                {
                    continue;
                }
                let m = w[j as usize];
                if !self.members.contains(&m) {
                    self.try_add(vec![m], false, cost)?;
                }
            }
        }
        Ok(())
    }

    /// Adds `candidate` (with any gap it leaves to an excerpt) when the
    /// result stays within the excerpt cap and, unless `force`, the budget.
    fn try_add(
        &mut self,
        candidate: Vec<MemoryId>,
        force: bool,
        cost: &mut dyn FnMut(MemoryId) -> Result<usize>,
    ) -> Result<bool> {
        let new = self.with_gaps(candidate);
        let mut grown = self.members.clone();
        grown.extend(new.iter().copied());
        let excerpts = self.excerpts_in(&grown);
        let mut tokens = self.used;
        for &m in &new {
            tokens += cost(m)?;
        }
        let headers_before = HEADER_TOKENS * self.excerpts_in(&self.members);
        let total = (tokens + HEADER_TOKENS * excerpts).saturating_sub(headers_before);
        if excerpts > self.max_excerpts || (total > self.budget && !force) {
            return Ok(false);
        }
        self.members = grown;
        self.used = total;
        Ok(true)
    }

    /// `candidate`'s messages not yet shown, plus any single message that
    /// would otherwise sit between them and an excerpt.
    fn with_gaps(&self, candidate: Vec<MemoryId>) -> Vec<MemoryId> {
        let mut new: Vec<MemoryId> = candidate
            .into_iter()
            .filter(|m| !self.members.contains(m))
            .collect();
        let mut gaps = Vec::new();
        for &m in &new {
            for step in [&self.prev, &self.next] {
                if let Some(&gap) = step.get(&m) {
                    let beyond = step.get(&gap);
                    if !self.members.contains(&gap)
                        && !new.contains(&gap)
                        && beyond.is_some_and(|b| self.members.contains(b))
                    {
                        gaps.push(gap);
                    }
                }
            }
        }
        for g in gaps {
            if !new.contains(&g) {
                new.push(g);
            }
        }
        new
    }

    /// Number of runs (excerpts) `set` forms along the learnt chain links.
    fn excerpts_in(&self, set: &HashSet<MemoryId>) -> usize {
        set.iter()
            .filter(|m| self.prev.get(m).is_none_or(|p| !set.contains(p)))
            .count()
    }

    /// The excerpts, ordered by their best hit.
    pub fn finish(self) -> Vec<Excerpt> {
        let mut out: Vec<Excerpt> = Vec::new();
        let mut excerpt_of: HashMap<MemoryId, usize> = HashMap::new();
        for &hit in &self.hits {
            if let Some(&i) = excerpt_of.get(&hit) {
                if !out[i].hits.contains(&hit) {
                    out[i].hits.push(hit);
                }
                continue;
            }
            let mut start = hit;
            while let Some(&p) = self.prev.get(&start).filter(|p| self.members.contains(p)) {
                start = p;
            }
            let mut members = vec![start];
            while let Some(&n) = self
                .next
                .get(members.last().unwrap_or(&start))
                .filter(|n| self.members.contains(n))
            {
                members.push(n);
            }
            for &m in &members {
                excerpt_of.insert(m, out.len());
            }
            out.push(Excerpt {
                members,
                hits: vec![hit],
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u128) -> MemoryId {
        MemoryId::from_u128(n)
    }

    /// Window of message `i` of a conversation `0..len`, `reach` each side.
    fn window(i: u128, reach: u128, len: u128) -> Vec<MemoryId> {
        (i.saturating_sub(reach)..(i + reach + 1).min(len))
            .map(id)
            .collect()
    }

    fn pack(hits: &[u128], context: u128, len: u128, budget: usize, k: usize) -> Vec<Excerpt> {
        let mut p = Packer::new(budget, k);
        let c = context as usize;
        for &h in hits {
            let w = window(h, context + 1, len);
            let may = p.may_take(id(h), &w);
            let taken = p.offer(id(h), &w, &mut |_| Ok(10)).unwrap();
            assert!(
                may || !taken,
                "may_take must not rule out a hit offer takes"
            );
        }
        p.add_context((c, c), &mut |_| Ok(10)).unwrap();
        p.finish()
    }

    fn ids(ns: &[u128]) -> Vec<MemoryId> {
        ns.iter().map(|&n| id(n)).collect()
    }

    #[test]
    fn nearby_hits_share_one_excerpt_and_a_gap_is_filled() {
        // Hits 10 and 14 with one message of context: 9..=11 and 13..=15
        // leave message 12 between them, so they become one excerpt.
        let out = pack(&[10, 14, 40], 1, 100, 1000, 10);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].members, ids(&[9, 10, 11, 12, 13, 14, 15]));
        assert_eq!(out[0].hits, ids(&[10, 14]));
        assert_eq!(out[1].members, ids(&[39, 40, 41]));
    }

    #[test]
    fn hits_come_before_context_and_context_is_spread() {
        // Three bare hits cost 3 × (10 + header 4) = 42.
        let out = pack(&[10, 40, 70], 1, 100, 48, 10);
        let members: Vec<_> = out.iter().map(|e| e.members.clone()).collect();
        assert_eq!(members, [ids(&[10]), ids(&[40]), ids(&[70])]);
        // Room for two more messages: the replies to the two best hits, not
        // both sides of the first.
        let out = pack(&[10, 40, 70], 1, 100, 62, 10);
        let members: Vec<_> = out.iter().map(|e| e.members.clone()).collect();
        assert_eq!(members, [ids(&[10, 11]), ids(&[40, 41]), ids(&[70])]);
    }

    #[test]
    fn the_best_hit_comes_back_even_over_budget() {
        let out = pack(&[10], 1, 100, 5, 10);
        assert_eq!(out[0].members, ids(&[10]));
    }

    #[test]
    fn excerpts_are_capped_but_merging_offers_still_land() {
        let out = pack(&[10, 40, 70, 12], 1, 100, 1000, 2);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].members, ids(&[9, 10, 11, 12, 13]));
        assert_eq!(out[0].hits, ids(&[10, 12]));
    }

    #[test]
    fn context_can_lean_towards_the_reply() {
        let mut p = Packer::new(1000, 10);
        p.offer(id(10), &window(10, 3, 100), &mut |_| Ok(10))
            .unwrap();
        p.add_context((1, 2), &mut |_| Ok(10)).unwrap();
        assert_eq!(p.finish()[0].members, ids(&[9, 10, 11, 12]));
    }

    #[test]
    fn adjacent_hits_join_one_excerpt() {
        let out = pack(&[10, 11], 1, 100, 1000, 10);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].members, ids(&[9, 10, 11, 12]));
        assert_eq!(out[0].hits, ids(&[10, 11]));
    }

    proptest! {
        /// Whatever is offered: each message appears once; excerpts are
        /// contiguous runs holding their hits; their count stays within
        /// the cap; a hard budget holds (beyond the first excerpt).
        #[test]
        fn invariants(hits in proptest::collection::vec(0u128..60, 1..30),
                      context in 0u128..3, k in 1usize..8, budget in 10usize..400) {
            let out = pack(&hits, context, 60, budget, k);
            prop_assert!(!out.is_empty() && out.len() <= k);
            let mut seen = HashSet::new();
            let mut tokens = 0;
            for e in &out {
                tokens += HEADER_TOKENS + 10 * e.members.len();
                for w in e.members.windows(2) {
                    prop_assert_eq!(w[1].as_u128(), w[0].as_u128() + 1);
                }
                for m in &e.members {
                    prop_assert!(seen.insert(*m));
                }
                for h in &e.hits {
                    prop_assert!(e.members.contains(h));
                }
            }
            prop_assert!(tokens <= budget || out.len() == 1 && out[0].members.len() == 1);
            prop_assert_eq!(out[0].hits[0], id(hits[0]));
        }
    }
}
