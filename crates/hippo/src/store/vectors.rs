//! In-memory exact vector index over the vectors of one model, rebuilt from
//! the store's tables at open. Scope filters are applied before scoring, so
//! a search inside a small scope returns that scope's true top-k and never a
//! vector of another scope.
//!
//! Why exact and not HNSW: results are exact by construction (no recall loss
//! under selective filters, no tuning), deletes are trivial, and a scan of one
//! scope's vectors is fast at the sizes a single scope reaches (measured in
//! `benches/search.rs`; large scans are split across cores).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};

use rayon::prelude::*;

use crate::model::{Filter, MemoryKind, Scope};

/// Scans of more slots than this are split across threads.
const PARALLEL_SCAN_MIN: usize = 16_384;

/// Per-slot metadata needed to filter without touching SQLite.
#[derive(Debug, Clone)]
struct Slot {
    rowid: i64,
    /// Interned user/agent/session ids; 0 means unset.
    scope: [u32; 3],
    kind: MemoryKind,
    event_time: Option<i64>,
    alive: bool,
}

/// Dot product of two equally long slices.
#[inline(always)]
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    // Sixteen independent accumulators let LLVM keep the sum in SIMD registers.
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    dot_portable(a, b)
}

/// Dot product, using AVX2 when the CPU has it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports the features the function was compiled for.
        return unsafe { dot_avx2(a, b) };
    }
    dot_portable(a, b)
}

/// A (score, rowid) pair ordered so that a max-heap pops the *worst* hit:
/// lower score is "greater", ties broken by larger rowid.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Worst(f32, i64);
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.total_cmp(&self.0).then(self.1.cmp(&other.1))
    }
}

fn push_top(heap: &mut BinaryHeap<Worst>, limit: usize, hit: Worst) {
    if heap.len() < limit {
        heap.push(hit);
    } else if let Some(worst) = heap.peek() {
        if hit < *worst {
            heap.pop();
            heap.push(hit);
        }
    }
}

/// Sorts hits best-first: score descending, then rowid ascending.
pub fn sort_hits(hits: &mut [(i64, f32)]) {
    hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
}

/// The index.
#[derive(Debug, Default)]
pub struct VectorIndex {
    dim: usize,
    data: Vec<f32>,
    slots: Vec<Slot>,
    by_rowid: HashMap<i64, u32>,
    interned: HashMap<String, u32>,
    /// Slots per interned id, for user, agent and session.
    postings: [HashMap<u32, Vec<u32>>; 3],
    all: Vec<u32>,
    dead: usize,
}

impl VectorIndex {
    /// An empty index of `dim`-long vectors.
    pub fn new(dim: usize) -> Self {
        VectorIndex {
            dim,
            ..Default::default()
        }
    }

    /// Vector length.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of live vectors.
    pub fn len(&self) -> usize {
        self.by_rowid.len()
    }

    /// True when no vector is live.
    pub fn is_empty(&self) -> bool {
        self.by_rowid.is_empty()
    }

    fn intern(&mut self, s: &Option<String>) -> u32 {
        match s {
            None => 0,
            Some(s) => {
                let next = self.interned.len() as u32 + 1;
                *self.interned.entry(s.clone()).or_insert(next)
            }
        }
    }

    fn lookup(&self, s: &Option<String>) -> Option<u32> {
        match s {
            None => Some(0),
            Some(s) => self.interned.get(s).copied(),
        }
    }

    /// Adds or replaces the vector of `rowid`.
    pub fn upsert(
        &mut self,
        rowid: i64,
        scope: &Scope,
        kind: MemoryKind,
        event_time: Option<i64>,
        vector: &[f32],
    ) {
        assert_eq!(vector.len(), self.dim, "vector length must match the index");
        self.remove(rowid);
        let ids = [
            self.intern(&scope.user_id),
            self.intern(&scope.agent_id),
            self.intern(&scope.session_id),
        ];
        let slot = self.slots.len() as u32;
        self.slots.push(Slot {
            rowid,
            scope: ids,
            kind,
            event_time,
            alive: true,
        });
        self.data.extend_from_slice(vector);
        self.by_rowid.insert(rowid, slot);
        for (field, id) in ids.into_iter().enumerate() {
            if id != 0 {
                self.postings[field].entry(id).or_default().push(slot);
            }
        }
        self.all.push(slot);
    }

    /// Removes the vector of `rowid`, if present.
    pub fn remove(&mut self, rowid: i64) {
        if let Some(slot) = self.by_rowid.remove(&rowid) {
            self.slots[slot as usize].alive = false;
            self.dead += 1;
            if self.dead > 1024 && self.dead > self.slots.len() / 2 {
                self.compact();
            }
        }
    }

    /// Drops dead slots and rebuilds the postings.
    fn compact(&mut self) {
        let old_slots = std::mem::take(&mut self.slots);
        let old_data = std::mem::take(&mut self.data);
        let interned = std::mem::take(&mut self.interned);
        let names: HashMap<u32, String> = interned.into_iter().map(|(k, v)| (v, k)).collect();
        let dim = self.dim;
        *self = VectorIndex::new(dim);
        for (i, s) in old_slots.into_iter().enumerate() {
            if !s.alive {
                continue;
            }
            let name = |id: u32| (id != 0).then(|| names[&id].clone());
            let scope = Scope {
                user_id: name(s.scope[0]),
                agent_id: name(s.scope[1]),
                session_id: name(s.scope[2]),
            };
            self.upsert(
                s.rowid,
                &scope,
                s.kind,
                s.event_time,
                &old_data[i * dim..(i + 1) * dim],
            );
        }
    }

    fn vector(&self, slot: u32) -> &[f32] {
        let i = slot as usize * self.dim;
        &self.data[i..i + self.dim]
    }

    /// The `limit` best (rowid, cosine) pairs among live vectors in `scope`
    /// passing the kind/time part of `filter` and, when given, in `allowed`.
    pub fn search(
        &self,
        scope: &Scope,
        filter: &Filter,
        allowed: Option<&HashSet<i64>>,
        query: &[f32],
        limit: usize,
    ) -> Vec<(i64, f32)> {
        if limit == 0 || query.len() != self.dim {
            return Vec::new();
        }
        let fields = [&scope.user_id, &scope.agent_id, &scope.session_id];
        let mut want = [0u32; 3];
        for (i, f) in fields.iter().enumerate() {
            match self.lookup(f) {
                Some(id) => want[i] = id,
                None => return Vec::new(), // a scope value never seen has no vectors
            }
        }
        // Scan the shortest posting list among the fields that are set.
        let list: &[u32] = (0..3)
            .filter(|&i| want[i] != 0)
            .map(|i| {
                self.postings[i]
                    .get(&want[i])
                    .map_or(&[][..], Vec::as_slice)
            })
            .min_by_key(|l| l.len())
            .unwrap_or(&self.all);
        let accept = |slot: u32| {
            let s = &self.slots[slot as usize];
            s.alive
                && (0..3).all(|i| want[i] == 0 || s.scope[i] == want[i])
                && filter.accepts_kind_and_time(s.kind, s.event_time)
                && allowed.is_none_or(|a| a.contains(&s.rowid))
        };
        let scan = |part: &[u32]| {
            let mut heap = BinaryHeap::with_capacity(limit + 1);
            for &slot in part {
                if accept(slot) {
                    let hit = Worst(
                        dot(query, self.vector(slot)),
                        self.slots[slot as usize].rowid,
                    );
                    push_top(&mut heap, limit, hit);
                }
            }
            heap
        };
        let heap = if list.len() >= PARALLEL_SCAN_MIN {
            let chunk = list.len().div_ceil(rayon::current_num_threads().max(1));
            list.par_chunks(chunk)
                .map(scan)
                .reduce(BinaryHeap::new, |mut a, b| {
                    for h in b {
                        push_top(&mut a, limit, h);
                    }
                    a
                })
        } else {
            scan(list)
        };
        let mut hits: Vec<(i64, f32)> = heap.into_iter().map(|w| (w.1, w.0)).collect();
        sort_hits(&mut hits);
        hits
    }

    /// Cosine of `query` with each listed rowid that has a vector.
    pub fn scores(&self, rowids: &[i64], query: &[f32]) -> Vec<(i64, f32)> {
        if query.len() != self.dim {
            return Vec::new();
        }
        rowids
            .iter()
            .filter_map(|r| {
                self.by_rowid
                    .get(r)
                    .map(|&s| (*r, dot(query, self.vector(s))))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unit(seed: u64, dim: usize) -> Vec<f32> {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let mut v: Vec<f32> = (0..dim)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect();
        crate::embed::normalize(&mut v);
        v
    }

    #[test]
    fn dot_matches_naive() {
        for dim in [1, 15, 16, 17, 384] {
            let (a, b) = (unit(1, dim), unit(2, dim));
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - naive).abs() < 1e-5);
        }
    }

    proptest! {
        /// The index returns exactly the brute-force top-k of the scope.
        #[test]
        fn search_is_exact_and_scoped(n in 1usize..300, users in 1u32..5, k in 1usize..20, q in 0u64..1000, removed in 0usize..50) {
            let dim = 8;
            let mut idx = VectorIndex::new(dim);
            let mut rows = Vec::new();
            for i in 0..n {
                let scope = Scope::user(format!("u{}", i as u32 % users));
                let v = unit(i as u64, dim);
                idx.upsert(i as i64, &scope, MemoryKind::Message, None, &v);
                rows.push((i as i64, scope, v));
            }
            for r in 0..removed.min(n) {
                idx.remove((r * 7 % n) as i64);
            }
            let query = unit(10_000 + q, dim);
            let scope = Scope::user("u0");
            let got = idx.search(&scope, &Filter::default(), None, &query, k);
            let mut want: Vec<(i64, f32)> = rows.iter()
                .filter(|(r, s, _)| s == &scope && idx.by_rowid.contains_key(r))
                .map(|(r, _, v)| (*r, dot(&query, v)))
                .collect();
            sort_hits(&mut want);
            want.truncate(k);
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn unknown_scope_finds_nothing_and_compaction_keeps_vectors() {
        let mut idx = VectorIndex::new(4);
        for i in 0..3000 {
            idx.upsert(
                i,
                &Scope::user(if i % 2 == 0 { "a" } else { "b" }),
                MemoryKind::Message,
                None,
                &unit(i as u64, 4),
            );
        }
        for i in 0..2500 {
            idx.remove(i);
        }
        assert_eq!(idx.len(), 500);
        let q = unit(7, 4);
        assert!(idx
            .search(&Scope::user("zzz"), &Filter::default(), None, &q, 5)
            .is_empty());
        let hits = idx.search(&Scope::user("a"), &Filter::default(), None, &q, 1000);
        assert_eq!(hits.len(), 250);
        assert!(hits.iter().all(|(r, _)| r % 2 == 0 && *r >= 2500));
    }
}
