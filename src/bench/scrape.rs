//! Reading a server's `/metrics` during a benchmark (blocking, std; the response is
//! parsed with httparse).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// GET `path` from `addr`; returns the body.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&raw) {
        Ok(httparse::Status::Complete(n)) if resp.code == Some(200) => {
            Ok(String::from_utf8_lossy(&raw[n..]).into_owned())
        }
        Ok(_) => Err(std::io::Error::other(format!(
            "GET {path} answered {:?}",
            resp.code
        ))),
        Err(e) => Err(std::io::Error::other(format!("bad HTTP response: {e}"))),
    }
}

/// The value of an unlabelled metric in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (k, v) = l.rsplit_once(' ')?;
        (k == name).then(|| v.parse().ok())?
    })
}

/// The sum of a metric over all its label sets.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_and_labelled_metrics() {
        let t = "# HELP x\nringway_x 5\nringway_c{worker=\"0\"} 2\nringway_c{worker=\"1\"} 3\nringway_cc 9\n";
        assert_eq!(metric(t, "ringway_x"), Some(5.0));
        assert_eq!(metric_sum(t, "ringway_c"), 5.0);
    }
}
