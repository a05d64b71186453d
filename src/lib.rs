//! grace: keeps an API answering when the services behind it fail.
//!
//! One sans-IO core, two front doors, thin runtimes at the edges:
//!
//! - [`core`]: what grace *does*, with no I/O and no clock: a circuit
//!   breaker per service, the fallback cache, request coalescing, load modes
//!   and kill switches, and the durable write queue with its journal. It
//!   takes requests, call results and the time; it gives calls to make,
//!   answers, and the next deadline.
//! - [`maelstrom`]: front door 1, the Maelstrom node: JSON messages on stdin,
//!   one reply line each on stdout ([`protocol`] is its wire format,
//!   [`runtime`] its stdin/stdout loop).
//! - [`gateway`]: front door 2, `grace serve`: an HTTP gateway in front of
//!   real HTTP services.
//! - [`demo`]: the built-in demo services, answered in-process (for the
//!   node) or over HTTP (`grace demo-upstream`).
//! - [`cli`], [`config`]: the command line; [`diagnostics`]: log lines on
//!   stderr, written in blocks.

pub mod cli;
pub mod config;
pub mod core;
pub mod demo;
pub mod diagnostics;
pub mod gateway;
pub mod maelstrom;
pub mod planted_bug;
pub mod protocol;
pub mod runtime;
#[cfg(test)]
mod simulation;
