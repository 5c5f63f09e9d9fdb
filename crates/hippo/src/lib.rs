//! Hippo: a long-term memory engine for LLM agents.
//!
//! Write conversation turns and documents; they are stored durably in one
//! SQLite file, embedded with a local model, and indexed for keyword (BM25)
//! and vector search. Read them back with hybrid search that fuses both
//! channels. No LLM is needed for any of this.
//!
//! ```no_run
//! use std::sync::Arc;
//! use hippo::{AddItem, Hippo, MiniLmEmbedder, Scope, SearchRequest, SqliteStore, SqliteStoreOptions, Embedder};
//!
//! # fn main() -> hippo::Result<()> {
//! let embedder = Arc::new(MiniLmEmbedder::from_dir("models/all-MiniLM-L6-v2".as_ref())?);
//! let store = SqliteStore::open(SqliteStoreOptions::new("memory.db", embedder.model_id(), embedder.dimension()))?;
//! let hippo = Hippo::builder().store(Arc::new(store)).embedder(embedder).build()?;
//! hippo.add(vec![AddItem::message(Scope::user("ana"), "user", Some("Ana"), "I adopted a cat named Miso")])?;
//! let found = hippo.search(&SearchRequest::new(Scope::user("ana"), "What is my pet called?"))?;
//! println!("{}", found.hits[0].memory.content);
//! # Ok(()) }
//! ```

pub mod audit;
pub mod chunk;
pub mod clock;
pub mod consolidate;
pub mod embed;
pub mod engine;
pub mod error;
pub mod extract;
pub mod forgetting;
pub mod injection;
pub mod jobs;
pub mod llm;
pub mod model;
pub mod notes;
pub mod pack;
pub mod policy;
pub mod profile;
pub mod prompt;
pub mod relevance;
pub mod retrieve;
pub mod sharing;
pub mod store;
pub mod temporal;
pub mod text;
pub mod trust;

pub use embed::{E5Embedder, Embedder, MiniLmEmbedder, OpenAiEmbedder, OpenAiEmbedderConfig};
pub use engine::{
    AddItem, AddOutcome, Content, Context, Duplicate, Hippo, HippoBuilder, History, Limits,
    MemoryPatch, Message, RetrievalOptions, SearchHit, SearchRequest, SearchResponse,
    SearchTimings, DEFAULT_DIVERSITY, DEFAULT_TOKENS_PER_RESULT, MAX_BUDGET_TOKENS,
    MAX_CONTEXT_TURNS,
};
pub use error::{Error, ErrorKind, Result};
pub use forgetting::MaintenanceReport;
pub use model::{
    Actor, EventKind, Filter, Memory, MemoryEvent, MemoryId, MemoryKind, Provenance, Scope, Signal,
    Status, Usage,
};
pub use policy::{Admission, KindPolicy, Policies, Rejection, Strength};
pub use retrieve::{ChannelScores, FusionWeights};
pub use store::{Order, Source, SqliteStore, SqliteStoreOptions, Store};
