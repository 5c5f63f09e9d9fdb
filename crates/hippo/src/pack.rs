//! Packing ranked hits into excerpts under a token budget.
//!
//! A search result is an *excerpt*: consecutive messages of one conversation
//! around one or more hits. Hits are offered best first, each with its
//! window (the hit and its context). Windows that overlap, touch, or leave a
//! single message between them merge into one excerpt (the gap message is
//! added): the reader gets one coherent passage instead of fragments, and no
//! message is paid for twice.
//!
//! Budget: an offer whose window does not fit is retried as the bare hit.
//! With a hard budget the bare hit must fit too (except the best hit, so a
//! search never comes back empty); with a soft one it is always taken and
//! only context is limited. Later, smaller offers may still fit.

use std::collections::{HashMap, HashSet};

use crate::error::Result;
use crate::model::MemoryId;

/// Token cost of an excerpt's header (its date line).
pub const HEADER_TOKENS: usize = 4;

/// How the budget binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// Hits and context together stay within this many tokens (the best hit
    /// is taken regardless).
    Hard(usize),
    /// Every hit is taken; context is added while the total stays within
    /// this many tokens.
    Soft(usize),
}

impl Budget {
    fn tokens(self) -> usize {
        match self {
            Budget::Hard(n) | Budget::Soft(n) => n,
        }
    }
}

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
    budget: Budget,
    max_excerpts: usize,
    used: usize,
    members: HashSet<MemoryId>,
    /// Chain links learnt from the offered windows.
    prev: HashMap<MemoryId, MemoryId>,
    next: HashMap<MemoryId, MemoryId>,
    /// Hits taken, best first.
    hits: Vec<MemoryId>,
}

impl Packer {
    /// A packer for at most `max_excerpts` excerpts within `budget`.
    pub fn new(budget: Budget, max_excerpts: usize) -> Self {
        Packer {
            budget,
            max_excerpts: max_excerpts.max(1),
            used: 0,
            members: HashSet::new(),
            prev: HashMap::new(),
            next: HashMap::new(),
            hits: Vec::new(),
        }
    }

    /// Tokens used so far.
    pub fn used(&self) -> usize {
        self.used
    }

    /// True when no further offer can add anything: the budget is spent and
    /// the excerpts are all there.
    pub fn is_full(&self) -> bool {
        self.used >= self.budget.tokens() && self.excerpts_in(&self.members) >= self.max_excerpts
    }

    /// Offers `hit`. `window` is its conversation window in chain order, the
    /// hit included, reaching `context + 1` messages to each side (the extra
    /// message finds one-message gaps); `cost` gives a message's tokens.
    /// Returns whether the hit was taken.
    pub fn offer(
        &mut self,
        hit: MemoryId,
        window: &[MemoryId],
        context: usize,
        cost: &mut dyn FnMut(MemoryId) -> Result<usize>,
    ) -> Result<bool> {
        for pair in window.windows(2) {
            self.next.insert(pair[0], pair[1]);
            self.prev.insert(pair[1], pair[0]);
        }
        if self.members.contains(&hit) {
            // Already shown as context: now also a hit of that excerpt.
            self.hits.push(hit);
            return Ok(true);
        }
        let at = window.iter().position(|&m| m == hit);
        let core: Vec<MemoryId> = match at {
            Some(i) => {
                window[i.saturating_sub(context)..(i + context + 1).min(window.len())].to_vec()
            }
            None => vec![hit],
        };
        let first = self.hits.is_empty();
        for (attempt, candidate) in [core, vec![hit]].into_iter().enumerate() {
            let bare = attempt == 1;
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
            let fits = total <= self.budget.tokens()
                || first && bare
                || bare && matches!(self.budget, Budget::Soft(_));
            if excerpts <= self.max_excerpts && fits {
                self.members = grown;
                self.used = total;
                self.hits.push(hit);
                return Ok(true);
            }
            if excerpts > self.max_excerpts && bare {
                break;
            }
        }
        Ok(false)
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

    fn pack(hits: &[u128], context: u128, len: u128, budget: Budget, k: usize) -> Vec<Excerpt> {
        let mut p = Packer::new(budget, k);
        for &h in hits {
            p.offer(
                id(h),
                &window(h, context + 1, len),
                context as usize,
                &mut |_| Ok(10),
            )
            .unwrap();
        }
        p.finish()
    }

    fn ids(ns: &[u128]) -> Vec<MemoryId> {
        ns.iter().map(|&n| id(n)).collect()
    }

    #[test]
    fn nearby_hits_share_one_excerpt_and_a_gap_is_filled() {
        // Hits 10 and 14 with one message of context: 9..=11 and 13..=15
        // leave message 12 between them, so they become one excerpt.
        let out = pack(&[10, 14, 40], 1, 100, Budget::Hard(1000), 10);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].members, ids(&[9, 10, 11, 12, 13, 14, 15]));
        assert_eq!(out[0].hits, ids(&[10, 14]));
        assert_eq!(out[1].members, ids(&[39, 40, 41]));
    }

    #[test]
    fn a_window_that_does_not_fit_shrinks_to_its_hit() {
        // Budget for the first window (3 messages + header = 34) and one
        // more bare hit (10 + header 4).
        let out = pack(&[10, 40, 70], 1, 100, Budget::Hard(48), 10);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].members, ids(&[40]));
        // A soft budget takes every hit, bare when out of room.
        let soft = pack(&[10, 40, 70], 1, 100, Budget::Soft(48), 10);
        assert_eq!(soft.len(), 3);
        assert_eq!(soft[2].members, ids(&[70]));
    }

    #[test]
    fn the_best_hit_comes_back_even_over_budget() {
        let out = pack(&[10], 1, 100, Budget::Hard(5), 10);
        assert_eq!(out[0].members, ids(&[10]));
    }

    #[test]
    fn excerpts_are_capped_but_merging_offers_still_land() {
        let out = pack(&[10, 40, 70, 12], 1, 100, Budget::Hard(1000), 2);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].members, ids(&[9, 10, 11, 12, 13]));
        assert_eq!(out[0].hits, ids(&[10, 12]));
    }

    #[test]
    fn a_hit_already_shown_as_context_joins_its_excerpt() {
        let out = pack(&[10, 11], 1, 100, Budget::Hard(1000), 10);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].members, ids(&[9, 10, 11]));
        assert_eq!(out[0].hits, ids(&[10, 11]));
    }

    proptest! {
        /// Whatever is offered: each message appears once; excerpts are
        /// contiguous runs holding their hits; their count stays within
        /// the cap; a hard budget holds (beyond the first excerpt).
        #[test]
        fn invariants(hits in proptest::collection::vec(0u128..60, 1..30),
                      context in 0u128..3, k in 1usize..8, budget in 10usize..400) {
            let out = pack(&hits, context, 60, Budget::Hard(budget), k);
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
