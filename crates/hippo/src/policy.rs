//! Per-kind policies and the two scores they drive: a memory's **strength**
//! (forgetting and reinforcement) and a write's **admission score**. Plain
//! functions of a memory's fields and the clock, so every decision can be
//! recomputed and explained.
//!
//! Strength follows the Ebbinghaus forgetting curve as MemoryBank
//! (Zhong et al., 2023) uses it: retention halves every `stability` days
//! since Hippo learnt the memory or it was last reinforced, and each
//! reinforcement (a client reporting it `used` or `helpful`) makes it last
//! longer. Admission follows A-MAC's factors (utility by type, novelty,
//! confidence), multiplied so that any factor near zero keeps a write out.
//! Neither looks at the event time: what happened long ago is not weaker,
//! nor less worth keeping, for having happened long ago (an imported history
//! would otherwise fade as it arrives).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{Actor, Memory, MemoryKind, Scope, Usage};

/// How one kind of memory is admitted, ranked and forgotten.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KindPolicy {
    /// Days for strength to halve without reinforcement; `None`: does not
    /// decay (the verbatim record of what was said or written is kept
    /// whole).
    pub half_life_days: Option<f32>,
    /// Archived by maintenance when strength falls below this; `None`:
    /// never archived for weakness.
    pub archive_below: Option<f32>,
    /// Prior usefulness of this kind, 0..=1 (the admission utility factor
    /// before the information content is counted).
    pub utility: f32,
    /// Writes scoring below this are not admitted (0 admits everything).
    pub admit_at_least: f32,
    /// A new memory whose vector has at least this cosine with a current
    /// memory of the same kind and owner, and that states the same
    /// particulars (see [`crate::text::same_particulars`]), is merged into
    /// it as a near duplicate; `None`: only exact duplicates merge.
    pub merge_above: Option<f32>,
    /// Multiplies the fused relevance of this kind in search.
    pub retrieval_weight: f32,
}

impl Default for KindPolicy {
    fn default() -> Self {
        KindPolicy {
            half_life_days: None,
            archive_below: None,
            utility: 0.7,
            admit_at_least: 0.0,
            merge_above: None,
            retrieval_weight: 1.0,
        }
    }
}

/// The policy of every kind. Defaults: conversation turns, documents and
/// their chunks are the record and are never decayed, merged by similarity
/// or refused; facts and procedures (distilled, and often restated) merge
/// near duplicates, need some content to be admitted, and fade over years
/// unless used; profiles and summaries are rebuilt rather than forgotten.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policies {
    /// Conversation turns.
    pub message: KindPolicy,
    /// Whole documents.
    pub document: KindPolicy,
    /// Chunks of long inputs.
    pub chunk: KindPolicy,
    /// Semantic facts.
    pub fact: KindPolicy,
    /// Summaries and digests.
    pub summary: KindPolicy,
    /// Profiles.
    pub profile: KindPolicy,
    /// Procedures and lessons.
    pub procedure: KindPolicy,
}

impl Default for Policies {
    fn default() -> Self {
        let record = KindPolicy {
            utility: 0.6,
            ..KindPolicy::default()
        };
        let distilled = |half_life_days: f32| KindPolicy {
            half_life_days: Some(half_life_days),
            archive_below: Some(0.05),
            utility: 0.8,
            admit_at_least: 0.3,
            merge_above: Some(0.95),
            retrieval_weight: 1.0,
        };
        Policies {
            message: record,
            document: KindPolicy {
                utility: 0.7,
                ..record
            },
            chunk: KindPolicy {
                utility: 0.7,
                ..record
            },
            fact: distilled(365.0),
            // Digests compete with the turns they quote: weighted down, they
            // surface only when clearly the best match (a broad question).
            summary: KindPolicy {
                utility: 0.7,
                retrieval_weight: 0.6,
                ..KindPolicy::default()
            },
            profile: KindPolicy {
                utility: 0.9,
                ..KindPolicy::default()
            },
            procedure: distilled(730.0),
        }
    }
}

impl Policies {
    /// The policy of `kind`.
    pub fn of(&self, kind: MemoryKind) -> &KindPolicy {
        match kind {
            MemoryKind::Message => &self.message,
            MemoryKind::Document => &self.document,
            MemoryKind::Chunk => &self.chunk,
            MemoryKind::Fact => &self.fact,
            MemoryKind::Summary => &self.summary,
            MemoryKind::Profile => &self.profile,
            MemoryKind::Procedure => &self.procedure,
        }
    }

    /// Checks every value is in range.
    pub fn validate(&self) -> crate::Result<()> {
        for kind in MemoryKind::ALL {
            let p = self.of(kind);
            let unit = |v: f32| (0.0..=1.0).contains(&v);
            let ok = p.half_life_days.is_none_or(|d| d > 0.0 && d.is_finite())
                && p.archive_below.is_none_or(unit)
                && unit(p.utility)
                && unit(p.admit_at_least)
                && p.merge_above.is_none_or(|c| c > 0.0 && c <= 1.0)
                && p.retrieval_weight >= 0.0
                && p.retrieval_weight.is_finite();
            if !ok {
                return Err(crate::Error::invalid(format!(
                    "policy for {}: half_life_days must be > 0, retrieval_weight >= 0, the rest within 0..=1",
                    kind.as_str()
                )));
            }
        }
        Ok(())
    }
}

/// A memory's strength now, with what it was computed from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Strength {
    /// `retention × 0.5^wrong`, between 0 and 1.
    pub value: f32,
    /// `0.5^(age_days / stability_days)`; 1 for kinds that do not decay.
    pub retention: f32,
    /// Days since it was learnt or last reinforced, whichever is later.
    pub age_days: f32,
    /// The kind's half-life times `1 + used + 2 × helpful`; `None` when the
    /// kind does not decay.
    pub stability_days: Option<f32>,
}

/// Reports of `wrong` beyond this count no further (the value is already
/// below 1/1000).
const MAX_WRONG: u32 = 10;

/// The strength of a memory with `usage`, learnt at `since`, at `now`.
pub fn strength(
    policy: &KindPolicy,
    usage: &Usage,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Strength {
    let from = usage.reinforced_at.map_or(since, |r| r.max(since));
    let age_days = ((now - from).num_milliseconds().max(0) as f64 / 86_400_000.0) as f32;
    let stability_days = policy
        .half_life_days
        .map(|h| h * (1.0 + usage.used as f32 + 2.0 * usage.helpful as f32));
    let retention = stability_days.map_or(1.0, |s| 0.5f32.powf(age_days / s));
    Strength {
        value: retention * 0.5f32.powi(usage.wrong.min(MAX_WRONG) as i32),
        retention,
        age_days,
        stability_days,
    }
}

/// [`strength`] of memory `m`, as search ranks it: aged from when Hippo
/// learnt it (`recorded_at`) or was last reinforced, never from its event
/// time — a fact about 2019 imported today is as fresh as one said today.
pub fn strength_of(policies: &Policies, m: &Memory, now: DateTime<Utc>) -> Strength {
    strength(policies.of(m.kind), &m.usage, m.recorded_at, now)
}

/// The ranking bonus of reinforcement: `1 - 0.5^(used / 2 + helpful)`,
/// between 0 (never reinforced) and 1.
pub fn reinforcement(usage: &Usage) -> f32 {
    1.0 - 0.5f32.powf(usage.used.min(40) as f32 / 2.0 + usage.helpful.min(20) as f32)
}

/// The factors of an admission decision, each between 0 and 1, and their
/// product.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Admission {
    /// `utility × novelty' × confidence` where `novelty' = 0.5 + 0.5 ×
    /// novelty`: novelty lowers a score, it cannot zero it.
    pub score: f32,
    /// The kind's prior times the information content
    /// (`min(1, content words / 2)`).
    pub utility: f32,
    /// `1 -` the best cosine with a current memory of the same kind and
    /// scope; 1 when not compared.
    pub novelty: f32,
    /// As supplied by the writer (default 1).
    pub confidence: f32,
    /// The kind's threshold.
    pub threshold: f32,
    /// Whether the score reaches the threshold.
    pub admitted: bool,
}

/// A write that was not admitted, kept so it can be reviewed (and written
/// again with `force`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rejection {
    /// Position in the rejection record (0 until stored).
    pub seq: i64,
    /// Whose it would have been.
    #[serde(flatten)]
    pub scope: Scope,
    /// When it was refused.
    pub at: DateTime<Utc>,
    /// The write request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<uuid::Uuid>,
    /// The kind it would have had.
    pub kind: MemoryKind,
    /// Its text.
    pub content: String,
    /// Who said it.
    #[serde(default)]
    pub actor: Actor,
    /// When it happened, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<DateTime<Utc>>,
    /// Why: the factors and the threshold.
    pub admission: Admission,
}

/// The admission decision for a write of `kind` with `content`.
/// `best_cosine`: its highest cosine with current memories of its kind and
/// scope, if compared.
pub fn admission(
    policy: &KindPolicy,
    content: &str,
    best_cosine: Option<f32>,
    confidence: f32,
) -> Admission {
    let words = crate::text::content_word_count(content);
    let utility = policy.utility * (words as f32 / 2.0).min(1.0);
    let novelty = best_cosine.map_or(1.0, |c| (1.0 - c).clamp(0.0, 1.0));
    let confidence = confidence.clamp(0.0, 1.0);
    let score = utility * (0.5 + 0.5 * novelty) * confidence;
    Admission {
        score,
        utility,
        novelty,
        confidence,
        threshold: policy.admit_at_least,
        admitted: score >= policy.admit_at_least,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use proptest::prelude::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    #[test]
    fn a_fact_halves_per_half_life_and_reinforcement_slows_it() {
        let p = Policies::default().fact;
        let year = t0() + Duration::days(365);
        let fresh = strength(&p, &Usage::default(), t0(), year);
        assert!((fresh.value - 0.5).abs() < 1e-3, "{fresh:?}");
        let used = Usage {
            used: 1,
            ..Usage::default()
        };
        let s = strength(&p, &used, t0(), year);
        assert!((s.value - 0.5f32.powf(0.5)).abs() < 1e-3, "{s:?}");
        // Reinforcement restarts the clock.
        let recent = Usage {
            used: 1,
            reinforced_at: Some(year - Duration::days(1)),
            ..Usage::default()
        };
        assert!(strength(&p, &recent, t0(), year).value > 0.99);
    }

    #[test]
    fn the_record_does_not_decay_but_wrong_reports_weaken_anything() {
        let p = Policies::default().message;
        let later = t0() + Duration::days(10_000);
        assert_eq!(strength(&p, &Usage::default(), t0(), later).value, 1.0);
        let wrong = Usage {
            wrong: 2,
            ..Usage::default()
        };
        assert_eq!(strength(&p, &wrong, t0(), later).value, 0.25);
    }

    #[test]
    fn admission_refuses_contentless_facts_but_keeps_every_message() {
        let ps = Policies::default();
        let fact = admission(&ps.fact, "ok thanks!", None, 1.0);
        assert_eq!(fact.utility, 0.0);
        assert!(!fact.admitted, "{fact:?}");
        let msg = admission(&ps.message, "ok thanks!", None, 1.0);
        assert!(msg.admitted);
        let good = admission(&ps.fact, "Ana lives in Denver", None, 1.0);
        assert!(good.admitted && good.score > 0.7, "{good:?}");
        let unsure = admission(&ps.fact, "Ana lives in Denver", None, 0.2);
        assert!(!unsure.admitted, "{unsure:?}");
        let known = admission(&ps.fact, "Ana lives in Denver", Some(0.9), 1.0);
        assert!(known.score < good.score && known.admitted, "{known:?}");
    }

    #[test]
    fn out_of_range_policies_are_refused() {
        let mut ps = Policies::default();
        assert!(ps.validate().is_ok());
        ps.fact.utility = 1.5;
        assert!(ps.validate().is_err());
        let mut ps = Policies::default();
        ps.procedure.half_life_days = Some(0.0);
        assert!(ps.validate().is_err());
    }

    proptest! {
        #[test]
        fn strength_is_a_fraction_that_falls_with_age_and_wrong_reports(
            days in 0u32..20_000, more in 1u32..5_000, used in 0u32..50, helpful in 0u32..50,
            wrong in 0u32..30,
        ) {
            let p = Policies::default().fact;
            let u = Usage { used, helpful, wrong, reinforced_at: None };
            let a = strength(&p, &u, t0(), t0() + Duration::days(days as i64));
            let b = strength(&p, &u, t0(), t0() + Duration::days((days + more) as i64));
            prop_assert!((0.0..=1.0).contains(&a.value));
            prop_assert!(b.value <= a.value);
            let worse = Usage { wrong: wrong + 1, ..u };
            let c = strength(&p, &worse, t0(), t0() + Duration::days(days as i64));
            prop_assert!(c.value <= a.value);
            let r = reinforcement(&u);
            prop_assert!((0.0..=1.0).contains(&r));
        }

        #[test]
        fn admission_scores_are_fractions(
            text in ".{0,80}", cos in proptest::option::of(-1.0f32..=1.0), conf in -1.0f32..2.0,
        ) {
            for kind in MemoryKind::ALL {
                let p = Policies::default();
                let a = admission(p.of(kind), &text, cos, conf);
                prop_assert!((0.0..=1.0).contains(&a.score), "{a:?}");
                prop_assert_eq!(a.admitted, a.score >= a.threshold);
            }
        }
    }
}
