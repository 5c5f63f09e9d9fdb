//! Hybrid ranking: fuses per-channel candidates (keyword BM25, vector cosine)
//! and a recency prior into one score. Plain functions over candidate lists,
//! independent of the store.
//!
//! Method: a convex combination of normalised channel scores (Bruch et al.,
//! "An Analysis of Fusion Functions for Hybrid Retrieval", 2023, found it
//! more accurate than reciprocal-rank fusion). Keyword scores are divided by
//! the best keyword score of the query (BM25's theoretical minimum is 0);
//! cosines are min-max normalised over the candidate pool, because every
//! candidate's exact cosine is known. The recency prior is small and only
//! breaks near-ties. Then conversation support (`support`): a candidate
//! gains 0.3 × the best fused score among its neighbouring messages. The order
//! is deterministic (score, then id). The fused score orders one query's
//! candidates only; `crate::relevance` is the score comparable across queries.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::MemoryId;
use crate::store::Candidate;

/// Weights of the fused score; they need not sum to one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FusionWeights {
    /// Weight of the normalised keyword (BM25) score.
    pub keyword: f32,
    /// Weight of the normalised vector (cosine) score.
    pub vector: f32,
    /// Weight of the recency prior.
    pub recency: f32,
    /// Half-life of the recency prior, in days before the newest candidate.
    pub recency_half_life_days: f32,
    /// Weight of conversation support: the best fused score among a
    /// message's neighbours (see [`support`]).
    #[serde(default)]
    pub neighbour: f32,
    /// Weight of weakness: `strength - 1` is added times this, so a memory
    /// that faded or was reported wrong ranks lower (see
    /// [`crate::policy::strength`]).
    #[serde(default)]
    pub strength: f32,
    /// Weight of reinforcement: clients reported it used or helpful (see
    /// [`crate::policy::reinforcement`]).
    #[serde(default)]
    pub reinforcement: f32,
}

impl Default for FusionWeights {
    fn default() -> Self {
        FusionWeights {
            keyword: 0.5,
            vector: 0.5,
            recency: 0.02,
            recency_half_life_days: 30.0,
            neighbour: 0.3,
            strength: 0.1,
            reinforcement: 0.1,
        }
    }
}

/// Per-channel evidence for one result (raw and normalised).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChannelScores {
    /// Raw BM25 score, when the keyword channel matched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyword: Option<f32>,
    /// Cosine similarity to the query, when the memory has a vector.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<f32>,
    /// Keyword score after normalisation, between 0 and 1.
    pub keyword_norm: f32,
    /// Vector score after normalisation, between 0 and 1.
    pub vector_norm: f32,
    /// Recency prior, between 0 and 1.
    pub recency: f32,
    /// Best fused score among the message's conversation neighbours (before
    /// its weight), 0 when none of them is a candidate.
    #[serde(default)]
    pub neighbour: f32,
    /// The memory's strength, between 0 and 1 (1: fresh, or a kind that
    /// does not decay, and never reported wrong).
    #[serde(default = "one")]
    pub strength: f32,
    /// Its reinforcement by feedback, between 0 and 1.
    #[serde(default)]
    pub reinforcement: f32,
    /// Its kind's retrieval weight, multiplying the channel scores.
    #[serde(default = "one")]
    pub kind_weight: f32,
    /// Its rank among the keyword channel's candidates (1: best BM25), when
    /// it matched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyword_rank: Option<u32>,
    /// Its rank by cosine among all candidates with a vector (1: closest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector_rank: Option<u32>,
    /// What its neighbours added to its score (`neighbour` times its weight).
    #[serde(default)]
    pub neighbour_lift: f32,
}

fn one() -> f32 {
    1.0
}

impl Default for ChannelScores {
    fn default() -> Self {
        ChannelScores {
            keyword: None,
            vector: None,
            keyword_norm: 0.0,
            vector_norm: 0.0,
            recency: 0.0,
            neighbour: 0.0,
            strength: 1.0,
            reinforcement: 0.0,
            kind_weight: 1.0,
            keyword_rank: None,
            vector_rank: None,
            neighbour_lift: 0.0,
        }
    }
}

/// A fused result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fused {
    /// The memory.
    pub id: MemoryId,
    /// Final score.
    pub score: f32,
    /// Its parts.
    pub scores: ChannelScores,
}

/// Candidates with their 1-based rank by score (ties by id).
fn ranked(candidates: &[Candidate]) -> impl Iterator<Item = (&Candidate, u32)> {
    let mut order: Vec<&Candidate> = candidates.iter().collect();
    order.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    order.into_iter().zip(1..)
}

/// Fuses candidates. `keyword` holds BM25 candidates; `vector` holds the
/// cosine of every candidate that has a vector (from both channels);
/// `times` the event (or record) time of candidates. Returns all candidates,
/// best first; ties go to the smaller id, so the order is deterministic.
pub fn fuse(
    keyword: &[Candidate],
    vector: &[Candidate],
    times: &HashMap<MemoryId, DateTime<Utc>>,
    w: &FusionWeights,
) -> Vec<Fused> {
    let mut by_id: HashMap<MemoryId, ChannelScores> = HashMap::new();
    for (c, rank) in ranked(keyword) {
        let s = by_id.entry(c.id).or_default();
        s.keyword = Some(c.score);
        s.keyword_rank = Some(rank);
    }
    for (c, rank) in ranked(vector) {
        let s = by_id.entry(c.id).or_default();
        s.vector = Some(c.score);
        s.vector_rank = Some(rank);
    }
    let kw_max = keyword.iter().map(|c| c.score).fold(0.0f32, f32::max);
    let (v_min, v_max) = vector
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), c| {
            (lo.min(c.score), hi.max(c.score))
        });
    let newest = times.values().max().copied();
    let mut out: Vec<Fused> = by_id
        .into_iter()
        .map(|(id, mut s)| {
            s.keyword_norm = match s.keyword {
                Some(k) if kw_max > 0.0 => (k / kw_max).clamp(0.0, 1.0),
                _ => 0.0,
            };
            s.vector_norm = match s.vector {
                Some(v) if v_max > v_min => ((v - v_min) / (v_max - v_min)).clamp(0.0, 1.0),
                Some(_) => 1.0,
                None => 0.0,
            };
            s.recency = match (newest, times.get(&id)) {
                (Some(n), Some(t)) => {
                    let age_days = (n - *t).num_seconds().max(0) as f32 / 86_400.0;
                    0.5f32.powf(age_days / w.recency_half_life_days.max(1e-3))
                }
                _ => 0.0,
            };
            let score =
                w.keyword * s.keyword_norm + w.vector * s.vector_norm + w.recency * s.recency;
            Fused {
                id,
                score,
                scores: s,
            }
        })
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    out
}

/// Per-memory standing, from its kind's policy and its feedback (see
/// [`crate::policy`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Standing {
    /// Multiplies the channel scores.
    pub kind_weight: f32,
    /// Strength, 0..=1.
    pub strength: f32,
    /// Reinforcement, 0..=1.
    pub reinforcement: f32,
}

impl Default for Standing {
    fn default() -> Self {
        Standing {
            kind_weight: 1.0,
            strength: 1.0,
            reinforcement: 0.0,
        }
    }
}

/// Applies each candidate's standing (`standing[i]` is `fused[i]`'s):
/// `score × kind_weight + w.strength × (strength - 1) + w.reinforcement ×
/// reinforcement`, then re-sorts. Neutral standings change nothing.
pub fn apply_standing(fused: &mut [Fused], standing: &[Standing], w: &FusionWeights) {
    let mut changed = false;
    for (f, s) in fused.iter_mut().zip(standing) {
        f.scores.kind_weight = s.kind_weight;
        f.scores.strength = s.strength;
        f.scores.reinforcement = s.reinforcement;
        if *s != Standing::default() {
            changed = true;
            f.score = f.score * s.kind_weight
                + w.strength * (s.strength - 1.0)
                + w.reinforcement * s.reinforcement;
        }
    }
    if changed {
        fused.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    }
}

/// Conversation support: adds `w.neighbour` times the best fused score among
/// each candidate's neighbours (`windows[i]` holds candidate `i`'s window,
/// itself included) and re-sorts. A message whose neighbours also match is
/// more likely on the asked topic, and a question turn that matches lifts the
/// reply that answers it (passage-level evidence, as in passage retrieval
/// that scores a passage by its best sentences). Neighbours that are not
/// candidates count as 0.
pub fn support(fused: &mut [Fused], windows: &[Vec<MemoryId>], w: &FusionWeights) {
    if w.neighbour == 0.0 {
        return;
    }
    let base: HashMap<MemoryId, f32> = fused.iter().map(|f| (f.id, f.score)).collect();
    for (f, window) in fused.iter_mut().zip(windows) {
        let best = window
            .iter()
            .filter(|&&m| m != f.id)
            .filter_map(|m| base.get(m))
            .fold(0.0f32, |a, &b| a.max(b));
        f.scores.neighbour = best;
        f.scores.neighbour_lift = w.neighbour * best;
        f.score += f.scores.neighbour_lift;
    }
    fused.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id(n: u128) -> MemoryId {
        MemoryId::from_u128(n)
    }

    fn cand(n: u128, score: f32) -> Candidate {
        Candidate {
            id: id(n),
            score,
            time: DateTime::default(),
            recorded_at: DateTime::default(),
            kind: crate::model::MemoryKind::Message,
        }
    }

    #[test]
    fn each_candidate_knows_its_rank_in_each_channel() {
        let kw = [cand(2, 3.0), cand(1, 10.0)];
        let vs = [cand(3, 0.9), cand(1, 0.2), cand(2, 0.8)];
        let out = fuse(&kw, &vs, &HashMap::new(), &FusionWeights::default());
        let rank = |n| {
            let s = out.iter().find(|f| f.id == id(n)).unwrap().scores;
            (s.keyword_rank, s.vector_rank)
        };
        assert_eq!(rank(1), (Some(1), Some(3)));
        assert_eq!(rank(2), (Some(2), Some(2)));
        assert_eq!(rank(3), (None, Some(1)));
    }

    #[test]
    fn both_channels_beat_one() {
        let kw = [cand(1, 10.0), cand(2, 9.0)];
        let vs = [cand(2, 0.8), cand(1, 0.2), cand(3, 0.9)];
        let out = fuse(&kw, &vs, &HashMap::new(), &FusionWeights::default());
        assert_eq!(out[0].id, id(2));
        assert_eq!(out[0].scores.keyword, Some(9.0));
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn a_neighbour_that_matches_lifts_a_message() {
        // 1 and 3 score alike; 3's neighbour 2 matches too, 1's does not.
        let kw = [cand(1, 10.0), cand(3, 10.0), cand(2, 8.0)];
        let vs = [cand(1, 0.5), cand(3, 0.5), cand(2, 0.4), cand(4, 0.1)];
        let w = FusionWeights::default();
        let mut out = fuse(&kw, &vs, &HashMap::new(), &w);
        let windows: Vec<Vec<MemoryId>> = out
            .iter()
            .map(|f| match f.id.as_u128() {
                1 => vec![id(4), id(1)],
                2 => vec![id(2), id(3)],
                3 => vec![id(2), id(3)],
                _ => vec![f.id],
            })
            .collect();
        assert_eq!(out[0].id, id(1), "ties go to the smaller id before support");
        support(&mut out, &windows, &w);
        assert_eq!(out[0].id, id(3));
        let of = |n: u128| out.iter().find(|f| f.id == id(n)).unwrap().scores.neighbour;
        assert_eq!(of(1), 0.0, "its neighbour 4 matched nothing");
        assert!(of(3) > 0.7);
        let off = FusionWeights {
            neighbour: 0.0,
            ..w
        };
        let mut plain = fuse(&kw, &vs, &HashMap::new(), &off);
        support(&mut plain, &windows, &off);
        assert_eq!(plain[0].id, id(1));
    }

    proptest! {
        /// Fusion does not depend on the order candidates arrive in, and
        /// every score part stays in range.
        #[test]
        fn order_independent(kw in proptest::collection::vec((0u128..20, 0.0f32..30.0), 0..15),
                             vs in proptest::collection::vec((0u128..20, -1.0f32..1.0), 0..15)) {
            let dedup = |v: Vec<(u128, f32)>| {
                let mut seen = std::collections::HashSet::new();
                v.into_iter().filter(|(i, _)| seen.insert(*i)).map(|(i, s)| cand(i, s)).collect::<Vec<_>>()
            };
            let (kw, vs) = (dedup(kw), dedup(vs));
            let w = FusionWeights::default();
            let a = fuse(&kw, &vs, &HashMap::new(), &w);
            let mut kw_r = kw.clone(); kw_r.reverse();
            let mut vs_r = vs.clone(); vs_r.reverse();
            let b = fuse(&kw_r, &vs_r, &HashMap::new(), &w);
            prop_assert_eq!(a.iter().map(|f| f.id).collect::<Vec<_>>(), b.iter().map(|f| f.id).collect::<Vec<_>>());
            for f in &a {
                prop_assert!((0.0..=1.0).contains(&f.scores.keyword_norm));
                prop_assert!((0.0..=1.0).contains(&f.scores.vector_norm));
            }
        }
    }
}
