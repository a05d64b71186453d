//! The `grace` binary: parse flags, set up logging, run the node (or the
//! program a subcommand names).

use clap::Parser;
use grace::cli::{Cli, Command};
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match &cli.node.policies.log_level {
        Some(level) => EnvFilter::try_new(level),
        None => EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new("info")),
    };
    let filter = match filter {
        Ok(filter) => filter,
        Err(err) => {
            eprintln!("grace: invalid log level: {err}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(|| grace::diagnostics::BufferedStderr)
        .with_ansi(std::io::stderr().is_terminal())
        // A closed stderr must not take the node down: drop the log line.
        .log_internal_errors(false)
        .with_env_filter(filter)
        .init();
    let status = match cli.command {
        None => grace::runtime::run(cli.node),
        Some(Command::DemoUpstream(args)) => grace::demo::upstream::run(args),
    };
    grace::diagnostics::flush();
    status
}
