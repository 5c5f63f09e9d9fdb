//! Integration tests of the hippo library (one binary, several modules).

mod common;
mod consolidate;
mod e5;
mod engine;
mod forgetting;
mod golden;
mod injection;
mod isolation;
mod lifecycle;
mod minilm;
