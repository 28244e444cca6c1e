//! `ringway`: parse the command line, load the config, run.

use clap::Parser;
use mimalloc::MiMalloc;
use tracing_subscriber::EnvFilter;

use ringway::Server;
use ringway::cli::{Cli, Command};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("RINGWAY_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        None => cli.serve,
    };
    let config = args.load()?;
    let terminate = ringway::runtime::signals::block_terminate()?;
    let server = Server::start(config)?;
    let stopper = server.stopper();
    terminate.on_signal(move || stopper.stop())?;
    server.wait();
    Ok(())
}
