//! grace: a node that keeps an API answering when the services behind it fail.
//!
//! The crate is a sans-IO core ([`node::Node`]) with one module per concept,
//! and a thin runtime ([`runtime`]) that does the I/O:
//!
//! - [`protocol`]: the Maelstrom wire format (framing, envelopes, error codes);
//! - [`handlers`]: one module per message type;
//! - [`breaker`]: a circuit breaker per downstream service;
//! - [`cache`]: the fallback cache of last good copies;
//! - [`load_mode`]: load modes and feature kill switches;
//! - [`queue`]: the durable request queue and its journal;
//! - [`backend`]: the simulated downstream services;
//! - [`diagnostics`]: log lines on stderr, written in blocks.

pub mod backend;
pub mod breaker;
pub mod cache;
pub mod cli;
pub mod config;
pub mod core;
pub mod demo;
pub mod diagnostics;
pub mod gateway;
pub mod handlers;
pub mod load_mode;
// pub mod maelstrom; (being built)
pub mod node;
pub mod planted_bug;
pub mod protocol;
pub mod queue;
pub mod runtime;
#[cfg(test)]
mod simulation;
