//! Hippo's server as a library: everything `hippo serve` is made of, so that
//! the binary (`crates/hippo-cli`), the Python package (in-process, see
//! `crates/hippo-py`) and the fuzz targets share one implementation. It
//! carries the web dependencies (axum, rmcp, utoipa, prometheus-client) that
//! the engine does not need.
//!
//! - [`api`]: the REST API's request and response types.
//! - [`server`]: the REST router (guards, authentication, limits, handlers),
//!   with [`mcp`] mounted at `/mcp` and [`mem0`] at `/mem0`;
//!   [`call_order`]: MCP calls of one session in arrival order.
//! - [`auth`]: tenants and API keys (the control database); [`tenants`]:
//!   one engine per tenant; [`limits`]: rate limits; [`metrics`]: Prometheus.
//! - [`idempotency`]: `Idempotency-Key` on write routes.
//! - [`io`]: import (JSONL, LoCoMo, Mem0 exports, chat logs) and lossless export.
//! - [`migrate`]: `hippo migrate`, a whole deployment from SQLite files to
//!   Postgres or back.
//! - [`settings`] and [`config`]: how the binary and the tools open engines
//!   (command line over config file over defaults).
//! - [`serving`]: running `hippo serve` and `hippo mcp` (listen checks,
//!   workers, maintenance, graceful shutdown).
//! - [`fuzzing`]: entry points for the fuzz targets in `fuzz/`.
//! - [`ui`]: the memory inspector's page at `/ui/`, a client of the REST API.
//! - [`admin`]: a tenant admin's routes: the audit log, API keys, store statistics.

pub mod admin;
pub mod api;
/// The Postgres store (re-exported for the tools that measure it).
pub use hippo_postgres;
pub mod auth;
pub mod call_order;
pub mod config;
pub mod fuzzing;
pub mod idempotency;
pub mod io;
pub mod limits;
pub mod mcp;
pub mod mem0;
pub mod metrics;
pub mod migrate;
pub mod server;
pub mod serving;
pub mod settings;
pub mod tenants;
pub mod ui;

#[cfg(test)]
mod isolation_props;
