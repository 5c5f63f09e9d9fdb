//! The slot table shared by the in-memory derived indexes (vectors,
//! keywords): each indexed memory gets a dense slot number with the fields
//! needed to filter without touching SQLite (id, scope, kind, event time),
//! plus per-scope posting lists so a search visits only its scope.
//!
//! Invariant: a live slot's fields equal its memory row at the last
//! committed write the owning index has applied.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};

use crate::model::{Filter, Memory, MemoryId, MemoryKind, Scope, Status};

/// Per-slot fields read only for results (and for validity checks of the
/// few slots whose validity is bounded, or `as_of` queries).
#[derive(Debug, Clone)]
struct Slot {
    rowid: i64,
    id: MemoryId,
    time: i64,
    /// When Hippo learnt it (record time), in epoch ms.
    recorded: i64,
    /// Validity `[valid_from, valid_to)` in epoch ms; `valid_to` is
    /// `i64::MAX` while the memory holds.
    valid_from: i64,
    valid_to: i64,
    /// The explicit `valid_from` (`i64::MIN` without one): not current
    /// before it (see [`Filter::accepts_validity`]).
    scheduled_from: i64,
}

/// Per-slot fields every scan reads, kept small (24 bytes) and apart from
/// [`Slot`] because scans are memory-bound.
#[derive(Debug, Clone, Copy)]
struct SlotKey {
    /// Interned user/agent/session ids; 0 means unset.
    scope: [u32; 3],
    kind: MemoryKind,
    alive: bool,
    status: Status,
    /// Validity has an end (`Slot::valid_to` is not `i64::MAX`) or an
    /// explicit start (`Slot::scheduled_from`): checks read the cold record.
    bounded: bool,
    /// Event time in epoch ms; `NO_TIME` when unset.
    event_time: i64,
}

const NO_TIME: i64 = i64::MIN;

// Scans are memory-bound: keep the hot record at 24 bytes.
const _: () = assert!(std::mem::size_of::<SlotKey>() == 24);

/// What a memory contributes to a slot.
#[derive(Debug, Clone, Copy)]
pub struct SlotFields<'a> {
    /// SQLite rowid.
    pub rowid: i64,
    /// Memory id.
    pub id: MemoryId,
    /// Owner.
    pub scope: &'a Scope,
    /// Kind.
    pub kind: MemoryKind,
    /// Event time in epoch milliseconds.
    pub event_time: Option<i64>,
    /// Event time, else record time, in epoch milliseconds (for recency).
    pub time: i64,
    /// Record time (when Hippo learnt it), in epoch milliseconds (for
    /// strength: memories fade from when they were learnt, not from when
    /// what they describe happened).
    pub recorded: i64,
    /// Status.
    pub status: Status,
    /// Start of validity in epoch milliseconds ([`Memory::valid_since`]).
    pub valid_from: i64,
    /// End of validity in epoch milliseconds, if ended.
    pub valid_to: Option<i64>,
    /// The explicit start of validity ([`Memory::valid_from`]), if any.
    pub scheduled_from: Option<i64>,
}

impl<'a> SlotFields<'a> {
    /// The fields of memory `m` stored at `rowid`.
    pub fn of(rowid: i64, m: &'a Memory) -> Self {
        let ms = |t: chrono::DateTime<chrono::Utc>| t.timestamp_millis();
        SlotFields {
            rowid,
            id: m.id,
            scope: &m.scope,
            kind: m.kind,
            event_time: m.event_time.map(ms),
            time: ms(m.event_time.unwrap_or(m.recorded_at)),
            recorded: ms(m.recorded_at),
            status: m.status,
            valid_from: ms(m.valid_since()),
            valid_to: m.valid_to.map(ms),
            scheduled_from: m.valid_from.map(ms),
        }
    }
}

/// A search hit of an in-memory index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// The memory.
    pub id: MemoryId,
    /// Raw channel score.
    pub score: f32,
    /// Event time, else record time, in epoch milliseconds.
    pub time: i64,
    /// Record time, in epoch milliseconds.
    pub recorded: i64,
    /// Its kind.
    pub kind: MemoryKind,
}

/// Dense slots with scope postings.
#[derive(Debug, Default)]
pub struct ScopedSlots {
    slots: Vec<Slot>,
    keys: Vec<SlotKey>,
    by_rowid: HashMap<i64, u32>,
    by_id: HashMap<MemoryId, u32>,
    interned: HashMap<String, u32>,
    /// Slots per interned id, for user, agent and session.
    postings: [HashMap<u32, Vec<u32>>; 3],
    all: Vec<u32>,
    dead: usize,
    /// Live slots that are not active or whose validity has ended: while
    /// there are none, default selections need no per-slot checks.
    restricted: usize,
}

/// A (score, rowid) pair ordered so that a max-heap pops the *worst* hit:
/// lower score is "greater", ties broken by larger rowid (ties go to the
/// older memory, the same on every run).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Worst(pub f32, pub i64);
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

pub(crate) fn push_top(heap: &mut BinaryHeap<Worst>, limit: usize, hit: Worst) {
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
pub(crate) fn sort_hits(hits: &mut [(i64, f32)]) {
    hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
}

/// The slots a query may touch: a candidate list and an exact acceptance test.
pub struct Selection<'a> {
    slots: &'a ScopedSlots,
    want: [u32; 3],
    filter: &'a Filter,
    status_mask: u8,
    allowed: Option<&'a HashSet<i64>>,
    /// Every slot that can be accepted is in this list (plus others).
    pub list: &'a [u32],
    /// Every slot in `list` is accepted: the list is exactly the scope, no
    /// slot is dead, and nothing else filters (scans of `list` skip the checks).
    trivial: bool,
}

impl Selection<'_> {
    /// [`Self::accepts`] for a slot taken from `list` (cheaper when the
    /// list is exactly the accepted set).
    #[inline(always)]
    pub fn accepts_listed(&self, slot: u32) -> bool {
        self.trivial || self.accepts(slot)
    }

    /// True when `slot` is live, in scope and passes the filter.
    #[inline(always)]
    pub fn accepts(&self, slot: u32) -> bool {
        let k = &self.slots.keys[slot as usize];
        k.alive
            && k.status.bit() & self.status_mask != 0
            && (0..3).all(|i| self.want[i] == 0 || k.scope[i] == self.want[i])
            && self
                .filter
                .accepts_kind_and_time(k.kind, (k.event_time != NO_TIME).then_some(k.event_time))
            && self.accepts_validity(slot, k.bounded)
            && self
                .allowed
                .is_none_or(|a| a.contains(&self.slots.slots[slot as usize].rowid))
    }

    /// The validity check; an unbounded slot holds now, so only `as_of`
    /// queries read its cold record.
    #[inline(always)]
    fn accepts_validity(&self, slot: u32, bounded: bool) -> bool {
        if !bounded && self.filter.as_of.is_none() {
            return true;
        }
        let s = &self.slots.slots[slot as usize];
        self.filter
            .accepts_validity(s.valid_from, s.valid_to, s.scheduled_from)
    }
}

impl ScopedSlots {
    /// Number of live slots.
    pub fn len(&self) -> usize {
        self.by_rowid.len()
    }

    /// True when no slot is live.
    pub fn is_empty(&self) -> bool {
        self.by_rowid.is_empty()
    }

    /// Number of slots ever handed out since the last compaction (live or dead).
    pub fn capacity(&self) -> usize {
        self.slots.len()
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

    /// Appends a slot; the rowid must not be live (remove it first).
    pub fn push(&mut self, f: SlotFields<'_>) -> u32 {
        debug_assert!(!self.by_rowid.contains_key(&f.rowid));
        let ids = [
            self.intern(&f.scope.user_id),
            self.intern(&f.scope.agent_id),
            self.intern(&f.scope.session_id),
        ];
        self.push_slot(
            Slot {
                rowid: f.rowid,
                id: f.id,
                time: f.time,
                recorded: f.recorded,
                valid_from: f.valid_from,
                valid_to: f.valid_to.unwrap_or(i64::MAX),
                scheduled_from: f.scheduled_from.unwrap_or(i64::MIN),
            },
            SlotKey {
                scope: ids,
                kind: f.kind,
                alive: true,
                status: f.status,
                bounded: f.valid_to.is_some() || f.scheduled_from.is_some(),
                event_time: f.event_time.unwrap_or(NO_TIME),
            },
        )
    }

    fn push_slot(&mut self, s: Slot, key: SlotKey) -> u32 {
        let slot = self.slots.len() as u32;
        if key.status != Status::Active || key.bounded {
            self.restricted += 1;
        }
        let (rowid, id, ids) = (s.rowid, s.id, key.scope);
        self.slots.push(s);
        self.keys.push(key);
        self.by_rowid.insert(rowid, slot);
        self.by_id.insert(id, slot);
        for (field, v) in ids.into_iter().enumerate() {
            if v != 0 {
                self.postings[field].entry(v).or_default().push(slot);
            }
        }
        self.all.push(slot);
        slot
    }

    /// Marks the slot of `rowid` dead; returns it.
    pub fn remove(&mut self, rowid: i64) -> Option<u32> {
        let slot = self.by_rowid.remove(&rowid)?;
        let k = &mut self.keys[slot as usize];
        k.alive = false;
        if k.status != Status::Active || k.bounded {
            self.restricted -= 1;
        }
        self.by_id.remove(&self.slots[slot as usize].id);
        self.dead += 1;
        Some(slot)
    }

    /// True when enough slots are dead that compacting pays.
    pub fn wants_compaction(&self) -> bool {
        self.dead > 1024 && self.dead > self.slots.len() / 2
    }

    /// Drops dead slots; returns, for each new slot, its old slot number.
    pub fn compact(&mut self) -> Vec<u32> {
        let old = std::mem::take(&mut self.slots);
        let old_keys = std::mem::take(&mut self.keys);
        self.by_rowid.clear();
        self.by_id.clear();
        self.postings = Default::default();
        self.all.clear();
        self.dead = 0;
        self.restricted = 0;
        let mut moved = Vec::with_capacity(old.len());
        for (i, (s, k)) in old.into_iter().zip(old_keys).enumerate() {
            if k.alive {
                self.push_slot(s, k);
                moved.push(i as u32);
            }
        }
        moved
    }

    /// The live slot of a rowid.
    pub fn slot_of(&self, rowid: i64) -> Option<u32> {
        self.by_rowid.get(&rowid).copied()
    }

    /// The live slot of a memory id.
    pub fn slot_of_id(&self, id: &MemoryId) -> Option<u32> {
        self.by_id.get(id).copied()
    }

    /// The id of the live memory at `rowid`.
    pub fn id_of_rowid(&self, rowid: i64) -> Option<MemoryId> {
        Some(self.slots[self.slot_of(rowid)? as usize].id)
    }

    /// The rowid of a slot.
    pub fn rowid(&self, slot: u32) -> i64 {
        self.slots[slot as usize].rowid
    }

    /// A top-k heap as hits, best first (memories gone since are dropped).
    pub(crate) fn hits(&self, heap: BinaryHeap<Worst>) -> Vec<Hit> {
        let mut hits: Vec<(i64, f32)> = heap.into_iter().map(|w| (w.1, w.0)).collect();
        sort_hits(&mut hits);
        hits.into_iter()
            .filter_map(|(rowid, s)| self.hit(rowid, s))
            .collect()
    }

    /// The hit for `rowid`'s live slot with `score`.
    pub fn hit(&self, rowid: i64, score: f32) -> Option<Hit> {
        let slot = self.slot_of(rowid)? as usize;
        let s = &self.slots[slot];
        Some(Hit {
            id: s.id,
            score,
            time: s.time,
            recorded: s.recorded,
            kind: self.keys[slot].kind,
        })
    }

    /// The slots a query in `scope` with `filter` (and, when given, only the
    /// rowids in `allowed`) may touch; `None` when nothing can match.
    pub fn select<'a>(
        &'a self,
        scope: &Scope,
        filter: &'a Filter,
        allowed: Option<&'a HashSet<i64>>,
    ) -> Option<Selection<'a>> {
        let fields = [&scope.user_id, &scope.agent_id, &scope.session_id];
        let mut want = [0u32; 3];
        for (i, f) in fields.iter().enumerate() {
            // A scope value never seen has no slots.
            want[i] = self.lookup(f)?;
        }
        // The shortest posting list among the fields that are set.
        let list: &[u32] = (0..3)
            .filter(|&i| want[i] != 0)
            .map(|i| {
                self.postings[i]
                    .get(&want[i])
                    .map_or(&[][..], Vec::as_slice)
            })
            .min_by_key(|l| l.len())
            .unwrap_or(&self.all);
        let status_mask = filter.status_mask();
        let trivial = self.dead == 0
            && self.restricted == 0
            && status_mask == Status::Active.bit()
            && filter.as_of.is_none()
            && allowed.is_none()
            && filter.kinds.is_empty()
            && filter.event_time_from.is_none()
            && filter.event_time_to.is_none()
            && want.iter().filter(|&&w| w != 0).count() <= 1;
        Some(Selection {
            slots: self,
            want,
            filter,
            status_mask,
            allowed,
            list,
            trivial,
        })
    }
}
