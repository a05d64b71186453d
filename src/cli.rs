//! The command line: the bare binary is the Maelstrom node (graders run it
//! with no arguments but its flags); subcommands start the other programs
//! grace ships.

use crate::config::Config;
use clap::{Parser, Subcommand};

/// grace keeps an API answering when the services behind it fail.
///
/// With no subcommand it is a Maelstrom node: it reads JSON messages on
/// stdin (one per line, or pretty-printed), writes one JSON reply line per
/// request on stdout, logs to stderr, and exits 0 at the end of input or on
/// SIGTERM/SIGINT.
#[derive(Debug, Clone, Parser)]
#[command(version, about, long_about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// The Maelstrom node's flags.
    #[command(flatten)]
    pub node: Config,
}

/// The programs besides the Maelstrom node.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the HTTP gateway: in front of the services a configuration file
    /// names (or the built-in demo services), answering when they fail.
    Serve(Box<crate::gateway::cli::ServeArgs>),
    /// Serve the demo services' data over real HTTP, with faults on demand
    /// (for trying the gateway, its tests and its benches).
    DemoUpstream(crate::demo::upstream::Args),
}
