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
        Some(Command::Check(args)) => return check(args),
        Some(Command::Token(args)) => {
            println!("{}", args.mint());
            return Ok(());
        }
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

/// `ringway check`: validate the config, judge the host, exit 1 when it does not fit.
fn check(args: ringway::cli::CheckArgs) -> anyhow::Result<()> {
    use ringway::check::{Host, Status, evaluate, memory_needed, node_ports};
    let config = args.serve.load()?;
    println!("config: valid");
    let target = args
        .connections
        .unwrap_or(match config.limits.max_connections {
            0 => 100_000,
            n => n as u64,
        });
    let host = Host::read();
    let findings = evaluate(&host, target, &node_ports(&config));
    println!("host against {target} connections:");
    for f in &findings {
        println!("{f}");
    }
    if let Some(total) = host.mem_total {
        let per = memory_needed(1) - memory_needed(0);
        let fits = total.saturating_sub(1 << 30) / per;
        println!(
            "memory fits about {fits} connections at {per} bytes each (idle cost x2 headroom)"
        );
    }
    let fails = findings.iter().filter(|f| f.status == Status::Fail).count();
    let warns = findings.iter().filter(|f| f.status == Status::Warn).count();
    if fails > 0 {
        println!(
            "does NOT fit: {fails} failing, {warns} warnings; apply sysctl/ (scripts/apply-sysctl.sh) and the limits above"
        );
        std::process::exit(1);
    }
    println!("fits: {warns} warnings");
    Ok(())
}
