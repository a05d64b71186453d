//! The `grace` binary: parse flags, set up logging, run the Maelstrom node
//! (or the program a subcommand names).

use clap::Parser;
use grace::cli::{Cli, Command};
use std::io::IsTerminal;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_level = match &cli.command {
        None => cli.node.policies.log_level.as_deref(),
        Some(Command::Serve(args)) => args.policies.log_level.as_deref(),
        Some(Command::DemoUpstream(args)) => args.log_level.as_deref(),
    };
    let filter = match log_level {
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
    let logger = tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        // A closed stderr must not take grace down: drop the log line.
        .log_internal_errors(false)
        .with_env_filter(filter);
    match cli.command {
        None => {
            // The node writes its log lines in blocks with its replies.
            logger
                .with_writer(|| grace::diagnostics::BufferedStderr)
                .init();
            let status = grace::runtime::run(cli.node);
            grace::diagnostics::flush();
            status
        }
        Some(Command::Serve(args)) => {
            logger.with_writer(std::io::stderr).init();
            grace::gateway::run(*args)
        }
        Some(Command::DemoUpstream(args)) => {
            logger.with_writer(std::io::stderr).init();
            grace::demo::upstream::run(args)
        }
    }
}
