//! Listening sockets, built with socket2 so we choose the backlog and SO_REUSEPORT:
//! one listener per worker on the same address, and the kernel spreads connections
//! across them (no shared accept queue, no thundering herd).

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

use super::probe::Driver;

/// Bind `count` SO_REUSEPORT listeners on `addr`. With port 0, the first bind picks
/// the port and the others join it.
pub fn bind_group(
    addr: SocketAddr,
    count: usize,
    backlog: i32,
    driver: Driver,
) -> io::Result<Vec<TcpListener>> {
    let mut out = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count {
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_tcp_nodelay(true)?;
        // monoio's io_uring driver wants blocking sockets; its epoll driver wants
        // non-blocking ones.
        s.set_nonblocking(driver == Driver::Legacy)?;
        s.bind(&addr.into()).map_err(|e| bind_error(addr, e))?;
        s.listen(backlog)?;
        let l: TcpListener = s.into();
        addr = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}

fn bind_error(addr: SocketAddr, e: io::Error) -> io::Error {
    let hint = match e.kind() {
        io::ErrorKind::AddrInUse => {
            "another process holds this port: stop it or choose another address (--listen / --api-listen)"
        }
        io::ErrorKind::PermissionDenied => {
            "ports below 1024 need root or CAP_NET_BIND_SERVICE: use a higher port or grant the capability"
        }
        io::ErrorKind::AddrNotAvailable => "this host has no such address: check the IP",
        _ => "check the address",
    };
    io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}; {hint}"))
}
