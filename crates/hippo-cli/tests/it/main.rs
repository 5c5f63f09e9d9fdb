//! End-to-end tests of the `hippo` binary: the REST API over a real socket,
//! the CLI commands, crash durability under `kill -9`, and the binary against
//! fakes of its external services.

mod api;
mod cli;
mod common;
mod crash;
mod erasure;
mod external;
mod extract;
mod fakes;
mod faults;
mod governance;
mod portability;
mod postgres;
mod promises;
mod sharing;
mod tenancy;
mod ui;
