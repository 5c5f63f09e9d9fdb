//! Hippo's measuring tools, apart from the product paths: each is a `hippo`
//! subcommand that measures a running server or an engine and prints JSON.
//! Benchmark code changes often, so it is kept out of the Python package and
//! out of product review; it carries `ureq` and `clap` for driving servers.
//!
//! - [`bench`](mod@bench): recall on LoCoMo-format conversations (`hippo bench`).
//! - [`loadtest`]: search and write latency under concurrent clients over
//!   HTTP (`hippo loadtest`); [`soak`]: hours of churn, watching memory;
//!   [`scale`]: a million memories on either store (`hippo scale`).
//! - [`eval_ops`]: the update/delete operations benchmark (`hippo eval-ops`).
//! - [`eval_injection`]: the prompt-injection attack set (`hippo eval-injection`).
//! - [`synth`]: the seeded chat generator the load tools write.

pub mod bench;
pub mod eval_injection;
pub mod eval_ops;
pub mod loadtest;
pub mod scale;
pub mod soak;
pub mod synth;
