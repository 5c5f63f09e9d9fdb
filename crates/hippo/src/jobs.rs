//! Background jobs: work that runs after a write is acknowledged (LLM
//! extraction, consolidation), kept in the store (table `jobs`) so it
//! survives restarts.
//!
//! Invariants: a job is enqueued in the same transaction as the write that
//! asks for it, so an acknowledged write never loses its job; a worker
//! claims the oldest ready job with a lease, and a job whose lease ran out
//! (its worker died) is claimed again; a job records its plan before
//! applying it, and applies it as numbered steps, each written in one
//! transaction with the job's step counter (see [`JobStep`]; the store
//! refuses a step already applied), so a job re-run after `kill -9` applies
//! each step once. Failures are retried with exponential backoff, then the
//! job is marked failed with its error. Erasing a scope deletes its jobs;
//! maintenance prunes finished jobs after a week.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::model::Scope;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting to run (or to be retried after `run_after`).
    Pending,
    /// Claimed by a worker until its lease ends.
    Running,
    /// Finished.
    Done,
    /// Gave up after its attempts; `last_error` says why.
    Failed,
}

impl JobState {
    /// All states, in declaration order.
    pub const ALL: [JobState; 4] = [
        JobState::Pending,
        JobState::Running,
        JobState::Done,
        JobState::Failed,
    ];

    /// The stable lower-case name used in storage and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::Done => "done",
            JobState::Failed => "failed",
        }
    }

    /// Parses a name produced by [`JobState::as_str`].
    pub fn parse(s: &str) -> Result<Self> {
        JobState::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| Error::invalid(format!("unknown job state {s:?}")))
    }
}

/// A job to enqueue.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// What to do, e.g. `extract`.
    pub kind: String,
    /// Whose data it works on (erasing the scope cancels it).
    pub scope: Scope,
    /// Its input (e.g. the ids of the memories to extract from).
    pub payload: Map<String, Value>,
    /// When it was enqueued (and may first run).
    pub at: DateTime<Utc>,
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    /// Queue position (increasing).
    pub id: i64,
    /// What to do.
    pub kind: String,
    /// Whose data.
    #[serde(flatten)]
    pub scope: Scope,
    /// Its input.
    pub payload: Map<String, Value>,
    /// Where it is.
    pub state: JobState,
    /// Runs started so far (the current one included).
    pub attempts: u32,
    /// Not to be run before this.
    pub run_after: DateTime<Utc>,
    /// While running: when the claim lapses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<DateTime<Utc>>,
    /// Steps applied so far (see [`JobStep`]).
    pub step: u32,
    /// What the job decided to do, once decided (kept so a retry applies
    /// the same decisions instead of asking again).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Value>,
    /// The last failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Cost accounting (e.g. LLM calls and tokens), accumulated over runs.
    pub cost: Map<String, Value>,
    /// When enqueued.
    pub created_at: DateTime<Utc>,
    /// When last changed.
    pub updated_at: DateTime<Utc>,
}

/// A change to a claimed job, written atomically.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobUpdate {
    /// New state; `None` keeps it.
    pub state: Option<JobState>,
    /// Record the plan, unless one is recorded already (the first plan
    /// wins, so two runs of one job never mix plans).
    pub plan: Option<Value>,
    /// Record a failure.
    pub error: Option<String>,
    /// Retry not before this (with state pending).
    pub run_after: Option<DateTime<Utc>>,
    /// Replace the cost record.
    pub cost: Option<Map<String, Value>>,
    /// Replace the payload (a finished job whose input named things that
    /// may be erased later drops it).
    pub payload: Option<Map<String, Value>>,
}

/// Marks a write as step `step` (1-based) of job `job`: the store applies
/// the write only if the job's step counter is `step - 1`, and sets it to
/// `step` in the same transaction; otherwise the write fails with
/// `Conflict` and changes nothing (that step was applied by an earlier run).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobStep {
    /// The job.
    pub job: i64,
    /// Its step number, from 1.
    pub step: u32,
}

/// Jobs per state.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobCounts {
    /// Waiting.
    pub pending: u64,
    /// Claimed.
    pub running: u64,
    /// Finished.
    pub done: u64,
    /// Given up.
    pub failed: u64,
}
