//! The command line: `ringway [serve]` with flags that override the config file.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::config::{Config, ConfigError};

/// ringway: a thread-per-core WebSocket connection engine.
#[derive(Debug, Parser)]
#[command(name = "ringway", version, about, args_override_self = true)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Flags for `serve` when no subcommand is given.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Log format on stderr: `text` (coloured only on a terminal; NO_COLOR turns
    /// colour off) or `json` (one object per line, for log shippers).
    // `hide_env_values`: otherwise clap prints the unset variable as
    // `[env: RINGWAY_LOG_FORMAT=]`, which reads as set to nothing.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "RINGWAY_LOG_FORMAT",
        hide_env_values = true
    )]
    pub log_format: LogFormat,
}

impl Cli {
    /// Parse the process's arguments. The help shows each `serve` flag's built-in
    /// default as [`Config::default`] has it, so defaults are written in one place.
    pub fn parse_args() -> Self {
        let matches = Self::command_with_defaults().get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }

    /// The command line, its help carrying the defaults.
    pub fn command_with_defaults() -> clap::Command {
        let with = |mut cmd: clap::Command| {
            for (id, value) in serve_defaults() {
                cmd = cmd.mut_arg(id, |arg| {
                    let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                    arg.help(format!("{help} [default: {value}]"))
                });
            }
            cmd
        };
        with(Self::command())
            .mut_subcommand("serve", with)
            .mut_subcommand("check", with)
    }
}

/// The `serve` flags whose default is a value of [`Config::default`], with it.
fn serve_defaults() -> [(&'static str, String); 9] {
    let c = Config::default();
    [
        ("listen", c.listen.to_string()),
        ("api_listen", c.api_listen.to_string()),
        ("node_id", c.node_id),
        ("cluster", c.mesh.cluster),
        ("max_message_size", c.limits.max_message_size.to_string()),
        ("max_frame_size", c.limits.max_frame_size.to_string()),
        ("rate_limit", c.limits.messages_per_second.to_string()),
        ("send_buffer", c.limits.send_buffer_bytes.to_string()),
        (
            "drain_window",
            (c.drain.window_ms as f64 / 1000.0).to_string(),
        ),
    ]
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the
    /// event's fields.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a node (the default).
    Serve(ServeArgs),
    /// Load-generate against a node (or a peer server) and report.
    Bench(crate::bench::BenchArgs),
    /// Validate the configuration and check that this host fits the connection
    /// target; exits non-zero when it does not.
    Check(CheckArgs),
    /// Mint an HS256 client token (for testing and examples); prints it.
    Token(TokenArgs),
}

/// `ringway token` arguments.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The HS256 secret (the node's auth.token_secret).
    #[arg(long, env = "RINGWAY_TOKEN_SECRET", hide_env_values = true)]
    pub secret: String,
    /// The user id (`sub`).
    #[arg(long)]
    pub sub: String,
    /// Lifetime: seconds, or with a unit: 90s, 15m, 1h, 7d.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: u64,
    /// Room patterns the user may subscribe and publish to (repeatable; `chat:*`).
    #[arg(long = "rooms", value_name = "PATTERN")]
    pub rooms: Vec<String>,
    /// Room patterns the user may only subscribe to (repeatable).
    #[arg(long = "sub-rooms", value_name = "PATTERN")]
    pub sub_rooms: Vec<String>,
}

impl TokenArgs {
    /// The token these arguments describe, if a node could accept it; else what to
    /// change. A lifetime over the default `auth.max_token_ttl_s` is allowed (a
    /// node may be configured for it) but comes back as a warning.
    pub fn mint(&self) -> Result<(String, Option<String>), String> {
        if self.secret.len() < 32 {
            return Err(format!(
                "--secret is {} bytes; nodes refuse HS256 secrets under 32 bytes: give the node's auth.token_secret",
                self.secret.len()
            ));
        }
        if !crate::protocol::valid_user(&self.sub) {
            return Err(format!(
                "--sub {:?}: {}",
                self.sub,
                crate::protocol::USER_RULE
            ));
        }
        if self.ttl == 0 {
            return Err("--ttl 0: the token would be expired at once; give e.g. 15m or 1h".into());
        }
        let max = Config::default().auth.max_token_ttl_s;
        let warning = (self.ttl > max).then(|| {
            format!(
                "warning: this token lives {} s; a node refuses tokens that live longer than its auth.max_token_ttl_s ({max} s unless configured otherwise)",
                self.ttl
            )
        });
        Ok((self.token(), warning))
    }

    fn token(&self) -> String {
        let rooms = (!self.rooms.is_empty() || !self.sub_rooms.is_empty()).then(|| {
            crate::auth::RoomClaims {
                sub: self.rooms.iter().chain(&self.sub_rooms).cloned().collect(),
                publish: self.rooms.clone(),
            }
        });
        let claims = crate::auth::Claims {
            sub: self.sub.clone(),
            exp: crate::auth::unix_now() + self.ttl,
            rooms,
        };
        crate::auth::mint_hs256(self.secret.as_bytes(), &claims)
    }
}

fn parse_ttl(s: &str) -> Result<u64, String> {
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: give seconds or 90s, 15m, 1h, 7d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit must be s, m, h or d")),
    };
    Ok(n * mult)
}

/// `ringway check` arguments.
#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// Connections the node must hold [default: limits.max_connections, else 100000].
    #[arg(long, value_name = "N")]
    pub connections: Option<u64>,
    /// The configuration to validate (and flags as for `serve`).
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Flags of `ringway serve`. Each overrides the same key of `--config`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML config file; flags override its values.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Client listener address.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// HTTP API listener address.
    #[arg(long, value_name = "ADDR")]
    pub api_listen: Option<SocketAddr>,
    /// Worker threads, one per core [default: available cores].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Do not pin workers to cores.
    #[arg(long)]
    pub no_pin: bool,
    /// This node's id.
    #[arg(long)]
    pub node_id: Option<String>,
    /// Address peers connect to for the mesh [default: this node's entry in the peer
    /// list, if any].
    #[arg(long, value_name = "ADDR")]
    pub mesh_listen: Option<SocketAddr>,
    /// A peer node, ID=HOST:PORT (repeat for each peer).
    #[arg(long = "peer", value_name = "ID=HOST:PORT")]
    pub peers: Vec<String>,
    /// Shared mesh secret (same on every node; at least 16 bytes).
    #[arg(
        long,
        env = "RINGWAY_MESH_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub mesh_secret: Option<String>,
    /// Cluster name; peers with another name are refused.
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    /// HS256 secret for client tokens (at least 32 bytes).
    #[arg(
        long,
        env = "RINGWAY_TOKEN_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub token_secret: Option<String>,
    /// PEM public key (RSA or EC P-256) for RS256/ES256 client tokens.
    #[arg(long, value_name = "FILE")]
    pub token_public_key: Option<PathBuf>,
    /// Refuse clients without a valid token (HTTP 401).
    #[arg(long)]
    pub require_auth: bool,
    /// Bearer key for the HTTP API.
    #[arg(
        long,
        env = "RINGWAY_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub api_key: Option<String>,
    /// Webhooks: POST signed batches of events to this URL.
    #[arg(long, value_name = "URL")]
    pub hooks_url: Option<String>,
    /// The key that signs every call to the app (at least 16 bytes).
    #[arg(
        long,
        env = "RINGWAY_HOOKS_SECRET",
        hide_env_values = true,
        value_name = "SECRET"
    )]
    pub hooks_secret: Option<String>,
    /// Ask this URL before subscribes and publishes to the --authorize-room rooms.
    #[arg(long, value_name = "URL")]
    pub authorize_url: Option<String>,
    /// A room pattern the app authorizes (`name` or `prefix*`; repeat).
    #[arg(long = "authorize-room", value_name = "PATTERN")]
    pub authorize_rooms: Vec<String>,
    /// Identify connections without a token by asking this URL (cookie sessions).
    #[arg(long, value_name = "URL")]
    pub connect_url: Option<String>,
    /// PEM certificate chain: serve wss on --listen (with --tls-key).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Serve the demo page at / (the default).
    #[arg(long, conflicts_with = "no_demo")]
    pub demo: bool,
    /// Do not serve the demo page and guest tokens.
    #[arg(long)]
    pub no_demo: bool,
    /// Add the conformance endpoint /echo.
    #[arg(long)]
    pub echo: bool,
    /// Keep room history on disk in DIR, so a restarted node resumes its rooms.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Largest message a client may send, bytes.
    #[arg(long, value_name = "BYTES")]
    pub max_message_size: Option<usize>,
    /// Largest frame a client may send, bytes.
    #[arg(long, value_name = "BYTES")]
    pub max_frame_size: Option<usize>,
    /// Open connections on this node; more get HTTP 503 [default: what the open-file
    /// limit allows, less a reserve for the node].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,
    /// Open connections per client address; more get HTTP 429 [default: no cap].
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<usize>,
    /// Messages per second each client may send; 0 turns rate limiting off, the
    /// byte rate included (benchmarks with fast publishers).
    #[arg(long, value_name = "N")]
    pub rate_limit: Option<u32>,
    /// Kernel send buffer per client socket (SO_SNDBUF) in bytes; 0 = kernel
    /// autotuning.
    #[arg(long, value_name = "BYTES")]
    pub send_buffer: Option<usize>,
    /// Seconds over which a SIGTERM drain closes connections.
    #[arg(long, value_name = "SECONDS")]
    pub drain_window: Option<f64>,
}

impl ServeArgs {
    /// Defaults, then the file, then these flags.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut c = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = self.listen {
            c.listen = v;
        }
        if let Some(v) = self.api_listen {
            c.api_listen = v;
        }
        if let Some(v) = self.workers {
            c.workers = v;
        }
        if self.no_pin {
            c.pin_workers = false;
        }
        if let Some(v) = &self.node_id {
            c.node_id = v.clone();
        }
        if let Some(v) = self.mesh_listen {
            c.mesh.listen = Some(v);
        }
        if !self.peers.is_empty() {
            c.mesh.peers = self.peers.clone();
        }
        if let Some(v) = &self.mesh_secret {
            c.mesh.secret = v.clone();
        }
        if let Some(v) = &self.cluster {
            c.mesh.cluster = v.clone();
        }
        if let Some(v) = &self.token_secret {
            c.auth.token_secret = v.clone();
        }
        if let Some(v) = &self.token_public_key {
            c.auth.token_public_key = Some(v.clone());
        }
        if self.require_auth {
            c.allow_anonymous = false;
        }
        if let Some(v) = &self.api_key {
            c.auth.api_key = v.clone();
        }
        if let Some(v) = &self.hooks_url {
            c.hooks.url = v.clone();
        }
        if let Some(v) = &self.hooks_secret {
            c.hooks.secret = v.clone();
        }
        if let Some(v) = &self.authorize_url {
            c.hooks.authorize_url = v.clone();
        }
        if !self.authorize_rooms.is_empty() {
            c.hooks.authorize_rooms = self.authorize_rooms.clone();
        }
        if let Some(v) = &self.connect_url {
            c.hooks.connect_url = v.clone();
        }
        if let Some(v) = &self.tls_cert {
            c.tls.cert = Some(v.clone());
        }
        if let Some(v) = &self.tls_key {
            c.tls.key = Some(v.clone());
        }
        if self.demo {
            c.demo = true;
        }
        if self.no_demo {
            c.demo = false;
        }
        if self.echo {
            c.echo = true;
        }
        if let Some(v) = &self.data_dir {
            c.rooms.data_dir = Some(v.clone());
        }
        if let Some(v) = self.max_message_size {
            c.limits.max_message_size = v;
        }
        if let Some(v) = self.max_frame_size {
            c.limits.max_frame_size = v;
        }
        if let Some(v) = self.max_connections {
            c.limits.max_connections = v;
        }
        if let Some(v) = self.max_connections_per_ip {
            c.limits.max_connections_per_ip = v;
        }
        if let Some(v) = self.send_buffer {
            c.limits.send_buffer_bytes = v;
        }
        if let Some(v) = self.rate_limit {
            c.limits.messages_per_second = v;
            if v == 0 {
                c.limits.bytes_per_second = 0;
            }
        }
        if let Some(v) = self.drain_window {
            if !(v.is_finite() && v > 0.0) {
                return Err(ConfigError::Invalid(format!(
                    "--drain-window {v}: give a positive number of seconds, e.g. 30"
                )));
            }
            c.drain.window_ms = (v * 1000.0).round().max(1.0) as u64;
        }
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_refuses_what_a_node_would_refuse() {
        let secret = "0123456789abcdef0123456789abcdef";
        let mint = |args: &[&str]| {
            let mut all = vec!["ringway", "token"];
            all.extend_from_slice(args);
            match Cli::parse_from(all).command {
                Some(Command::Token(t)) => t.mint(),
                other => panic!("{other:?}"),
            }
        };
        let (token, warning) = mint(&["--secret", secret, "--sub", "alice"]).unwrap();
        assert_eq!(token.matches('.').count(), 2);
        assert_eq!(warning, None);
        let e = mint(&["--secret", "short", "--sub", "alice"]).unwrap_err();
        assert!(e.contains("32 bytes"), "{e}");
        let e = mint(&["--secret", secret, "--sub", "al ice"]).unwrap_err();
        assert!(e.contains("user ids are"), "{e}");
        let e = mint(&["--secret", secret, "--sub", "alice", "--ttl", "0"]).unwrap_err();
        assert!(e.contains("--ttl 0"), "{e}");
        let (_, warning) = mint(&["--secret", secret, "--sub", "alice", "--ttl", "2d"]).unwrap();
        assert!(warning.unwrap().contains("auth.max_token_ttl_s (86400 s"));
    }

    #[test]
    fn help_shows_the_config_defaults() {
        let mut cmd = Cli::command_with_defaults();
        let top = cmd.render_help().to_string();
        let serve = cmd
            .find_subcommand_mut("serve")
            .expect("serve")
            .render_help()
            .to_string();
        let long = cmd.render_long_help().to_string();
        // An unset variable must not read as set to nothing (`[env: NAME=]`).
        for help in [&top, &serve, &long] {
            assert!(help.contains("[env: RINGWAY_LOG_FORMAT]"), "{help}");
            assert!(!help.contains("=]"), "{help}");
        }
        let c = Config::default();
        for help in [&top, &serve] {
            assert!(help.contains(&format!("[default: {}]", c.listen)), "{help}");
            assert!(
                help.contains(&format!("[default: {}]", c.limits.messages_per_second)),
                "{help}"
            );
            assert!(
                help.contains("[default: 30]"),
                "drain window in seconds: {help}"
            );
            // Each default once: none written in a doc comment as well.
            for line in help.lines() {
                assert!(line.matches("[default:").count() <= 1, "{line}");
            }
        }
    }

    #[test]
    fn flags_override_defaults() {
        let cli = Cli::parse_from([
            "ringway",
            "--echo",
            "--workers",
            "3",
            "--listen",
            "127.0.0.1:0",
        ]);
        let c = cli.serve.load().unwrap();
        assert!(c.echo);
        assert_eq!(c.workers, 3);
        assert_eq!(c.listen.port(), 0);
        let cli = Cli::parse_from(["ringway", "serve", "--node-id", "n7"]);
        let Some(Command::Serve(args)) = cli.command else {
            panic!()
        };
        assert_eq!(args.load().unwrap().node_id, "n7");
    }
}
