//! `grace demo-upstream`: the demo data over real HTTP (being built).

/// Flags of `grace demo-upstream`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Address to serve the demo API on.
    #[arg(long, env = "GRACE_DEMO_LISTEN", default_value = "127.0.0.1:9001")]
    pub listen: std::net::SocketAddr,
}

/// Runs the demo upstream until SIGTERM/SIGINT.
pub fn run(args: Args) -> std::process::ExitCode {
    eprintln!("grace demo-upstream: not built yet ({args:?})");
    std::process::ExitCode::FAILURE
}
