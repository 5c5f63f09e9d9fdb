//! In-memory mirror of the message chain: the messages of one exact scope,
//! in write order, linked by SQLite's `memories.prev_rowid`. Search walks it
//! to find a hit's conversation neighbours without touching SQLite.
//!
//! Invariant: after every committed write, `prev(r) == Some(p)` exactly when
//! row `r`'s `prev_rowid` is `p`, and `next(p) == Some(r)` then too. Every
//! write that changes a link also touches both rows, and the store re-applies
//! each touched row's link (see `SqliteStore::apply_keywords`).

use std::collections::HashMap;

/// Previous/next links between message rowids.
#[derive(Debug, Default)]
pub struct Chain {
    prev: HashMap<i64, i64>,
    next: HashMap<i64, i64>,
}

impl Chain {
    /// Sets the previous message of `rowid` (`None`: first of its scope, or
    /// not a message).
    pub fn set(&mut self, rowid: i64, prev: Option<i64>) {
        self.unlink_prev(rowid);
        if let Some(p) = prev {
            // A link another row still holds is stale: that row is touched
            // by the same write and re-linked.
            if let Some(old) = self.next.insert(p, rowid) {
                if old != rowid && self.prev.get(&old) == Some(&p) {
                    self.prev.remove(&old);
                }
            }
            self.prev.insert(rowid, p);
        }
    }

    /// Forgets `rowid` (deleted).
    pub fn remove(&mut self, rowid: i64) {
        self.unlink_prev(rowid);
        if let Some(n) = self.next.remove(&rowid) {
            if self.prev.get(&n) == Some(&rowid) {
                self.prev.remove(&n);
            }
        }
    }

    fn unlink_prev(&mut self, rowid: i64) {
        if let Some(p) = self.prev.remove(&rowid) {
            if self.next.get(&p) == Some(&rowid) {
                self.next.remove(&p);
            }
        }
    }

    /// The message written just before `rowid` in its scope.
    pub fn prev(&self, rowid: i64) -> Option<i64> {
        self.prev.get(&rowid).copied()
    }

    /// The message written just after `rowid` in its scope.
    pub fn next(&self, rowid: i64) -> Option<i64> {
        self.next.get(&rowid).copied()
    }

    /// Up to `before` earlier and `after` later rowids around `rowid`,
    /// oldest first, `rowid` included.
    pub fn window(&self, rowid: i64, before: usize, after: usize) -> Vec<i64> {
        let mut out: Vec<i64> = std::iter::successors(self.prev(rowid), |&r| self.prev(r))
            .take(before)
            .collect();
        out.reverse();
        out.push(rowid);
        out.extend(std::iter::successors(self.next(rowid), |&r| self.next(r)).take(after));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn windows_follow_links_and_stop_at_the_ends() {
        let mut c = Chain::default();
        c.set(1, None);
        c.set(2, Some(1));
        c.set(3, Some(2));
        assert_eq!(c.window(2, 1, 1), [1, 2, 3]);
        assert_eq!(c.window(1, 3, 3), [1, 2, 3]);
        assert_eq!(c.window(9, 1, 1), [9]);
    }

    proptest! {
        /// Any sequence of appends and deletes, applied the way the store
        /// applies them (the deleted row's successor is re-linked), leaves
        /// the chain equal to the list it mirrors.
        #[test]
        fn mirrors_a_list(ops in proptest::collection::vec((any::<bool>(), 0usize..64), 1..80),
                          removed_first in any::<bool>()) {
            let mut list: Vec<i64> = Vec::new();
            let mut c = Chain::default();
            let mut next_rowid = 1;
            for (append, k) in ops {
                if append || list.is_empty() {
                    c.set(next_rowid, list.last().copied());
                    list.push(next_rowid);
                    next_rowid += 1;
                } else {
                    let i = k % list.len();
                    let r = list.remove(i);
                    let relink = |c: &mut Chain| {
                        if i < list.len() {
                            c.set(list[i], i.checked_sub(1).map(|j| list[j]));
                        }
                    };
                    if removed_first { c.remove(r); relink(&mut c); } else { relink(&mut c); c.remove(r); }
                }
                for (i, &r) in list.iter().enumerate() {
                    prop_assert_eq!(c.prev(r), i.checked_sub(1).map(|j| list[j]));
                    prop_assert_eq!(c.next(r), list.get(i + 1).copied());
                }
                prop_assert_eq!(c.prev.len(), list.len().saturating_sub(1));
                prop_assert_eq!(c.next.len(), list.len().saturating_sub(1));
            }
        }
    }
}
