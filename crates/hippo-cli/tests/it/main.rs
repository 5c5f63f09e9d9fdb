//! End-to-end tests of the `hippo` binary: the REST API over a real socket,
//! the CLI commands, and crash durability under `kill -9`.

mod api;
mod cli;
mod common;
mod crash;
