//! Listening sockets, built with socket2 so we choose the backlog: one socket per
//! address, shared by every worker through its own duplicate of the descriptor.
//!
//! Why one shared socket and not one `SO_REUSEPORT` socket per worker: a reuseport
//! group can be joined by any other socket bound to the same address with
//! `SO_REUSEPORT` by the same user, and the kernel then splits new connections
//! between the node and the stranger (a second ringway started by mistake answered
//! every other request). A socket bound *without* `SO_REUSEPORT` cannot be joined at
//! all: the kernel refuses every other bind to the address with `EADDRINUSE`, whatever
//! the process, its user or its options, so a second node on the same address (or
//! `--listen` equal to `--api-listen`) fails at start-up with a message naming the
//! holder. The workers share the one accept queue: each has an accept pending on its
//! duplicate, the kernel wakes one of them per connection (io_uring polls accept
//! exclusively), and a busy worker simply posts its next accept later, so connections
//! go to whoever has time.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

use super::probe::Driver;

/// Bind one listening socket on `addr` and hand out `count` handles on it (the first
/// is the socket itself, the others duplicates of its descriptor).
pub fn bind_shared(
    addr: SocketAddr,
    setting: &str,
    count: usize,
    backlog: i32,
    driver: Driver,
) -> io::Result<Vec<TcpListener>> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // SO_REUSEADDR only lets a restarted node bind while old connections sit in
    // TIME_WAIT; it does not let two listeners share the address.
    s.set_reuse_address(true)?;
    // Accepted sockets inherit TCP_NODELAY from the listener (Linux copies the
    // listener's TCP options into each child), so no accept pays a setsockopt for it.
    s.set_tcp_nodelay(true)?;
    // monoio's io_uring driver wants blocking sockets; its epoll driver wants
    // non-blocking ones. (O_NONBLOCK belongs to the open file, so every duplicate
    // shares it.)
    s.set_nonblocking(driver == Driver::Legacy)?;
    bind_patiently(&s, addr, setting)?;
    s.listen(backlog)?;
    let first: TcpListener = s.into();
    let mut out = Vec::with_capacity(count);
    for _ in 1..count {
        out.push(first.try_clone()?);
    }
    out.insert(0, first);
    Ok(out)
}

/// Have the kernel hold new connections on `listener` until their first bytes
/// arrive, at most `secs` seconds (`TCP_DEFER_ACCEPT`; 0 turns it off). Every
/// duplicate of the descriptor shares the setting.
///
/// The kernel drops the client's bare handshake ACK and completes the connection
/// when its data (the upgrade request, or a TLS ClientHello) comes, so an accept
/// yields a socket that is already readable. After `secs` it resends its SYN-ACK and
/// the client's answer completes the connection anyway, data or not.
pub fn defer_accept(listener: &TcpListener, secs: u32) -> io::Result<()> {
    use nix::libc;
    use std::os::fd::AsRawFd;
    let val = libc::c_int::try_from(secs).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is open for the whole call (`listener` is borrowed), and
    // the pointer and length describe `val`, a live `c_int`, which the kernel only
    // reads.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&raw const val).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// How long a bind waits for an address that no live process holds.
const LINGER_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Bind, waiting out a listener that outlives its process. When a node is killed,
/// its io_uring instance is torn down asynchronously and the accepts it had pending
/// keep the listening socket open for a few more milliseconds (measured: 10 to 25 ms
/// after the process was reaped), so a restart on the same address can find it still
/// bound. A holder that is a live process fails at once.
fn bind_patiently(s: &Socket, addr: SocketAddr, setting: &str) -> io::Result<()> {
    let start = std::time::Instant::now();
    loop {
        match s.bind(&addr.into()) {
            Ok(()) => return Ok(()),
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse
                    && start.elapsed() < LINGER_WAIT
                    && holder(addr).is_none() =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(bind_error(addr, setting, e)),
        }
    }
}

/// The error for a failed bind, with its cause and the fix (naming the process that
/// holds the address when it can, and `setting`, where the address came from).
pub fn bind_error(addr: SocketAddr, setting: &str, e: io::Error) -> io::Error {
    let hint = match e.kind() {
        io::ErrorKind::AddrInUse => match holder(addr) {
            Some(h) if h.pid == std::process::id() => {
                "this node itself already listens there: give --listen, --api-listen and \
                 --mesh-listen different addresses"
                    .to_owned()
            }
            Some(h) => format!(
                "process {} ({}) holds this port: stop it or choose another address for \
                 {setting}",
                h.pid, h.command
            ),
            None => format!(
                "something holds this port, but no process this user can see (another \
                 user's, or a container's; `ss -ltnp` as root shows who): stop it or \
                 choose another address for {setting}"
            ),
        },
        io::ErrorKind::PermissionDenied => {
            "ports below 1024 need root or CAP_NET_BIND_SERVICE: use a higher port or grant \
             the capability"
                .to_owned()
        }
        io::ErrorKind::AddrNotAvailable => "this host has no such address: check the IP".to_owned(),
        _ => "check the address".to_owned(),
    };
    io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}; {hint}"))
}

/// A process that holds a listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its pid.
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`).
    pub command: String,
}

/// Who listens on `addr` (or on the wildcard address of its port), as far as
/// `/proc` lets this process see: the socket's inode from `/proc/net/tcp{,6}`, then
/// the process with that inode among its descriptors. `None` when it cannot tell
/// (another user's process, no `/proc`).
pub fn holder(addr: SocketAddr) -> Option<Holder> {
    let tables = ["/proc/net/tcp", "/proc/net/tcp6"];
    let inodes: Vec<u64> = tables
        .iter()
        .filter_map(|t| std::fs::read_to_string(t).ok())
        .flat_map(|text| listening_inodes(&text, addr))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            let inode = target
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse::<u64>().ok());
            if inode.is_some_and(|i| inodes.contains(&i)) {
                let command = std::fs::read_to_string(entry.path().join("comm"))
                    .map(|s| s.trim().to_owned())
                    .unwrap_or_else(|_| "?".to_owned());
                return Some(Holder { pid, command });
            }
        }
    }
    None
}

/// Inodes of the sockets in a `/proc/net/tcp{,6}` table that listen on `addr`'s
/// port at `addr`'s IP or at the wildcard address (either side may be the wildcard).
fn listening_inodes(table: &str, addr: SocketAddr) -> Vec<u64> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (f.get(1)?, f.get(3)?, f.get(9)?);
            if *state != LISTEN {
                return None;
            }
            let (ip_hex, port_hex) = local.split_once(':')?;
            let port = u16::from_str_radix(port_hex, 16).ok()?;
            let ip = parse_proc_ip(ip_hex)?;
            let same_ip = ip == addr.ip() || ip.is_unspecified() || addr.ip().is_unspecified();
            (port == addr.port() && same_ip).then(|| inode.parse().ok())?
        })
        .collect()
}

/// An address as `/proc/net/tcp{,6}` prints it: each 32-bit word of the address as
/// the hex of the integer in this host's memory (so native byte order).
fn parse_proc_ip(hex: &str) -> Option<std::net::IpAddr> {
    let word = |i: usize| {
        let w = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(std::net::Ipv4Addr::from(word(0)?).into()),
        32 => {
            let mut octets = [0u8; 16];
            for i in 0..4 {
                octets[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            let v6 = std::net::Ipv6Addr::from(octets);
            Some(match v6.to_ipv4_mapped() {
                Some(v4) => v4.into(),
                None => v6.into(),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 00000000:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F92 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 4444 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn finds_the_listener_on_the_address_or_the_wildcard() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(listening_inodes(TCP, a("127.0.0.1:8080")), vec![4242]);
        assert_eq!(listening_inodes(TCP, a("0.0.0.0:8080")), vec![4242]);
        assert_eq!(
            listening_inodes(TCP, a("127.0.0.1:8081")),
            vec![4343],
            "wildcard holder"
        );
        assert!(listening_inodes(TCP, a("127.0.0.2:8080")).is_empty());
        assert!(
            listening_inodes(TCP, a("127.0.0.1:8082")).is_empty(),
            "not listening"
        );
    }

    #[test]
    fn parses_proc_addresses() {
        assert_eq!(
            parse_proc_ip("0100007F"),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            parse_proc_ip("0000000000000000FFFF00000100007F"),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            parse_proc_ip("00000000000000000000000001000000"),
            Some("::1".parse().unwrap())
        );
    }

    const ANY: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
        std::net::Ipv4Addr::LOCALHOST,
        0,
    ));

    /// `count` shared listeners on `addr`, as a node binds its client address.
    fn bind(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
        bind_shared(addr, "--listen (listen)", count, 16, Driver::IoUring)
    }

    #[test]
    fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let held = bind(ANY, 1).unwrap();
        let _client = std::net::TcpStream::connect(held[0].local_addr().unwrap()).unwrap();
        let (accepted, _) = held[0].accept().unwrap();
        assert!(accepted.nodelay().unwrap(), "the driver relies on this");
    }

    #[test]
    fn a_second_bind_on_a_held_address_is_refused_naming_this_process() {
        let held = bind(ANY, 2).unwrap();
        let addr = held[0].local_addr().unwrap();
        let e = bind(addr, 1).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains("this node itself"), "{e}");
        // A reuseport socket of a stranger cannot join either.
        let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        s.set_reuse_port(true).unwrap();
        assert!(s.bind(&addr.into()).is_err());
    }
}
