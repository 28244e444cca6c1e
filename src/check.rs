//! `ringway check`: does this host fit the configured connection target?
//!
//! Sans-IO core: [`evaluate`] takes the host's facts ([`Host`], read from `/proc`
//! and the rlimits by [`Host::read`]) and a target, and returns one [`Finding`] per
//! item with what it has, what it needs and the fix. The per-connection costs are
//! the ones measured on the development machines (README, Measurements). The
//! advice names the values of the files in `sysctl/`; tests keep them equal.

use std::fmt;

use crate::config::Config;

/// User-space memory per idle connection, bytes (measured: 492–615, median 532, at
/// 15,000 connections; rounded up).
pub const USER_BYTES_PER_CONN: u64 = 640;
/// Kernel memory per idle TCP socket, bytes (measured: ~5,000 of slab per socket;
/// rounded up).
pub const KERNEL_BYTES_PER_CONN: u64 = 5 * 1024 + 512;
/// Room for data in flight: memory is planned at this multiple of the idle cost.
pub const HEADROOM: u64 = 2;

/// `LimitNOFILE=` of the systemd unit (`sysctl/ringway.service`) and the hard
/// `nofile` of `sysctl/ringway-limits.conf`: the advice repeats it.
pub const UNIT_LIMIT_NOFILE: u64 = 2_000_000;
/// `fs.nr_open` of the kernel profile (`sysctl/99-ringway.conf`).
pub const PROFILE_NR_OPEN: u64 = 2_097_152;
/// `fs.file-max` of the kernel profile.
pub const PROFILE_FILE_MAX: u64 = 4_194_304;

/// A port this node listens on, and the config key that sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePort {
    /// `listen`, `api_listen` or `mesh.listen`.
    pub key: &'static str,
    /// The port.
    pub port: u16,
}

/// The ports `config` listens on (port 0, "any free port", is left out: the kernel
/// picks one that is free).
pub fn node_ports(config: &Config) -> Vec<NodePort> {
    [
        ("listen", Some(config.listen)),
        ("api_listen", Some(config.api_listen)),
        ("mesh.listen", config.mesh.listen_addr(&config.node_id)),
    ]
    .into_iter()
    .filter_map(|(key, addr)| {
        Some(NodePort {
            key,
            port: addr?.port(),
        })
    })
    .filter(|p| p.port != 0)
    .collect()
}

/// The production checklist for a configuration: what is fine for trying ringway
/// and wrong on a real host (warnings: the node runs either way).
pub fn production(config: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut item = |ok: bool, item, have: &str, need: &str, fix: &str| {
        out.push(Finding {
            status: if ok { Status::Ok } else { Status::Warn },
            item,
            have: have.to_owned(),
            need: need.to_owned(),
            fix: if ok { String::new() } else { fix.to_owned() },
        })
    };
    item(
        !config.demo_served(),
        "demo page and guest tokens",
        if config.demo_served() { "on" } else { "off" },
        "off",
        "the demo is for trying ringway: set demo = false (or --no-demo)",
    );
    item(
        !config.allow_anonymous,
        "anonymous clients",
        if config.allow_anonymous {
            "allowed"
        } else {
            "refused"
        },
        "refused",
        "anyone who reaches the listener can subscribe and publish: set allow_anonymous = false (--require-auth) with a token key, or reserve rooms with auth.rooms_require_auth",
    );
    item(
        !config.auth.api_key.is_empty(),
        "HTTP API key",
        if config.auth.api_key.is_empty() {
            "none"
        } else {
            "set"
        },
        "set",
        "any local process can publish and read presence: set RINGWAY_API_KEY (`openssl rand -hex 32`)",
    );
    out
}

/// Facts about the host. `None` where the fact could not be read.
#[derive(Debug, Clone, Default)]
pub struct Host {
    /// RLIMIT_NOFILE soft and hard.
    pub nofile: Option<(u64, u64)>,
    /// `fs.nr_open`: the ceiling for RLIMIT_NOFILE.
    pub nr_open: Option<u64>,
    /// `fs.file-max`: open files system-wide.
    pub file_max: Option<u64>,
    /// `net.core.somaxconn`: accept backlog ceiling.
    pub somaxconn: Option<u64>,
    /// `net.ipv4.tcp_max_syn_backlog`.
    pub syn_backlog: Option<u64>,
    /// `net.ipv4.tcp_mem` maximum, in pages.
    pub tcp_mem_max_pages: Option<u64>,
    /// `net.ipv4.ip_local_port_range`: first and last ephemeral port.
    pub port_range: Option<(u16, u16)>,
    /// `net.ipv4.ip_local_reserved_ports`: inclusive ranges the kernel never hands
    /// out as ephemeral ports (empty when none are reserved).
    pub reserved_ports: Option<Vec<(u16, u16)>>,
    /// `net.netfilter.nf_conntrack_max`, when conntrack is loaded.
    pub conntrack_max: Option<u64>,
    /// `kernel.io_uring_disabled` (0 = enabled).
    pub io_uring_disabled: Option<u64>,
    /// Whether an io_uring instance could be created.
    pub io_uring_works: bool,
    /// Total memory, bytes.
    pub mem_total: Option<u64>,
    /// Page size, bytes.
    pub page_size: u64,
}

/// How an item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Fits.
    Ok,
    /// Works, but not as intended (slower, or fragile under bursts).
    Warn,
    /// The target does not fit.
    Fail,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        })
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Finding {
    /// Ok, warn or fail.
    pub status: Status,
    /// What was checked.
    pub item: &'static str,
    /// What the host has.
    pub have: String,
    /// What the target needs.
    pub need: String,
    /// How to fix it (empty when ok).
    pub fix: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:<32} have {:<16} need {}",
            self.status, self.item, self.have, self.need
        )?;
        if !self.fix.is_empty() {
            write!(f, "\n       fix: {}", self.fix)?;
        }
        Ok(())
    }
}

fn finding(
    ok: bool,
    fail: Status,
    item: &'static str,
    have: String,
    need: String,
    fix: String,
) -> Finding {
    Finding {
        status: if ok { Status::Ok } else { fail },
        item,
        have,
        need,
        fix: if ok { String::new() } else { fix },
    }
}

fn show(v: Option<u64>) -> String {
    v.map_or_else(|| "unknown".to_owned(), |v| v.to_string())
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Parse a port list as the kernel prints it (`7400,8080-8081`; empty: none).
/// `None` when it is not one.
pub fn parse_port_list(text: &str) -> Option<Vec<(u16, u16)>> {
    let text = text.trim();
    if text.is_empty() {
        return Some(Vec::new());
    }
    text.split(',')
        .map(|item| {
            let (lo, hi) = item.split_once('-').unwrap_or((item, item));
            let (lo, hi) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
            (lo <= hi).then_some((lo, hi))
        })
        .collect()
}

/// Ranges sorted and merged, printed as the kernel prints them.
fn show_port_list(ranges: &[(u16, u16)]) -> String {
    let mut sorted = ranges.to_vec();
    sorted.sort_unstable();
    let mut merged: Vec<(u16, u16)> = Vec::new();
    for (lo, hi) in sorted {
        match merged.last_mut() {
            Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
            _ => merged.push((lo, hi)),
        }
    }
    let items: Vec<String> = merged
        .iter()
        .map(|&(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        })
        .collect();
    items.join(",")
}

/// Whether an outgoing connection could take one of this node's ports before the
/// node binds it: a port inside `ip_local_port_range` and not reserved.
fn reserved_ports_finding(host: &Host, ports: &[NodePort]) -> Finding {
    const ITEM: &str = "net.ipv4.ip_local_reserved_ports";
    let reserved = host.reserved_ports.clone().unwrap_or_default();
    let have = match show_port_list(&reserved) {
        list if list.is_empty() => "none".to_owned(),
        list => list,
    };
    let Some((first, last)) = host.port_range else {
        return finding(
            false,
            Status::Warn,
            ITEM,
            have,
            "a readable ip_local_port_range".to_owned(),
            "cannot read /proc/sys/net/ipv4/ip_local_port_range, so cannot tell whether an \
             outgoing connection may take this node's ports; run the check on the host itself"
                .to_owned(),
        );
    };
    let in_range: Vec<NodePort> = ports
        .iter()
        .copied()
        .filter(|p| (first..=last).contains(&p.port))
        .collect();
    let exposed: Vec<NodePort> = in_range
        .iter()
        .copied()
        .filter(|p| !reserved.iter().any(|&(lo, hi)| (lo..=hi).contains(&p.port)))
        .collect();
    let need = if in_range.is_empty() {
        format!("none: no port in {first}-{last}")
    } else {
        let list: Vec<(u16, u16)> = in_range.iter().map(|p| (p.port, p.port)).collect();
        format!("{} reserved", show_port_list(&list))
    };
    let named: Vec<String> = exposed
        .iter()
        .map(|p| format!("{} ({})", p.port, p.key))
        .collect();
    let mut wanted = reserved;
    wanted.extend(exposed.iter().map(|p| (p.port, p.port)));
    finding(
        exposed.is_empty(),
        Status::Warn,
        ITEM,
        have,
        need,
        format!(
            "{} inside ip_local_port_range {first}-{last}: an outgoing connection can take \
             such a port before ringway binds it (the node then fails to start: Address \
             already in use); sysctl -w net.ipv4.ip_local_reserved_ports={}, and the same \
             value in /etc/sysctl.d/99-ringway.conf (sysctl/99-ringway.conf reserves the \
             default ports)",
            named.join(", "),
            show_port_list(&wanted)
        ),
    )
}

/// Memory a target of `connections` needs (idle cost times headroom, plus 1 GiB for
/// the OS and the process itself).
pub fn memory_needed(connections: u64) -> u64 {
    connections * (USER_BYTES_PER_CONN + KERNEL_BYTES_PER_CONN) * HEADROOM + (1 << 30)
}

/// Judge the host against a target of `connections` for a node listening on
/// `ports` ([`node_ports`]) that holds back `reserve` descriptors for itself
/// (`Config::fd_reserve`).
pub fn evaluate(host: &Host, connections: u64, ports: &[NodePort], reserve: u64) -> Vec<Finding> {
    let fds = connections + reserve;
    let mut out = Vec::new();
    let (soft, hard) = host.nofile.unwrap_or((0, 0));
    out.push(finding(
        hard >= fds,
        Status::Fail,
        "open files (RLIMIT_NOFILE)",
        format!("{soft}/{hard}"),
        format!("hard >= {fds}"),
        if fds <= UNIT_LIMIT_NOFILE {
            format!(
                "raise the limit: LimitNOFILE={UNIT_LIMIT_NOFILE} in the systemd unit, as \
                 sysctl/ringway.service has it, or hard nofile {UNIT_LIMIT_NOFILE} in \
                 /etc/security/limits.d (sysctl/ringway-limits.conf); ringway raises its soft \
                 limit to the hard limit itself"
            )
        } else {
            format!(
                "raise the limit: LimitNOFILE={fds} in the systemd unit (sysctl/ringway.service \
                 has {UNIT_LIMIT_NOFILE}: raise it and fs.nr_open), or hard nofile {fds} in \
                 /etc/security/limits.d; ringway raises its soft limit to the hard limit itself"
            )
        },
    ));
    out.push(finding(
        host.nr_open.is_some_and(|v| v >= fds),
        Status::Fail,
        "fs.nr_open",
        show(host.nr_open),
        format!(">= {fds}"),
        format!(
            "sysctl -w fs.nr_open={} (sysctl/99-ringway.conf)",
            fds.max(PROFILE_NR_OPEN)
        ),
    ));
    out.push(finding(
        host.file_max.is_some_and(|v| v >= fds * 2),
        Status::Fail,
        "fs.file-max",
        show(host.file_max),
        format!(">= {}", fds * 2),
        format!(
            "sysctl -w fs.file-max={} (sysctl/99-ringway.conf)",
            (fds * 2).max(PROFILE_FILE_MAX)
        ),
    ));
    out.push(finding(
        host.somaxconn.is_some_and(|v| v >= 65_535),
        Status::Warn,
        "net.core.somaxconn",
        show(host.somaxconn),
        ">= 65535".to_owned(),
        "sysctl -w net.core.somaxconn=65535: a reconnect storm overflows a small accept \
         queue and clients see SYN retries (1 s, 3 s, 7 s...)"
            .to_owned(),
    ));
    out.push(finding(
        host.syn_backlog.is_some_and(|v| v >= 65_535),
        Status::Warn,
        "net.ipv4.tcp_max_syn_backlog",
        show(host.syn_backlog),
        ">= 65535".to_owned(),
        "sysctl -w net.ipv4.tcp_max_syn_backlog=65535 (half-open connections during a storm)"
            .to_owned(),
    ));
    // Socket buffers: room for 16 KiB in flight per connection.
    let tcp_need_pages = connections * 16 * 1024 / host.page_size.max(1);
    out.push(finding(
        host.tcp_mem_max_pages.is_some_and(|v| v >= tcp_need_pages),
        Status::Warn,
        "net.ipv4.tcp_mem (max pages)",
        show(host.tcp_mem_max_pages),
        format!(">= {tcp_need_pages}"),
        format!(
            "sysctl -w net.ipv4.tcp_mem=\"{} {} {}\": past the max the kernel drops \
             packets for every socket",
            tcp_need_pages / 2,
            tcp_need_pages * 3 / 4,
            tcp_need_pages
        ),
    ));
    if let Some(max) = host.conntrack_max {
        out.push(finding(
            max >= connections * 2,
            Status::Fail,
            "net.netfilter.nf_conntrack_max",
            max.to_string(),
            format!(">= {}", connections * 2),
            format!(
                "sysctl -w net.netfilter.nf_conntrack_max={}, or exempt the port from \
                 tracking (iptables -t raw -A PREROUTING -p tcp --dport 8080 -j NOTRACK): a \
                 full table drops new connections silently",
                connections * 2
            ),
        ));
    }
    out.push(finding(
        host.io_uring_works && host.io_uring_disabled.unwrap_or(0) == 0,
        Status::Warn,
        "io_uring",
        if host.io_uring_works {
            "available"
        } else {
            "unavailable"
        }
        .to_owned(),
        "available".to_owned(),
        "ringway falls back to epoll: use Linux >= 5.10, sysctl -w kernel.io_uring_disabled=0, \
         and allow io_uring_* in the seccomp profile"
            .to_owned(),
    ));
    out.push(reserved_ports_finding(host, ports));
    let mem_need = memory_needed(connections);
    out.push(finding(
        host.mem_total.is_some_and(|v| v >= mem_need),
        Status::Fail,
        "memory",
        host.mem_total.map_or_else(|| "unknown".to_owned(), gib),
        format!(
            ">= {} ({} B/conn idle x{HEADROOM})",
            gib(mem_need),
            USER_BYTES_PER_CONN + KERNEL_BYTES_PER_CONN
        ),
        "use a larger host or split the target over more nodes".to_owned(),
    ));
    out
}

impl Host {
    /// Read the facts of the running host.
    pub fn read() -> Host {
        let sys = |path: &str| -> Option<u64> {
            std::fs::read_to_string(format!("/proc/sys/{path}"))
                .ok()?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        };
        let tcp_mem_max = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_mem")
            .ok()
            .and_then(|s| s.split_whitespace().nth(2)?.parse().ok());
        let port_range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| {
                let mut it = s.split_whitespace().map(|v| v.parse::<u16>().ok());
                Some((it.next()??, it.next()??))
            });
        let reserved_ports = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_reserved_ports")
            .ok()
            .and_then(|s| parse_port_list(&s));
        let mem_total = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                .map(|kib| kib * 1024)
        });
        Host {
            nofile: nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).ok(),
            nr_open: sys("fs/nr_open"),
            file_max: sys("fs/file-max"),
            somaxconn: sys("net/core/somaxconn"),
            syn_backlog: sys("net/ipv4/tcp_max_syn_backlog"),
            tcp_mem_max_pages: tcp_mem_max,
            port_range,
            reserved_ports,
            conntrack_max: sys("net/netfilter/nf_conntrack_max"),
            io_uring_disabled: sys("kernel/io_uring_disabled"),
            io_uring_works: crate::runtime::probe::io_driver()
                == crate::runtime::probe::Driver::IoUring,
            mem_total,
            page_size: 4096,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default node's descriptor reserve.
    fn reserve() -> u64 {
        Config::default().fd_reserve() as u64
    }

    fn roomy() -> Host {
        Host {
            nofile: Some((1 << 20, 1 << 20)),
            nr_open: Some(1 << 21),
            file_max: Some(1 << 23),
            somaxconn: Some(65_535),
            syn_backlog: Some(65_535),
            tcp_mem_max_pages: Some(1 << 22),
            port_range: Some((32_768, 60_999)),
            reserved_ports: Some(Vec::new()),
            conntrack_max: None,
            io_uring_disabled: Some(0),
            io_uring_works: true,
            mem_total: Some(64 << 30),
            page_size: 4096,
        }
    }

    #[test]
    fn a_roomy_host_fits_half_a_million() {
        let f = evaluate(
            &roomy(),
            500_000,
            &node_ports(&Config::default()),
            reserve(),
        );
        assert!(f.iter().all(|f| f.status == Status::Ok), "{f:#?}");
    }

    #[test]
    fn each_shortfall_names_its_fix() {
        let host = Host {
            nofile: Some((1024, 20_000)),
            somaxconn: Some(4096),
            conntrack_max: Some(262_144),
            mem_total: Some(2 << 30),
            ..roomy()
        };
        let f = evaluate(&host, 500_000, &[], reserve());
        let by = |item: &str| f.iter().find(|f| f.item == item).unwrap().clone();
        assert_eq!(by("open files (RLIMIT_NOFILE)").status, Status::Fail);
        assert!(by("open files (RLIMIT_NOFILE)").fix.contains("LimitNOFILE"));
        assert_eq!(by("net.core.somaxconn").status, Status::Warn);
        assert_eq!(by("net.netfilter.nf_conntrack_max").status, Status::Fail);
        assert!(by("net.netfilter.nf_conntrack_max").fix.contains("NOTRACK"));
        assert_eq!(by("memory").status, Status::Fail);
        assert!(
            f.iter()
                .filter(|f| f.status == Status::Ok)
                .all(|f| f.fix.is_empty())
        );
    }

    /// The value of `key` in a `key = value` (or `key=value`) line of `text`.
    fn setting<'a>(text: &'a str, key: &str) -> &'a str {
        text.lines()
            .filter_map(|l| l.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .unwrap_or_else(|| panic!("{key} not found"))
            .1
            .trim()
    }

    fn by<'a>(f: &'a [Finding], item: &str) -> &'a Finding {
        f.iter().find(|f| f.item == item).unwrap()
    }

    #[test]
    fn the_nofile_advice_says_what_the_unit_and_the_limits_file_say() {
        let unit: u64 = setting(include_str!("../sysctl/ringway.service"), "LimitNOFILE")
            .parse()
            .unwrap();
        let limits: u64 = include_str!("../sysctl/ringway-limits.conf")
            .lines()
            .map(str::split_whitespace)
            .find_map(|mut w| match (w.next(), w.next(), w.next(), w.next()) {
                (Some("ringway"), Some("hard"), Some("nofile"), Some(n)) => n.parse().ok(),
                _ => None,
            })
            .unwrap();
        assert_eq!(unit, limits, "the unit and the limits file disagree");
        let host = Host {
            nofile: Some((1024, 20_000)),
            ..roomy()
        };
        let nofile_fix = |connections| {
            let f = evaluate(&host, connections, &[], reserve());
            by(&f, "open files (RLIMIT_NOFILE)").fix.clone()
        };
        let fix = nofile_fix(500_000);
        assert!(fix.contains(&format!("LimitNOFILE={unit} ")), "{fix}");
        assert!(fix.contains(&format!("hard nofile {limits} ")), "{fix}");
        // A target past what the unit allows names its own number.
        let fix = nofile_fix(3_000_000);
        let needed = 3_000_000 + reserve();
        assert!(fix.contains(&format!("LimitNOFILE={needed} ")), "{fix}");
    }

    #[test]
    fn the_kernel_advice_says_what_the_profile_says() {
        let profile = include_str!("../sysctl/99-ringway.conf");
        let host = Host {
            nr_open: Some(1024),
            file_max: Some(1024),
            ..roomy()
        };
        let f = evaluate(&host, 1000, &[], reserve());
        let nr_open = format!("fs.nr_open={} ", setting(profile, "fs.nr_open"));
        let file_max = format!("fs.file-max={} ", setting(profile, "fs.file-max"));
        assert!(by(&f, "fs.nr_open").fix.contains(&nr_open), "{f:#?}");
        assert!(by(&f, "fs.file-max").fix.contains(&file_max), "{f:#?}");
    }

    #[test]
    fn port_lists_parse_as_the_kernel_prints_them() {
        assert_eq!(
            parse_port_list("7400,8080-8081\n"),
            Some(vec![(7400, 7400), (8080, 8081)])
        );
        assert_eq!(parse_port_list("\n"), Some(vec![]));
        assert_eq!(parse_port_list("8081-8080"), None);
        assert_eq!(parse_port_list("80,x"), None);
        assert_eq!(
            show_port_list(&[(8081, 8081), (7400, 7400), (8080, 8080), (8082, 8090)]),
            "7400,8080-8090"
        );
    }

    #[test]
    fn the_ports_of_a_node_leave_out_port_zero() {
        let mut c = Config::default();
        assert_eq!(
            node_ports(&c),
            [
                NodePort {
                    key: "listen",
                    port: 8080
                },
                NodePort {
                    key: "api_listen",
                    port: 8081
                },
            ]
        );
        c.listen = "0.0.0.0:0".parse().unwrap();
        c.mesh.listen = Some("10.0.0.1:7400".parse().unwrap());
        let keys: Vec<&str> = node_ports(&c).iter().map(|p| p.key).collect();
        assert_eq!(keys, ["api_listen", "mesh.listen"]);
    }

    #[test]
    fn an_unreserved_port_in_the_ephemeral_range_is_a_warning_naming_the_value_to_set() {
        let ports = [
            NodePort {
                key: "listen",
                port: 8080,
            },
            NodePort {
                key: "api_listen",
                port: 8081,
            },
            NodePort {
                key: "mesh.listen",
                port: 7400,
            },
        ];
        let host = Host {
            port_range: Some((1024, 65_535)),
            reserved_ports: Some(vec![(7400, 7400), (9000, 9010)]),
            ..roomy()
        };
        let f = evaluate(&host, 1000, &ports, reserve());
        let r = by(&f, "net.ipv4.ip_local_reserved_ports");
        assert_eq!(r.status, Status::Warn);
        assert_eq!(r.have, "7400,9000-9010");
        assert!(
            r.fix.contains("8080 (listen), 8081 (api_listen) inside"),
            "{r}"
        );
        assert!(!r.fix.contains("mesh.listen"), "{r}");
        // The value keeps what is reserved already.
        assert!(
            r.fix
                .contains("ip_local_reserved_ports=7400,8080-8081,9000-9010,"),
            "{r}"
        );
        // Reserved: fine.
        let host = Host {
            reserved_ports: Some(vec![(7400, 7400), (8080, 8081)]),
            ..host
        };
        let r = evaluate(&host, 1000, &ports, reserve());
        assert_eq!(
            by(&r, "net.ipv4.ip_local_reserved_ports").status,
            Status::Ok
        );
        // Outside the ephemeral range (the kernel's default 32768-60999): fine too.
        let r = evaluate(&roomy(), 1000, &ports, reserve());
        let r = by(&r, "net.ipv4.ip_local_reserved_ports");
        assert_eq!(r.status, Status::Ok, "{r}");
        assert!(r.fix.is_empty());
        // Unknown range: a warning, not a guess.
        let host = Host {
            port_range: None,
            ..roomy()
        };
        let r = evaluate(&host, 1000, &ports, reserve());
        assert_eq!(
            by(&r, "net.ipv4.ip_local_reserved_ports").status,
            Status::Warn
        );
    }

    #[test]
    fn the_profile_reserves_the_default_ports_inside_its_own_port_range() {
        let profile = include_str!("../sysctl/99-ringway.conf");
        let mut range = setting(profile, "net.ipv4.ip_local_port_range")
            .split_whitespace()
            .map(|v| v.parse::<u16>().unwrap());
        let host = Host {
            port_range: Some((range.next().unwrap(), range.next().unwrap())),
            reserved_ports: parse_port_list(setting(profile, "net.ipv4.ip_local_reserved_ports")),
            ..roomy()
        };
        let mut ports = node_ports(&Config::default());
        ports.push(NodePort {
            key: "mesh.listen",
            port: 7400,
        });
        let f = evaluate(&host, 1000, &ports, reserve());
        let r = by(&f, "net.ipv4.ip_local_reserved_ports");
        assert_eq!(r.status, Status::Ok, "{r}");
        assert_eq!(r.need, "7400,8080-8081 reserved");
    }

    #[test]
    fn memory_projection_is_linear_in_connections() {
        let per = (USER_BYTES_PER_CONN + KERNEL_BYTES_PER_CONN) * HEADROOM;
        assert_eq!(memory_needed(1000) - memory_needed(0), 1000 * per);
    }
}
