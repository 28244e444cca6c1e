//! `ringway`: parse the command line, load the config, run.

use clap::Parser;
#[cfg(not(feature = "system-allocator"))]
use mimalloc::MiMalloc;
use tracing_subscriber::EnvFilter;

use ringway::Server;
use ringway::cli::{Cli, Command};

#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> anyhow::Result<()> {
    ringway::runtime::probe::disable_transparent_huge_pages();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_env("RINGWAY_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        Some(Command::Bench(args)) => return ringway::bench::run(args),
        None => cli.serve,
    };
    let config = args.load()?;
    let terminate = ringway::runtime::signals::block_terminate()?;
    let server = Server::start(config)?;
    let stopper = server.stopper();
    terminate.on_signal(move || stopper.drain())?;
    server.wait();
    Ok(())
}
