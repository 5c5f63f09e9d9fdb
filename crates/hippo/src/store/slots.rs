//! The slot table shared by the in-memory derived indexes (vectors,
//! keywords): each indexed memory gets a dense slot number with the fields
//! needed to filter without touching SQLite (id, scope, kind, event time),
//! plus per-scope posting lists so a search visits only its scope.
//!
//! Invariant: a live slot's fields equal its memory row at the last
//! committed write the owning index has applied.

use std::collections::{HashMap, HashSet};

use crate::model::{Filter, MemoryId, MemoryKind, Scope};

/// Per-slot fields.
#[derive(Debug, Clone)]
struct Slot {
    rowid: i64,
    id: MemoryId,
    /// Interned user/agent/session ids; 0 means unset.
    scope: [u32; 3],
    kind: MemoryKind,
    event_time: Option<i64>,
    alive: bool,
}

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
}

/// Dense slots with scope postings.
#[derive(Debug, Default)]
pub struct ScopedSlots {
    slots: Vec<Slot>,
    by_rowid: HashMap<i64, u32>,
    by_id: HashMap<MemoryId, u32>,
    interned: HashMap<String, u32>,
    /// Slots per interned id, for user, agent and session.
    postings: [HashMap<u32, Vec<u32>>; 3],
    all: Vec<u32>,
    dead: usize,
}

/// The slots a query may touch: a candidate list and an exact acceptance test.
pub struct Selection<'a> {
    slots: &'a ScopedSlots,
    want: [u32; 3],
    filter: &'a Filter,
    allowed: Option<&'a HashSet<i64>>,
    /// Every slot that can be accepted is in this list (plus others).
    pub list: &'a [u32],
}

impl Selection<'_> {
    /// True when `slot` is live, in scope and passes the filter.
    #[inline]
    pub fn accepts(&self, slot: u32) -> bool {
        let s = &self.slots.slots[slot as usize];
        s.alive
            && (0..3).all(|i| self.want[i] == 0 || s.scope[i] == self.want[i])
            && self.filter.accepts_kind_and_time(s.kind, s.event_time)
            && self.allowed.is_none_or(|a| a.contains(&s.rowid))
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
        self.push_interned(f.rowid, f.id, ids, f.kind, f.event_time)
    }

    fn push_interned(
        &mut self,
        rowid: i64,
        id: MemoryId,
        ids: [u32; 3],
        kind: MemoryKind,
        event_time: Option<i64>,
    ) -> u32 {
        let slot = self.slots.len() as u32;
        self.slots.push(Slot {
            rowid,
            id,
            scope: ids,
            kind,
            event_time,
            alive: true,
        });
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
        let s = &mut self.slots[slot as usize];
        s.alive = false;
        self.by_id.remove(&s.id);
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
        self.by_rowid.clear();
        self.by_id.clear();
        self.postings = Default::default();
        self.all.clear();
        self.dead = 0;
        let mut moved = Vec::with_capacity(old.len());
        for (i, s) in old.into_iter().enumerate() {
            if s.alive {
                self.push_interned(s.rowid, s.id, s.scope, s.kind, s.event_time);
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

    /// True when the slot is live.
    pub fn is_alive(&self, slot: u32) -> bool {
        self.slots[slot as usize].alive
    }

    /// The rowid of a slot.
    pub fn rowid(&self, slot: u32) -> i64 {
        self.slots[slot as usize].rowid
    }

    /// The memory id of a slot.
    pub fn id(&self, slot: u32) -> MemoryId {
        self.slots[slot as usize].id
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
        Some(Selection {
            slots: self,
            want,
            filter,
            allowed,
            list,
        })
    }
}
