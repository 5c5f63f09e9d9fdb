//! Sharing: memories are private to their owner scope; a [`Grant`] lets
//! another user or agent of the same tenant read one memory (any version),
//! or everything in a scope, optionally until an expiry. Grants are checked
//! at read time against the clock — an expired or revoked grant stops
//! working at once, with nothing to clean up — and every grant and
//! revocation is in the audit log.
//!
//! Grants give read access only: a grantee can get, search and read the
//! history of what is shared, never change or delete it. Nothing is copied
//! and nothing is cached: each read asks the store for the reader's grants
//! in force (`Hippo::visible`, one indexed query). Reads honour grants
//! (`Hippo::read`, `history`, search through `Reader::sees`); changes go
//! through `Hippo::get`, which ignores them. Search runs its keyword and
//! vector channels once per part (the reader's scope, each shared scope, and
//! per owner the memories shared one by one) and ranks all candidates
//! together. Context neighbours pass the same `sees` check, so a memory
//! shared alone comes without its conversation. Erasing a memory or a scope
//! deletes the grants of it (and, for a user or agent, to it).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use std::collections::HashSet;

use crate::engine::Hippo;
use crate::error::{Error, Result};
use crate::model::{Memory, MemoryId, Scope};
use crate::store::{Candidate, GrantQuery};

/// Most grants in force for one reader that a search or read takes into
/// account (a reader with more sees the oldest this many; listed in docs).
pub const MAX_GRANTS_PER_READER: usize = 256;

/// Who a grant is for: one user or one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Grantee {
    /// The user who may read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The agent that may read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
}

impl Grantee {
    /// Checks that exactly one of `user_id` and `agent_id` is set (and valid).
    pub fn validate(&self) -> Result<()> {
        if self.user_id.is_some() == self.agent_id.is_some() {
            return Err(Error::invalid(
                "a grantee is exactly one of user_id or agent_id",
            ));
        }
        Scope {
            user_id: self.user_id.clone(),
            agent_id: self.agent_id.clone(),
            session_id: None,
        }
        .validate()
    }

    /// Whether a reader acting as `reader` (its user and agent) is this
    /// grantee.
    pub fn is(&self, reader: &Scope) -> bool {
        (self.user_id.is_some() && self.user_id == reader.user_id)
            || (self.agent_id.is_some() && self.agent_id == reader.agent_id)
    }
}

/// A read grant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Grant {
    /// Grant id (UUIDv7).
    pub id: Uuid,
    /// The one memory shared (any of its versions), or `None` for a scope
    /// grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_id: Option<MemoryId>,
    /// For a scope grant, the scope shared (every memory whose scope it
    /// matches, written before or after the grant); for a memory grant, the
    /// memory's owner scope.
    pub scope: Scope,
    /// Who may read.
    pub grantee: Grantee,
    /// When it was given.
    pub created_at: DateTime<Utc>,
    /// Who gave it (the audit actor: `key:<id>`, `local`, ...).
    pub created_by: String,
    /// When it stops working, if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Grant {
    /// Whether it works at `now`: not revoked and not expired.
    pub fn in_force(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e > now)
    }

    /// Whether it shares `m` (ignoring time and grantee).
    pub fn shares(&self, m: &Memory) -> bool {
        match self.memory_id {
            Some(id) => m.id == id || m.version_of == Some(id),
            None => self.scope.matches(&m.scope),
        }
    }
}

/// What a client asks to share.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NewGrant {
    /// Share this memory...
    pub memory_id: Option<MemoryId>,
    /// ...or everything in this scope (exactly one of the two).
    pub scope: Option<Scope>,
    /// With whom.
    pub grantee: Grantee,
    /// Until when (must be in the future).
    pub expires_at: Option<DateTime<Utc>>,
}

/// The grants in force for one reader, found once per read.
#[derive(Debug, Clone, Default)]
pub struct Visible {
    /// Grants in force whose grantee is the reader.
    pub grants: Vec<Grant>,
}

impl Visible {
    /// The grant that lets the reader see `m`, if any.
    pub fn grant_for(&self, m: &Memory) -> Option<&Grant> {
        self.grants.iter().find(|g| g.shares(m))
    }

    /// What a search covers, as store queries: the reader's own scope, each
    /// shared scope, and per owner scope the memories shared one by one
    /// (candidates outside the id set are dropped).
    pub fn parts(&self, own: &Scope) -> Vec<(Scope, Option<HashSet<MemoryId>>)> {
        let mut parts: Vec<(Scope, Option<HashSet<MemoryId>>)> = vec![(own.clone(), None)];
        let whole = |parts: &[(Scope, Option<HashSet<MemoryId>>)], s: &Scope| {
            parts.iter().any(|(p, only)| only.is_none() && p.matches(s))
        };
        for g in self.grants.iter().filter(|g| g.memory_id.is_none()) {
            if !whole(&parts, &g.scope) {
                parts.push((g.scope.clone(), None));
            }
        }
        for g in &self.grants {
            let Some(id) = g.memory_id else { continue };
            if whole(&parts, &g.scope) {
                continue;
            }
            match parts
                .iter_mut()
                .find(|(p, only)| only.is_some() && *p == g.scope)
            {
                Some((_, Some(ids))) => {
                    ids.insert(id);
                }
                _ => parts.push((g.scope.clone(), Some(HashSet::from([id])))),
            }
        }
        parts
    }
}

/// Who reads: a scope and what is shared with its user or agent.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    /// The reader's own scope.
    pub scope: &'a Scope,
    /// Grants in force for it.
    pub visible: Visible,
}

impl Reader<'_> {
    /// Whether the reader may see `m`: its own, or shared with it.
    pub fn sees(&self, m: &Memory) -> bool {
        self.scope.matches(&m.scope) || self.visible.grant_for(m).is_some()
    }
}

/// Candidates gathered from several parts: best first, each memory once
/// (its best score), at most `limit`.
pub fn merge_candidates(candidates: &mut Vec<Candidate>, limit: usize) {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    let mut seen = HashSet::new();
    candidates.retain(|c| seen.insert(c.id));
    candidates.truncate(limit);
}

impl Hippo {
    /// Shares a memory (all its versions) or a scope with one user or agent,
    /// read only. `owner`: the caller's own scope, which must hold what is
    /// shared (`None`: a tenant-wide caller).
    pub fn grant(&self, new: NewGrant, owner: Option<&Scope>) -> Result<Grant> {
        new.grantee.validate()?;
        let now = self.now();
        if new.expires_at.is_some_and(|e| e <= now) {
            return Err(Error::invalid("expires_at must be in the future"));
        }
        let scope = match (new.memory_id, new.scope) {
            (Some(id), None) => self.get(id, owner)?.scope,
            (None, Some(scope)) => {
                scope.validate()?;
                if owner.is_some_and(|o| !o.matches(&scope)) {
                    return Err(Error::invalid("a scope can only be shared by its owner"));
                }
                scope
            }
            _ => {
                return Err(Error::invalid(
                    "give exactly one of memory_id or scope to share",
                ))
            }
        };
        let grant = Grant {
            id: Uuid::now_v7(),
            memory_id: new.memory_id,
            scope,
            grantee: new.grantee,
            created_at: now,
            created_by: crate::audit::current_actor(),
            expires_at: new.expires_at,
            revoked_at: None,
        };
        self.store().put_grant(&grant)?;
        Ok(grant)
    }

    /// Revokes grant `id` (at once: reads check grants as they run).
    /// `owner`: the caller's scope, which must hold what the grant shares.
    pub fn revoke_grant(&self, id: Uuid, owner: Option<&Scope>) -> Result<Grant> {
        let found = self.store().grants(&GrantQuery {
            id: Some(id),
            include_revoked: true,
            limit: 1,
            ..Default::default()
        })?;
        match found.first() {
            Some(g) if owner.is_none_or(|o| o.matches(&g.scope)) => {}
            _ => return Err(Error::not_found(format!("grant {id} not found"))),
        }
        self.store()
            .revoke_grant(id, self.now())?
            .ok_or_else(|| Error::not_found(format!("grant {id} not found")))
    }

    /// Grants of what lies in `of` and/or to the reader `to`, oldest first;
    /// revoked ones only when asked.
    pub fn grants(
        &self,
        of: Option<&Scope>,
        to: Option<&Scope>,
        include_revoked: bool,
    ) -> Result<Vec<Grant>> {
        for s in of.iter().chain(to.iter()) {
            s.validate()?;
        }
        self.store().grants(&GrantQuery {
            id: None,
            to,
            of,
            include_revoked,
            limit: 10_000,
        })
    }

    /// The grants in force now for a reader acting as `reader`'s user or
    /// agent (at most [`MAX_GRANTS_PER_READER`]).
    pub fn visible(&self, reader: &Scope) -> Result<Visible> {
        let now = self.now();
        let mut grants = self.store().grants(&GrantQuery {
            to: Some(reader),
            limit: MAX_GRANTS_PER_READER * 2,
            ..Default::default()
        })?;
        grants.retain(|g| g.in_force(now));
        grants.truncate(MAX_GRANTS_PER_READER);
        Ok(Visible { grants })
    }

    /// The memory `id` for a reader: with a scope, only if it lies in that
    /// scope or a grant in force shares it with the scope's user or agent.
    /// (Changes use [`Hippo::get`], which ignores grants.)
    ///
    /// What it returns is the truth now: the memory's state that holds now
    /// (a change scheduled for later shows from its `valid_from`, or with
    /// `as_of` in search and listings), with the status it has now (an
    /// expired memory is archived).
    pub fn read(&self, id: MemoryId, reader: Option<&Scope>) -> Result<Memory> {
        let m = self.get(id, None)?;
        let m = match reader {
            None => m,
            Some(r) if r.matches(&m.scope) => m,
            Some(r) if self.visible(r)?.grant_for(&m).is_some() => m,
            Some(_) => return Err(Error::not_found(format!("memory {id} not found"))),
        };
        self.as_it_holds_now(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(scope: Scope) -> Memory {
        let mut m: Memory = serde_json::from_value(serde_json::json!({
            "id": MemoryId::now_v7(), "kind": "message", "content": "x",
            "recorded_at": "2024-01-01T00:00:00Z", "updated_at": "2024-01-01T00:00:00Z",
            "content_hash": "", "status": "active",
        }))
        .unwrap();
        m.scope = scope;
        m
    }

    fn grant(memory_id: Option<MemoryId>, scope: Scope) -> Grant {
        Grant {
            id: Uuid::now_v7(),
            memory_id,
            scope,
            grantee: Grantee {
                user_id: Some("bob".into()),
                agent_id: None,
            },
            created_at: Utc::now(),
            created_by: "local".into(),
            expires_at: None,
            revoked_at: None,
        }
    }

    #[test]
    fn a_grantee_is_exactly_one_principal() {
        assert!(Grantee::default().validate().is_err());
        let both = Grantee {
            user_id: Some("a".into()),
            agent_id: Some("b".into()),
        };
        assert!(both.validate().is_err());
        let g = Grantee {
            user_id: Some("bob".into()),
            agent_id: None,
        };
        assert!(g.validate().is_ok());
        assert!(g.is(&Scope::user("bob")));
        assert!(!g.is(&Scope::user("alice")));
        assert!(!g.is(&Scope {
            agent_id: Some("bob".into()),
            ..Default::default()
        }));
    }

    #[test]
    fn scope_grants_share_what_the_scope_matches_and_memory_grants_one_memory() {
        let alice = memory(Scope::user("alice"));
        let mut alice_s1 = memory(Scope::user("alice"));
        alice_s1.scope.session_id = Some("s1".into());
        let carol = memory(Scope::user("carol"));
        let all_alice = grant(None, Scope::user("alice"));
        assert!(all_alice.shares(&alice) && all_alice.shares(&alice_s1));
        assert!(!all_alice.shares(&carol));
        let mut session = Scope::user("alice");
        session.session_id = Some("s1".into());
        let one_session = grant(None, session);
        assert!(one_session.shares(&alice_s1) && !one_session.shares(&alice));
        let one = grant(Some(alice.id), alice.scope.clone());
        assert!(one.shares(&alice) && !one.shares(&alice_s1));
        let mut version = memory(Scope::user("alice"));
        version.version_of = Some(alice.id);
        assert!(one.shares(&version));
    }

    #[test]
    fn revoked_or_expired_grants_are_not_in_force() {
        let now = Utc::now();
        let mut g = grant(None, Scope::user("alice"));
        assert!(g.in_force(now));
        g.expires_at = Some(now);
        assert!(!g.in_force(now));
        g.expires_at = Some(now + chrono::Duration::seconds(1));
        assert!(g.in_force(now));
        g.revoked_at = Some(now);
        assert!(!g.in_force(now));
    }
}
