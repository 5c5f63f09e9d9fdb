//! In-memory mirror of the FTS5 keyword index, for fast exact top-k BM25.
//!
//! Why: FTS5 computes `bm25()` for every row matching any query term before
//! sorting, so a query with one common word costs time linear in the store
//! (tens of milliseconds at 100k memories). This index holds the same terms
//! (tokenized by FTS5 itself, see `fts.rs`) and scores with FTS5's exact
//! formula, but visits rare terms first and stops admitting new documents
//! once the remaining terms cannot lift one into the top-k (MaxScore-style
//! pruning), so common words cost only lookups in already-found documents.
//! Long queries of common terms (a Chinese question is a bigram per
//! character, most of them frequent) touch most of the scope: there the
//! pruning bound is recomputed only as it falls, and the terms left after
//! pruning are walked (for touched documents only) when that is cheaper than
//! looking each of them up in every live document.
//!
//! Invariants: the index holds exactly the rows of `memory_fts` (rebuilt from
//! it at open, updated from it inside every write transaction); its scores
//! equal `bm25(memory_fts, COLUMN_WEIGHTS)` with the sign flipped (a unit test
//! checks it against FTS5); a search never returns a slot outside its scope.

use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

use super::chain::Chain;
use super::slots::{push_top, Hit, ScopedSlots, SlotFields, Worst};
use crate::model::{Filter, MemoryId, Scope};

thread_local! {
    /// Per-thread score accumulators for term-at-a-time search, kept all
    /// zeros between searches (reused: a fresh zeroed buffer per query costs
    /// page faults at 100k documents).
    /// f32 (not f64): half the cache footprint of this randomly accessed
    /// array; pruning keeps a margin for the rounding.
    static ACCUMULATORS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// BM25 `k1`, as in FTS5.
const K1: f64 = 1.2;
/// BM25 `b`, as in FTS5.
const B: f64 = 0.75;

/// Scoring one document of a scope directly costs a binary search per query
/// term, about this many posting visits each; the planner uses it to choose
/// between scoring the scope's documents and walking posting lists.
const TERM_IN_DOC_COST_IN_POSTINGS: usize = 2;

/// Relative slack when comparing bounds with f32 partial scores.
const PRUNE_MARGIN: f64 = 1e-5;

/// Weights of the keyword document's columns: body, speaker, context.
pub const COLUMN_WEIGHTS: [f64; 3] = [1.0, 0.5, 0.25];

/// Term frequencies of one keyword document, per column.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct KeywordDoc {
    /// Term → occurrences in body, speaker and context.
    pub terms: BTreeMap<String, [u32; 3]>,
}

impl KeywordDoc {
    /// Counts one occurrence of `term` in column `col`.
    pub fn add(&mut self, term: &str, col: usize) {
        if let Some(tf) = self.terms.get_mut(term) {
            tf[col] += 1;
        } else {
            let mut tf = [0; 3];
            tf[col] = 1;
            self.terms.insert(term.to_owned(), tf);
        }
    }
}

#[derive(Debug, Default)]
struct Doc {
    /// (term, weighted frequency), sorted by term.
    terms: Box<[(u32, f32)]>,
}

impl Doc {
    fn tfw(&self, term: u32) -> Option<f32> {
        self.terms
            .binary_search_by_key(&term, |t| t.0)
            .ok()
            .map(|i| self.terms[i].1)
    }
}

#[derive(Debug)]
struct Term {
    /// (slot, weighted frequency); may name dead slots until compaction.
    postings: Vec<(u32, f32)>,
    /// Live documents containing the term.
    df: u32,
    /// Bounds for pruning: the largest weighted frequency and the shortest
    /// document ever seen with this term (stale values only loosen them).
    max_tfw: f32,
    min_len: u32,
}

/// The index.
#[derive(Debug, Default)]
pub struct KeywordIndex {
    slots: ScopedSlots,
    /// Per slot.
    docs: Vec<Doc>,
    /// Per slot: tokens in all columns (FTS5's row size). Apart from `docs`
    /// because scoring reads it at random and a dense array stays in cache.
    lens: Vec<u32>,
    dict: HashMap<Box<str>, u32>,
    terms: Vec<Term>,
    /// Tokens in all live documents.
    total_len: u64,
    /// The message chain (a keyword document's context column is its
    /// chain neighbours, so the mirror keeps the links too).
    chain: Chain,
}

/// FTS5's per-term BM25 contribution: `idf` from [`idf`], `tfw` the term's
/// column-weighted frequency in the document ([`COLUMN_WEIGHTS`]), `len` the
/// document's tokens in all columns, `avgdl` their mean over the store.
/// Every store's keyword channel scores with it.
#[inline]
pub fn bm25(idf: f64, tfw: f64, len: f64, avgdl: f64) -> f64 {
    idf * (tfw * (K1 + 1.0)) / (tfw + K1 * (1.0 - B + B * len / avgdl))
}

/// FTS5's inverse document frequency of a term in `df` of `n` documents;
/// a term in over half the documents weighs almost nothing (as in FTS5).
pub fn idf(n: f64, df: f64) -> f64 {
    let idf = ((n - df + 0.5) / (df + 0.5)).ln();
    if idf <= 0.0 {
        1e-6
    } else {
        idf
    }
}

/// How a search finds its documents.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Plan {
    /// Whichever of the others costs least.
    Cheapest,
    /// Score every document of the scope.
    Documents,
    /// Walk posting lists; the terms left once pruning starts are walked too
    /// (`Some(true)`), looked up per live document (`Some(false)`), or
    /// whichever costs less (`None`).
    Postings { walk_rest: Option<bool> },
}

struct QueryTerm {
    id: u32,
    idf: f64,
    upper: f64,
}

impl KeywordIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of documents.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.slots.len() == 0
    }

    fn term_id(&mut self, term: &str) -> u32 {
        if let Some(&id) = self.dict.get(term) {
            return id;
        }
        let id = self.terms.len() as u32;
        self.dict.insert(term.into(), id);
        self.terms.push(Term {
            postings: Vec::new(),
            df: 0,
            max_tfw: 0.0,
            min_len: u32::MAX,
        });
        id
    }

    /// Adds or replaces the keyword document of a memory, and its link to
    /// the previous message of its scope.
    pub fn upsert(&mut self, fields: SlotFields<'_>, prev: Option<i64>, doc: &KeywordDoc) {
        self.chain.set(fields.rowid, prev);
        self.remove_doc(fields.rowid);
        let slot = self.slots.push(fields);
        debug_assert_eq!(slot as usize, self.docs.len());
        let len: u32 = doc.terms.values().flatten().sum();
        let mut terms: Vec<(u32, f32)> = Vec::with_capacity(doc.terms.len());
        for (t, tf) in &doc.terms {
            let tfw: f64 = tf
                .iter()
                .zip(COLUMN_WEIGHTS)
                .map(|(&n, w)| f64::from(n) * w)
                .sum();
            let id = self.term_id(t);
            let e = &mut self.terms[id as usize];
            e.df += 1;
            e.max_tfw = e.max_tfw.max(tfw as f32);
            e.min_len = e.min_len.min(len);
            e.postings.push((slot, tfw as f32));
            terms.push((id, tfw as f32));
        }
        terms.sort_unstable_by_key(|t| t.0);
        self.docs.push(Doc {
            terms: terms.into_boxed_slice(),
        });
        self.lens.push(len);
        self.total_len += u64::from(len);
    }

    /// Starts a bulk load (at open): documents first, then FTS5's term
    /// instances in FTS5's order, without building per-document maps.
    pub fn bulk() -> BulkLoad {
        BulkLoad::default()
    }

    /// Removes the document of `rowid`, if present, and its chain links.
    pub fn remove(&mut self, rowid: i64) {
        self.chain.remove(rowid);
        self.remove_doc(rowid);
    }

    /// For each id, its conversation window: up to `before` earlier and
    /// `after` later messages of its exact scope, oldest first, itself
    /// included (unknown ids: empty).
    pub fn windows(&self, ids: &[MemoryId], before: usize, after: usize) -> Vec<Vec<MemoryId>> {
        ids.iter()
            .map(|id| match self.slots.slot_of_id(id) {
                None => Vec::new(),
                Some(slot) => self
                    .chain
                    .window(self.slots.rowid(slot), before, after)
                    .into_iter()
                    .filter_map(|r| self.slots.id_of_rowid(r))
                    .collect(),
            })
            .collect()
    }

    fn remove_doc(&mut self, rowid: i64) {
        let Some(slot) = self.slots.remove(rowid) else {
            return;
        };
        let doc = std::mem::take(&mut self.docs[slot as usize]);
        for (t, _) in doc.terms.iter() {
            self.terms[*t as usize].df -= 1;
        }
        self.total_len -= u64::from(self.lens[slot as usize]);
        if self.slots.wants_compaction() {
            self.compact();
        }
    }

    /// Drops dead slots and rebuilds postings and bounds.
    fn compact(&mut self) {
        let moved = self.slots.compact();
        let mut old = std::mem::take(&mut self.docs);
        let old_lens = std::mem::take(&mut self.lens);
        for t in &mut self.terms {
            t.postings.clear();
            t.max_tfw = 0.0;
            t.min_len = u32::MAX;
        }
        for (slot, o) in moved.into_iter().enumerate() {
            let doc = std::mem::take(&mut old[o as usize]);
            let len = old_lens[o as usize];
            for &(t, tfw) in doc.terms.iter() {
                let e = &mut self.terms[t as usize];
                e.postings.push((slot as u32, tfw));
                e.max_tfw = e.max_tfw.max(tfw);
                e.min_len = e.min_len.min(len);
            }
            self.docs.push(doc);
            self.lens.push(len);
        }
    }

    /// The `limit` best (id, BM25) pairs among documents in `scope` passing
    /// the kind/time part of `filter` (and in `allowed` when given) that
    /// contain any of `tokens` (FTS5 tokens, see `fts::query_tokens`).
    pub fn search(
        &self,
        scope: &Scope,
        filter: &Filter,
        allowed: Option<&HashSet<i64>>,
        tokens: &[String],
        limit: usize,
    ) -> Vec<Hit> {
        self.search_planned(scope, filter, allowed, tokens, limit, Plan::Cheapest)
    }

    /// [`Self::search`] by the given plan (tests check every plan against
    /// brute force).
    fn search_planned(
        &self,
        scope: &Scope,
        filter: &Filter,
        allowed: Option<&HashSet<i64>>,
        tokens: &[String],
        limit: usize,
        plan: Plan,
    ) -> Vec<Hit> {
        let n = self.slots.len() as f64;
        if limit == 0 || self.total_len == 0 {
            return Vec::new();
        }
        let avgdl = self.total_len as f64 / n;
        let mut query: Vec<QueryTerm> = Vec::new();
        for t in tokens {
            let Some(&id) = self.dict.get(t.as_str()) else {
                continue;
            };
            let e = &self.terms[id as usize];
            if e.df == 0 || query.iter().any(|q| q.id == id) {
                continue;
            }
            let df = f64::from(e.df);
            let idf = idf(n, df);
            let upper = bm25(idf, f64::from(e.max_tfw), f64::from(e.min_len), avgdl);
            query.push(QueryTerm { id, idf, upper });
        }
        if query.is_empty() {
            return Vec::new();
        }
        let Some(sel) = self.slots.select(scope, filter, allowed) else {
            return Vec::new();
        };
        let score_in = |slot: u32, terms: &[QueryTerm]| -> Option<f64> {
            let doc = &self.docs[slot as usize];
            let len = f64::from(self.lens[slot as usize]);
            let mut s = None;
            for q in terms {
                if let Some(tfw) = doc.tfw(q.id) {
                    *s.get_or_insert(0.0) += bm25(q.idf, f64::from(tfw), len, avgdl);
                }
            }
            s
        };
        let postings: usize = query
            .iter()
            .map(|q| self.terms[q.id as usize].postings.len())
            .sum();
        let mut heap = BinaryHeap::with_capacity(limit + 1);
        let plan = match plan {
            Plan::Cheapest
                if sel.list.len() * query.len() * TERM_IN_DOC_COST_IN_POSTINGS <= postings =>
            {
                Plan::Documents
            }
            Plan::Cheapest => Plan::Postings { walk_rest: None },
            chosen => chosen,
        };
        if plan == Plan::Documents {
            // The scope is smaller than the posting lists: score its documents directly.
            for &slot in sel.list {
                if sel.accepts_listed(slot) {
                    if let Some(s) = score_in(slot, &query) {
                        push_top(&mut heap, limit, Worst(s as f32, self.slots.rowid(slot)));
                    }
                }
            }
        } else {
            // Term at a time, rarest (highest bound) first, into dense accumulators.
            query.sort_by(|a, b| b.upper.total_cmp(&a.upper));
            let mut buffer = ACCUMULATORS.with(|a| std::mem::take(&mut *a.borrow_mut()));
            if buffer.len() < self.slots.capacity() {
                buffer.resize(self.slots.capacity(), 0.0);
            }
            let acc = &mut buffer;
            let mut touched: Vec<u32> = Vec::new();
            let mut remaining: f64 = query.iter().map(|q| q.upper).sum();
            let mut threshold = f64::NEG_INFINITY;
            // `remaining` when the threshold was last computed: computing it
            // costs a pass over every touched document, so it is redone only
            // once the bound has fallen by a tenth (long queries of common
            // terms touch most of the scope).
            let mut checked_at = f64::INFINITY;
            let mut done = query.len();
            for (i, q) in query.iter().enumerate() {
                if i > 0 && touched.len() >= limit && remaining < checked_at * 0.9 {
                    checked_at = remaining;
                    // Partial scores only grow, so the k-th best so far bounds the final k-th.
                    let mut partial: Vec<f32> = touched.iter().map(|&s| acc[s as usize]).collect();
                    let kth = partial.len() - limit;
                    let kth = *partial.select_nth_unstable_by(kth, |a, b| a.total_cmp(b)).1;
                    threshold = f64::from(kth) * (1.0 - PRUNE_MARGIN);
                    if remaining < threshold {
                        // No untouched document can reach the top-k any more.
                        done = i;
                        break;
                    }
                }
                for &(slot, tfw) in &self.terms[q.id as usize].postings {
                    if !sel.accepts(slot) {
                        continue;
                    }
                    let a = &mut acc[slot as usize];
                    if *a == 0.0 {
                        touched.push(slot);
                    }
                    let len = f64::from(self.lens[slot as usize]);
                    *a += bm25(q.idf, f64::from(tfw), len, avgdl) as f32;
                }
                remaining -= q.upper;
            }
            let rest = &query[done..];
            // Whether a touched document may still reach the top-k.
            let live =
                |acc: &[f32], slot: u32| f64::from(acc[slot as usize]) + remaining >= threshold;
            let lookup = !rest.is_empty()
                && match plan {
                    Plan::Postings {
                        walk_rest: Some(walk),
                    } => !walk,
                    _ => {
                        let alive = touched.iter().filter(|&&s| live(acc, s)).count();
                        let rest_postings: usize = rest
                            .iter()
                            .map(|q| self.terms[q.id as usize].postings.len())
                            .sum();
                        rest_postings >= alive * rest.len() * TERM_IN_DOC_COST_IN_POSTINGS
                    }
                };
            if lookup {
                for &slot in &touched {
                    if live(acc, slot) {
                        let s = f64::from(acc[slot as usize]) + score_in(slot, rest).unwrap_or(0.0);
                        push_top(&mut heap, limit, Worst(s as f32, self.slots.rowid(slot)));
                    }
                }
            } else {
                // Cheaper to walk the rest's postings (if any) than to look
                // each term up in each live document: add to touched
                // documents only (a touched accumulator is positive: BM25's
                // IDF is floored above 0). Every touched score is then whole.
                for q in rest {
                    for &(slot, tfw) in &self.terms[q.id as usize].postings {
                        let a = &mut acc[slot as usize];
                        if *a != 0.0 {
                            let len = f64::from(self.lens[slot as usize]);
                            *a += bm25(q.idf, f64::from(tfw), len, avgdl) as f32;
                        }
                    }
                }
                for &slot in &touched {
                    push_top(
                        &mut heap,
                        limit,
                        Worst(acc[slot as usize], self.slots.rowid(slot)),
                    );
                }
            }
            // Hand the buffer back all zeros, touching only what was used.
            for &slot in &touched {
                acc[slot as usize] = 0.0;
            }
            ACCUMULATORS.with(|a| *a.borrow_mut() = buffer);
        }
        self.slots.hits(heap)
    }
}

/// An index being built from a full scan of FTS5 (see [`KeywordIndex::bulk`]).
#[derive(Default)]
pub struct BulkLoad {
    index: KeywordIndex,
    forward: Vec<Vec<(u32, f32)>>,
    lens: Vec<u32>,
    term: Option<u32>,
    term_text: String,
    /// The (slot, per-column frequencies) being counted for the current term.
    pending: Option<(u32, [u32; 3])>,
}

impl BulkLoad {
    /// Adds a document (all documents come before any instance, in rowid
    /// order) with its link to the previous message of its scope.
    pub fn doc(&mut self, fields: SlotFields<'_>, prev: Option<i64>) {
        self.index.chain.set(fields.rowid, prev);
        self.index.slots.push(fields);
        self.forward.push(Vec::new());
        self.lens.push(0);
    }

    fn flush(&mut self) {
        if let (Some(term), Some((slot, tf))) = (self.term, self.pending.take()) {
            let tfw: f64 = tf
                .iter()
                .zip(COLUMN_WEIGHTS)
                .map(|(&n, w)| f64::from(n) * w)
                .sum();
            self.forward[slot as usize].push((term, tfw as f32));
            self.lens[slot as usize] += tf.iter().sum::<u32>();
            let e = &mut self.index.terms[term as usize];
            e.df += 1;
            e.postings.push((slot, tfw as f32));
        }
    }

    /// Counts one instance of `term` in column `col` of `rowid`. Instances
    /// must come grouped by term and, within a term, by ascending rowid (the
    /// order of FTS5's `fts5vocab` instance table); anything else is an error.
    pub fn instance(&mut self, term: &str, rowid: i64, col: usize) -> Result<(), String> {
        if self.term.is_none() || term != self.term_text {
            self.flush();
            if self.index.dict.contains_key(term) {
                return Err(format!(
                    "term {term:?} seen twice: instances are not grouped by term"
                ));
            }
            self.term = Some(self.index.term_id(term));
            term.clone_into(&mut self.term_text);
        }
        let Some(slot) = self.index.slots.slot_of(rowid) else {
            return Ok(()); // no memory row: not indexed
        };
        match &mut self.pending {
            Some((s, tf)) if *s == slot => tf[col] += 1,
            Some((s, _)) if *s > slot => {
                return Err(format!("rowid {rowid} of term {term:?} out of order"));
            }
            _ => {
                self.flush();
                let mut tf = [0; 3];
                tf[col] = 1;
                self.pending = Some((slot, tf));
            }
        }
        Ok(())
    }

    /// The finished index.
    pub fn finish(mut self) -> KeywordIndex {
        self.flush();
        let mut index = self.index;
        // Term ids rose with the scan, so each forward list is already sorted.
        index.docs = self
            .forward
            .into_iter()
            .map(|terms| Doc {
                terms: terms.into_boxed_slice(),
            })
            .collect();
        index.total_len = self.lens.iter().map(|&l| u64::from(l)).sum();
        for t in &mut index.terms {
            t.postings.shrink_to_fit();
            for &(slot, tfw) in &t.postings {
                t.max_tfw = t.max_tfw.max(tfw);
                t.min_len = t.min_len.min(self.lens[slot as usize]);
            }
        }
        index.lens = self.lens;
        index
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{MemoryId, MemoryKind};
    use proptest::prelude::*;

    fn doc(words: &[&str]) -> KeywordDoc {
        let mut d = KeywordDoc::default();
        for w in words {
            d.add(w, 0);
        }
        d
    }

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

    /// Reference: score every live document of the scope, no pruning.
    fn brute(
        idx: &KeywordIndex,
        docs: &HashMap<i64, (Scope, KeywordDoc)>,
        scope: &Scope,
        q: &[String],
    ) -> Vec<(i64, f64)> {
        let n = docs.len() as f64;
        let total: u64 = docs
            .values()
            .map(|d| {
                d.1.terms
                    .values()
                    .flatten()
                    .map(|&x| u64::from(x))
                    .sum::<u64>()
            })
            .sum();
        let avgdl = total as f64 / n;
        let mut out = Vec::new();
        for (r, (s, d)) in docs {
            if s != scope {
                continue;
            }
            let len: u32 = d.terms.values().flatten().sum();
            let mut score = None;
            let mut seen = HashSet::new();
            for t in q {
                if !seen.insert(t) {
                    continue;
                }
                if let Some(tf) = d.terms.get(t) {
                    let df = docs.values().filter(|x| x.1.terms.contains_key(t)).count() as f64;
                    let mut idf = ((n - df + 0.5) / (df + 0.5)).ln();
                    if idf <= 0.0 {
                        idf = 1e-6;
                    }
                    let tfw: f64 = tf
                        .iter()
                        .zip(COLUMN_WEIGHTS)
                        .map(|(&a, w)| f64::from(a) * w)
                        .sum();
                    *score.get_or_insert(0.0) += bm25(idf, tfw, f64::from(len), avgdl);
                }
            }
            if let Some(s) = score {
                out.push((*r, s));
            }
        }
        let _ = idx;
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        out
    }

    proptest! {
        /// Pruned search returns the brute-force top-k scores of the scope.
        #[test]
        fn search_matches_brute_force(
            texts in proptest::collection::vec(proptest::collection::vec(0usize..40, 0..12), 1..200),
            users in 1usize..4,
            query in proptest::collection::vec(0usize..45, 1..30),
            k in 1usize..15,
            removed in proptest::collection::vec(0usize..200, 0..40),
        ) {
            // Zipf-ish vocabulary: small word ids are common.
            let word = |i: usize| format!("w{}", (i * i) / 40);
            let mut idx = KeywordIndex::new();
            let mut docs = HashMap::new();
            for (i, t) in texts.iter().enumerate() {
                let scope = Scope::user(format!("u{}", i % users));
                let words: Vec<String> = t.iter().map(|&w| word(w)).collect();
                let refs: Vec<&str> = words.iter().map(String::as_str).collect();
                let d = doc(&refs);
                idx.upsert(fields(i as i64, &scope), None, &d);
                docs.insert(i as i64, (scope, d));
            }
            for r in removed {
                idx.remove(r as i64);
                docs.remove(&(r as i64));
            }
            prop_assume!(!docs.is_empty());
            let q: Vec<String> = query.iter().map(|&w| word(w)).collect();
            let scope = Scope::user("u0");
            let want = brute(&idx, &docs, &scope, &q);
            for plan in [
                Plan::Cheapest,
                Plan::Documents,
                Plan::Postings { walk_rest: None },
                Plan::Postings { walk_rest: Some(true) },
                Plan::Postings { walk_rest: Some(false) },
            ] {
                let got = idx.search_planned(&scope, &Filter::default(), None, &q, k, plan);
                prop_assert_eq!(got.len(), want.len().min(k), "{:?}", plan);
                for (g, w) in got.iter().zip(&want) {
                    prop_assert!((f64::from(g.score) - w.1).abs() <= 1e-5 * w.1.abs().max(1.0), "{:?}: {:?} vs {:?}", plan, got, want);
                }
                // Every returned id is in scope and really matches.
                for h in &got {
                    let r = h.id.as_u128() as i64;
                    prop_assert!(docs.get(&r).is_some_and(|d| d.0 == scope));
                }
            }
        }
    }

    #[test]
    fn bulk_load_equals_incremental_and_checks_order() {
        let scope = Scope::user("a");
        let texts = ["red fox red", "blue fox", "red sky", "green"];
        let mut incremental = KeywordIndex::new();
        let mut bulk = KeywordIndex::bulk();
        for (i, t) in texts.iter().enumerate() {
            let words: Vec<&str> = t.split(' ').collect();
            incremental.upsert(fields(i as i64, &scope), None, &doc(&words));
            bulk.doc(fields(i as i64, &scope), None);
        }
        // fts5vocab order: by term, then rowid.
        let mut instances: Vec<(&str, i64)> = texts
            .iter()
            .enumerate()
            .flat_map(|(i, t)| t.split(' ').map(move |w| (w, i as i64)))
            .collect();
        instances.sort();
        for (w, r) in &instances {
            bulk.instance(w, *r, 0).unwrap();
        }
        let bulk = bulk.finish();
        for q in [
            vec!["red"],
            vec!["fox", "sky"],
            vec!["green", "red", "blue"],
        ] {
            let q: Vec<String> = q.into_iter().map(String::from).collect();
            assert_eq!(
                bulk.search(&scope, &Filter::default(), None, &q, 10),
                incremental.search(&scope, &Filter::default(), None, &q, 10)
            );
        }
        let mut bad = KeywordIndex::bulk();
        bad.doc(fields(0, &scope), None);
        bad.doc(fields(1, &scope), None);
        bad.instance("a", 1, 0).unwrap();
        assert!(bad.instance("a", 0, 0).is_err());
        assert!(bad.instance("b", 0, 0).is_ok());
        assert!(bad.instance("a", 1, 0).is_err());
    }

    #[test]
    fn compaction_keeps_documents_and_statistics() {
        let mut idx = KeywordIndex::new();
        let scope = Scope::user("a");
        for i in 0..3000 {
            let w = if i % 3 == 0 { "rare" } else { "common" };
            idx.upsert(fields(i, &scope), None, &doc(&[w, "filler"]));
        }
        for i in 0..2500 {
            idx.remove(i);
        }
        assert_eq!(idx.len(), 500);
        let hits = idx.search(&scope, &Filter::default(), None, &["rare".into()], 1000);
        assert_eq!(hits.len(), (2500..3000).filter(|i| i % 3 == 0).count());
        assert!(idx
            .search(
                &Scope::user("zzz"),
                &Filter::default(),
                None,
                &["rare".into()],
                5
            )
            .is_empty());
    }
}
