//! The library half of the `hippo` binary: everything a server is made of,
//! so that the binary, the Python package (in-process, see `crates/hippo-py`)
//! and the fuzz targets share one implementation.
//!
//! - [`api`]: the REST API's request and response types.
//! - [`server`]: the REST router (authentication, limits, handlers), with
//!   [`mcp`] mounted at `/mcp` and [`mem0`] at `/mem0`.
//! - [`auth`]: tenants and API keys (the control database); [`tenants`]:
//!   one engine per tenant; [`limits`]: rate limits; [`metrics`]: Prometheus.
//! - [`idempotency`]: `Idempotency-Key` on write routes.
//! - [`io`]: import (JSONL, LoCoMo, Mem0 exports, chat logs) and lossless export.
//! - [`fuzzing`]: entry points for the fuzz targets in `fuzz/`.

pub mod api;
pub mod auth;
pub mod call_order;
pub mod fuzzing;
pub mod idempotency;
pub mod io;
pub mod limits;
pub mod mcp;
pub mod mem0;
pub mod metrics;
pub mod server;
pub mod tenants;

#[cfg(test)]
mod isolation_props;
