//! In-memory exact vector index over the vectors of one model, rebuilt from
//! the store's tables at open. Scope filters are applied before scoring, so
//! a search inside a small scope returns that scope's true top-k and never a
//! vector of another scope.
//!
//! Why exact and not HNSW: results are exact by construction (no recall loss
//! under selective filters, no tuning), deletes are trivial, and a scan of one
//! scope's vectors is fast at the sizes a single scope reaches (measured in
//! `benches/search.rs`; large scans are split across cores).
//!
//! The scan reads int8 codes (a quarter of the bytes of f32) and keeps, with
//! each approximate score, a rigorous bound on its quantization error; only
//! vectors whose upper bound reaches the k-th best lower bound are rescored
//! in f32. The top-k is therefore the exact f32 top-k, at int8 scan cost.

use std::collections::{BinaryHeap, HashSet};

use rayon::prelude::*;

use super::slots::{push_top, Hit, ScopedSlots, Selection, SlotFields, Worst};
use crate::model::{Filter, MemoryId, Scope};

/// Scans of more slots than this are split across threads.
const PARALLEL_SCAN_MIN: usize = 16_384;

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

#[inline(always)]
fn dot_i8_portable(a: &[i8], b: &[i8]) -> i32 {
    let mut acc = [0i32; 32];
    let (ca, cb) = (a.chunks_exact(32), b.chunks_exact(32));
    let tail: i32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..32 {
            acc[i] += i32::from(x[i]) * i32::from(y[i]);
        }
    }
    acc.iter().sum::<i32>() + tail
}

/// A quantized query, with `|code|` precomputed for the AVX2 kernel.
struct QueryCodes {
    codes: Vec<i8>,
    abs: Vec<i8>,
    quant: Quant,
}

impl QueryCodes {
    fn new(codes: Vec<i8>, quant: Quant) -> Self {
        let abs = codes.iter().map(|c| c.abs()).collect();
        QueryCodes { codes, abs, quant }
    }
}

/// AVX2 int8 dot product with a prepared query: `|q| · (b · sign q)` with
/// `maddubs` (u8 × i8 → i16 pairs, which cannot saturate for codes in
/// -127..=127), then `madd` to i32. No `target_feature` of its own so that
/// it inlines into AVX2 callers.
///
/// # Safety
/// Only call from code compiled with AVX2 enabled, on a CPU that has it.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn dot_i8_avx2_inline(q: &QueryCodes, b: &[i8]) -> i32 {
    use std::arch::x86_64::*;
    let n = q.codes.len().min(b.len());
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_si256();
    let mut i = 0;
    while i + 32 <= n {
        // SAFETY: i + 32 <= n, so the three 32-byte (unaligned) loads are in bounds.
        let va = _mm256_loadu_si256(q.codes.as_ptr().add(i).cast());
        let abs = _mm256_loadu_si256(q.abs.as_ptr().add(i).cast());
        let vb = _mm256_loadu_si256(b.as_ptr().add(i).cast());
        let pairs = _mm256_maddubs_epi16(abs, _mm256_sign_epi8(vb, va));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, ones));
        i += 32;
    }
    let s = _mm_add_epi32(
        _mm256_castsi256_si128(acc),
        _mm256_extracti128_si256(acc, 1),
    );
    let s = _mm_hadd_epi32(s, s);
    let s = _mm_hadd_epi32(s, s);
    _mm_cvtsi128_si32(s) + dot_i8_portable(&q.codes[i..n], &b[i..n])
}

/// Symmetric per-vector int8 quantization of `v`: codes, scale, and the
/// norms needed for the error bound.
#[derive(Debug, Clone, Copy, Default)]
struct Quant {
    /// `v[i] ≈ scale * code[i]`.
    scale: f32,
    /// `|v - scale * code|` (Euclidean), rounded up.
    err: f32,
    /// `|v|`.
    norm: f32,
}

fn quantize(v: &[f32], codes: &mut Vec<i8>) -> Quant {
    let max = v.iter().fold(0f32, |m, x| m.max(x.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let (mut err2, mut norm2) = (0f64, 0f64);
    for &x in v {
        let c = (x / scale).round().clamp(-127.0, 127.0);
        codes.push(c as i8);
        let d = f64::from(x) - f64::from(scale) * f64::from(c);
        err2 += d * d;
        norm2 += f64::from(x) * f64::from(x);
    }
    // Round the error up generously so f32 rounding in the scan stays inside it.
    Quant {
        scale,
        err: (err2.sqrt() * 1.001 + 1e-6) as f32,
        norm: norm2.sqrt() as f32,
    }
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

/// Result of the int8 pass over part of a scan: the best lower bounds, and
/// the accepted slots (with their upper bounds) that could still be in the top-k.
type ScanPart = (BinaryHeap<Worst>, Vec<(u32, f32)>);

/// The index.
#[derive(Debug, Default)]
pub struct VectorIndex {
    dim: usize,
    /// Vector of slot `i` at `data[i * dim..(i + 1) * dim]`.
    data: Vec<f32>,
    /// Its int8 codes at `codes[i * dim..(i + 1) * dim]`.
    codes: Vec<i8>,
    quants: Vec<Quant>,
    slots: ScopedSlots,
}

impl VectorIndex {
    /// An empty index of `dim`-long vectors.
    pub fn new(dim: usize) -> Self {
        VectorIndex {
            dim,
            ..Default::default()
        }
    }

    /// An empty index with room for `n` vectors (no regrowth while loading).
    pub fn with_capacity(dim: usize, n: usize) -> Self {
        VectorIndex {
            dim,
            data: Vec::with_capacity(n * dim),
            codes: Vec::with_capacity(n * dim),
            quants: Vec::with_capacity(n),
            ..Default::default()
        }
    }

    /// Vector length.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of live vectors.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when no vector is live.
    pub fn is_empty(&self) -> bool {
        self.slots.len() == 0
    }

    /// Adds or replaces the vector of a memory.
    pub fn upsert(&mut self, fields: SlotFields<'_>, vector: &[f32]) {
        assert_eq!(vector.len(), self.dim, "vector length must match the index");
        self.remove(fields.rowid);
        self.slots.push(fields);
        self.data.extend_from_slice(vector);
        let q = quantize(vector, &mut self.codes);
        self.quants.push(q);
    }

    /// Removes the vector of `rowid`, if present.
    pub fn remove(&mut self, rowid: i64) {
        if self.slots.remove(rowid).is_some() && self.slots.wants_compaction() {
            let moved = self.slots.compact();
            let old = std::mem::take(&mut self.data);
            let old_codes = std::mem::take(&mut self.codes);
            let old_quants = std::mem::take(&mut self.quants);
            self.data.reserve(moved.len() * self.dim);
            self.codes.reserve(moved.len() * self.dim);
            for o in moved {
                let i = o as usize * self.dim;
                self.data.extend_from_slice(&old[i..i + self.dim]);
                self.codes.extend_from_slice(&old_codes[i..i + self.dim]);
                self.quants.push(old_quants[o as usize]);
            }
        }
    }

    fn vector(&self, slot: u32) -> &[f32] {
        let i = slot as usize * self.dim;
        &self.data[i..i + self.dim]
    }

    /// The `limit` best (id, cosine) pairs among live vectors in `scope`
    /// passing the kind/time part of `filter` and, when given, in `allowed`.
    pub fn search(
        &self,
        scope: &Scope,
        filter: &Filter,
        allowed: Option<&HashSet<i64>>,
        query: &[f32],
        limit: usize,
    ) -> Vec<Hit> {
        if limit == 0 || query.len() != self.dim {
            return Vec::new();
        }
        let Some(sel) = self.slots.select(scope, filter, allowed) else {
            return Vec::new();
        };
        // Pass 1 (int8): approximate scores with error bounds, and the k-th
        // best lower bound. Pass 2 (f32): exact scores for every vector whose
        // upper bound reaches that lower bound; no other vector can be in the top-k.
        let mut qcodes = Vec::with_capacity(self.dim);
        let qq = quantize(query, &mut qcodes);
        let q = QueryCodes::new(qcodes, qq);
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::is_x86_feature_detected!("avx2");
        let approx = |part: &[u32]| {
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the CPU supports AVX2 (checked above).
                return unsafe { self.approx_part_avx2(&sel, part, &q, limit) };
            }
            self.approx_part(&sel, part, &q, limit, |b| dot_i8_portable(&q.codes, b))
        };
        let list = sel.list;
        let parts: Vec<ScanPart> = if list.len() >= PARALLEL_SCAN_MIN {
            // Several chunks per thread, so a busy core does not hold up the scan.
            let chunk = list.len().div_ceil(4 * rayon::current_num_threads().max(1));
            list.par_chunks(chunk).map(approx).collect()
        } else {
            vec![approx(list)]
        };
        let mut bounds = BinaryHeap::with_capacity(limit + 1);
        for (b, _) in &parts {
            for &w in b {
                push_top(&mut bounds, limit, w);
            }
        }
        let floor = if bounds.len() < limit {
            f32::NEG_INFINITY
        } else {
            bounds.peek().map_or(f32::NEG_INFINITY, |w| w.0)
        };
        let mut heap = BinaryHeap::with_capacity(limit + 1);
        for (_, scored) in &parts {
            for &(slot, upper) in scored {
                if upper >= floor {
                    let hit = Worst(dot(query, self.vector(slot)), self.slots.rowid(slot));
                    push_top(&mut heap, limit, hit);
                }
            }
        }
        self.slots.hits(heap)
    }

    /// The int8 pass over one part of a scan: the `limit` best lower
    /// bounds, and every accepted slot whose upper bound reaches the running
    /// k-th best lower bound (which only rises, so nothing dropped could
    /// reach the final one).
    #[inline(always)]
    fn approx_part(
        &self,
        sel: &Selection<'_>,
        part: &[u32],
        q: &QueryCodes,
        limit: usize,
        dot: impl Fn(&[i8]) -> i32,
    ) -> ScanPart {
        let mut bounds = BinaryHeap::with_capacity(limit + 1);
        let mut floor = f32::NEG_INFINITY;
        let mut scored = Vec::new();
        for &slot in part {
            if !sel.accepts_listed(slot) {
                continue;
            }
            let i = slot as usize * self.dim;
            let x = &self.quants[slot as usize];
            let s = dot(&self.codes[i..i + self.dim]) as f32 * x.scale * q.quant.scale;
            // |q·x − q̂·x̂| ≤ |q − q̂|·|x| + |q̂|·|x − x̂|, and |q̂| ≤ |q| + |q − q̂|.
            // The 1e-4 covers f32 rounding in this product and in the exact rescoring.
            let e = q.quant.err * x.norm + (q.quant.norm + q.quant.err) * x.err + 1e-4;
            if s + e < floor {
                continue;
            }
            if bounds.len() < limit || s - e > floor {
                push_top(&mut bounds, limit, Worst(s - e, 0));
                if bounds.len() == limit {
                    floor = bounds.peek().map_or(f32::NEG_INFINITY, |w| w.0);
                }
            }
            scored.push((slot, s + e));
        }
        (bounds, scored)
    }

    /// [`Self::approx_part`] compiled for AVX2, with the dot product inlined.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn approx_part_avx2(
        &self,
        sel: &Selection<'_>,
        part: &[u32],
        q: &QueryCodes,
        limit: usize,
    ) -> ScanPart {
        // SAFETY: this function only runs on CPUs with AVX2.
        self.approx_part(sel, part, q, limit, |b| unsafe { dot_i8_avx2_inline(q, b) })
    }

    /// The vector of each listed memory, if it has one.
    pub fn vectors(&self, ids: &[MemoryId]) -> Vec<Option<Vec<f32>>> {
        ids.iter()
            .map(|id| self.slots.slot_of_id(id).map(|s| self.vector(s).to_vec()))
            .collect()
    }

    /// Cosine of `query` with each listed memory that has a vector.
    pub fn scores(&self, ids: &[MemoryId], query: &[f32]) -> Vec<Hit> {
        if query.len() != self.dim {
            return Vec::new();
        }
        ids.iter()
            .filter_map(|id| {
                let slot = self.slots.slot_of_id(id)?;
                self.slots
                    .hit(self.slots.rowid(slot), dot(query, self.vector(slot)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MemoryKind;
    use crate::store::slots::sort_hits;
    use proptest::prelude::*;

    fn fields(rowid: i64, scope: &Scope) -> SlotFields<'_> {
        SlotFields {
            rowid,
            id: MemoryId::from_u128(rowid as u128),
            scope,
            kind: MemoryKind::Message,
            event_time: None,
            time: 0,
            recorded: 0,
            status: crate::model::Status::Active,
            valid_from: 0,
            valid_to: None,
            scheduled_from: None,
        }
    }

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

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn dot_avx2(a: &[i8], b: &[i8]) -> i32 {
        dot_i8_avx2_inline(&QueryCodes::new(a.to_vec(), Quant::default()), b)
    }

    #[test]
    fn int8_dot_matches_naive() {
        let mut x = 12345u64;
        let mut code = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (((x >> 33) % 255) as i32 - 127) as i8
        };
        for n in [0, 1, 31, 32, 33, 384, 400] {
            let a: Vec<i8> = (0..n).map(|_| code()).collect();
            let b: Vec<i8> = (0..n).map(|_| code()).collect();
            let naive: i32 = a
                .iter()
                .zip(&b)
                .map(|(&p, &q)| i32::from(p) * i32::from(q))
                .sum();
            assert_eq!(dot_i8_portable(&a, &b), naive);
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 is present.
                assert_eq!(unsafe { dot_avx2(&a, &b) }, naive);
            }
        }
        // Extremes do not saturate.
        let a = vec![127i8; 384];
        let b = vec![-127i8; 384];
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present.
            assert_eq!(unsafe { dot_avx2(&a, &b) }, -127 * 127 * 384);
        }
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
                idx.upsert(fields(i as i64, &scope), &v);
                rows.push((i as i64, scope, v));
            }
            for r in 0..removed.min(n) {
                idx.remove((r * 7 % n) as i64);
            }
            let query = unit(10_000 + q, dim);
            let scope = Scope::user("u0");
            let got = idx.search(&scope, &Filter::default(), None, &query, k);
            let mut want: Vec<(i64, f32)> = rows.iter()
                .filter(|(r, s, _)| s == &scope && idx.slots.slot_of(*r).is_some())
                .map(|(r, _, v)| (*r, dot(&query, v)))
                .collect();
            sort_hits(&mut want);
            want.truncate(k);
            let want: Vec<(MemoryId, f32)> = want.into_iter().map(|(r, s)| (MemoryId::from_u128(r as u128), s)).collect();
            let got: Vec<(MemoryId, f32)> = got.into_iter().map(|h| (h.id, h.score)).collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn unknown_scope_finds_nothing_and_compaction_keeps_vectors() {
        let mut idx = VectorIndex::new(4);
        for i in 0..3000 {
            let scope = Scope::user(if i % 2 == 0 { "a" } else { "b" });
            idx.upsert(fields(i, &scope), &unit(i as u64, 4));
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
        assert!(hits.iter().all(|h| {
            let r = h.id.as_u128();
            r % 2 == 0 && r >= 2500
        }));
    }
}
