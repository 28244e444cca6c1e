//! `ringway check`: does this host fit the configured connection target?
//!
//! Sans-IO core: [`evaluate`] takes the host's facts ([`Host`], read from `/proc`
//! and the rlimits by [`Host::read`]) and a target, and returns one [`Finding`] per
//! item with what it has, what it needs and the fix. The per-connection costs are
//! the ones measured on the development machines (README, Measurements).

use std::fmt;

/// User-space memory per idle connection, bytes (measured: 492–615, median 532, at
/// 15,000 connections; rounded up).
pub const USER_BYTES_PER_CONN: u64 = 640;
/// Kernel memory per idle TCP socket, bytes (measured: ~5,000 of slab per socket;
/// rounded up).
pub const KERNEL_BYTES_PER_CONN: u64 = 5 * 1024 + 512;
/// Room for data in flight: memory is planned at this multiple of the idle cost.
pub const HEADROOM: u64 = 2;
/// File descriptors held back from the connection budget.
pub const RESERVED_FDS: u64 = 256;

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

/// Memory a target of `connections` needs (idle cost times headroom, plus 1 GiB for
/// the OS and the process itself).
pub fn memory_needed(connections: u64) -> u64 {
    connections * (USER_BYTES_PER_CONN + KERNEL_BYTES_PER_CONN) * HEADROOM + (1 << 30)
}

/// Judge the host against a target of `connections`.
pub fn evaluate(host: &Host, connections: u64) -> Vec<Finding> {
    let fds = connections + RESERVED_FDS;
    let mut out = Vec::new();
    let (soft, hard) = host.nofile.unwrap_or((0, 0));
    out.push(finding(
        hard >= fds,
        Status::Fail,
        "open files (RLIMIT_NOFILE)",
        format!("{soft}/{hard}"),
        format!("hard >= {fds}"),
        format!(
            "raise the limit: LimitNOFILE={} in the systemd unit (sysctl/ringway.service), \
             or nofile in /etc/security/limits.d (sysctl/ringway-limits.conf); ringway raises \
             its soft limit to the hard limit itself",
            fds.max(1 << 20)
        ),
    ));
    out.push(finding(
        host.nr_open.is_some_and(|v| v >= fds),
        Status::Fail,
        "fs.nr_open",
        show(host.nr_open),
        format!(">= {fds}"),
        format!(
            "sysctl -w fs.nr_open={} (sysctl/99-ringway.conf)",
            fds.max(1 << 21)
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
            (fds * 2).max(1 << 22)
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

    fn roomy() -> Host {
        Host {
            nofile: Some((1 << 20, 1 << 20)),
            nr_open: Some(1 << 21),
            file_max: Some(1 << 23),
            somaxconn: Some(65_535),
            syn_backlog: Some(65_535),
            tcp_mem_max_pages: Some(1 << 22),
            conntrack_max: None,
            io_uring_disabled: Some(0),
            io_uring_works: true,
            mem_total: Some(64 << 30),
            page_size: 4096,
        }
    }

    #[test]
    fn a_roomy_host_fits_half_a_million() {
        let f = evaluate(&roomy(), 500_000);
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
        let f = evaluate(&host, 500_000);
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

    #[test]
    fn memory_projection_is_linear_in_connections() {
        let per = (USER_BYTES_PER_CONN + KERNEL_BYTES_PER_CONN) * HEADROOM;
        assert_eq!(memory_needed(1000) - memory_needed(0), 1000 * per);
    }
}
