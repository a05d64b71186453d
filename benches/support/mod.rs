//! Code shared by grace's benches, each a binary of its own (`harness =
//! false`) that includes this module with
//! `#[path = "support/mod.rs"] mod support;`.
//!
//! - [`settings`]: the environment knobs (sizes, rounds, seed, grace flags)
//!   and the smoke run under `cargo test --benches`;
//! - [`stream`]: deterministic request streams, written to files;
//! - [`run`]: running a binary on a stream file, timing it and summing up;
//! - [`cpu`]: the CPU time processes spent, from `/proc`.
//!
//! Each bench uses its own part of it, hence the `allow(dead_code)`.

#![allow(dead_code)]

pub mod cpu;
pub mod floor;
pub mod http_load;
pub mod outage_report;
pub mod run;
pub mod servers;
pub mod settings;
pub mod stream;

/// The benches' result: any error ends the bench with its message.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;
