//! `ringway`: parse the command line, set up logging, load the config, run.

use std::io::IsTerminal;
use std::process::ExitCode;

#[cfg(not(feature = "system-allocator"))]
use mimalloc::MiMalloc;
use tracing_subscriber::EnvFilter;

use ringway::Server;
use ringway::cli::{Cli, Command, LogFormat};

#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() -> ExitCode {
    ringway::process::disable_transparent_huge_pages();
    // A panic is a bug, and one in a worker thread would leave a node that accepts
    // connections it never serves: print it (with the backtrace RUST_BACKTRACE asks
    // for) and end the process, for its supervisor to restart.
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        eprintln!(
            "ringway: this is a bug (please report it); the node stops so that its supervisor restarts it"
        );
        std::process::abort();
    }));
    let cli = Cli::parse_args();
    // `check` prints a report: only warnings interrupt it.
    let quiet = matches!(cli.command, Some(Command::Check(_)));
    init_logging(cli.log_format, if quiet { "warn" } else { "info" });
    // Errors end here as one line with their cause and fix: never a backtrace, even
    // with RUST_BACKTRACE set (that is for panics, which are bugs).
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Logs go to stderr: text (coloured only on a terminal, and never with `NO_COLOR`
/// set) or one JSON object per line for log shippers. `RINGWAY_LOG` sets the level
/// (`default` without it); one it cannot read is said, not ignored.
fn init_logging(format: LogFormat, default: &str) {
    let mut unreadable = None;
    let filter = match std::env::var("RINGWAY_LOG") {
        Ok(v) if !v.trim().is_empty() => EnvFilter::builder().parse(&v).unwrap_or_else(|e| {
            unreadable = Some(format!(
                "RINGWAY_LOG={v:?} is not a log filter ({e}); logging at {default}. Give a level (error, warn, info, debug, trace) or directives such as ringway=debug"
            ));
            EnvFilter::new(default)
        }),
        _ => EnvFilter::new(default),
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match format {
        LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.with_ansi(ansi).init();
        }
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    if let Some(warning) = unreadable {
        tracing::warn!("{warning}");
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let args = match cli.command {
        Some(Command::Serve(args)) => args,
        Some(Command::Bench(args)) => return ringway::bench::run(args),
        Some(Command::Check(mut args)) => {
            // `ringway --config FILE check` means that file too.
            if args.serve.config.is_none() {
                args.serve.config = cli.serve.config.clone();
            }
            return check(args);
        }
        Some(Command::Token(args)) => {
            let (token, warning) = args.mint().map_err(anyhow::Error::msg)?;
            if let Some(w) = warning {
                eprintln!("{w}");
            }
            println!("{token}");
            return Ok(());
        }
        None => cli.serve,
    };
    let config = args.load()?;
    let terminate = ringway::process::block_terminate()?;
    let server = Server::start(config)?;
    let stopper = server.stopper();
    terminate.on_signal(move || stopper.drain())?;
    server.wait();
    Ok(())
}

/// `ringway check`: validate the config, judge the host, exit 1 when it does not fit.
fn check(args: ringway::cli::CheckArgs) -> anyhow::Result<()> {
    use ringway::check::{Host, Status, evaluate, memory_needed, node_ports, production};
    let config = args.serve.load()?;
    println!("config: valid");
    println!("production checklist:");
    for f in production(&config) {
        println!("{f}");
    }
    let target = args
        .connections
        .unwrap_or(match config.limits.max_connections {
            0 => 100_000,
            n => n as u64,
        });
    let host = Host::read();
    let findings = evaluate(
        &host,
        target,
        &node_ports(&config),
        config.fd_reserve() as u64,
    );
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
