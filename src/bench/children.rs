//! Spreading a scenario over child processes (`--procs K`): one process holds at most
//! about as many sockets as its open-file limit allows.
//!
//! A child is this binary with the same command line plus overrides (its share of the
//! connections, `--child I/K`, `--first-index N`). It talks on its stdout in lines:
//! `READY <n>` when its connections are in place, `RESULT <fields…> <histogram>` at the
//! end (the histogram in HdrHistogram's V2 format, base64). The coordinator paces it
//! through stdin: `GO` (go on from READY), and closing stdin (stop and report).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdout, Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};

/// A running child and its stdout.
pub struct Kid {
    child: Child,
    out: BufReader<ChildStdout>,
}

/// Share `total` over `k` processes: (first index, count) of process `i`.
pub fn share(total: usize, k: usize, i: usize) -> (usize, usize) {
    let base = total / k;
    let extra = total % k;
    let first = i * base + i.min(extra);
    (first, base + usize::from(i < extra))
}

/// Start `k` children running this process's own command line, each with the
/// overrides `extra(i)`.
pub fn spawn(k: usize, extra: impl Fn(usize) -> Vec<String>) -> anyhow::Result<Vec<Kid>> {
    let exe = std::env::current_exe()?;
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut kids = Vec::with_capacity(k);
    for i in 0..k {
        let mut child = Command::new(&exe)
            .args(&argv)
            .args(extra(i))
            .args(["--child", &format!("{i}/{k}")])
            .env("RINGWAY_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let out = BufReader::new(child.stdout.take().expect("piped"));
        kids.push(Kid { child, out });
    }
    Ok(kids)
}

impl Kid {
    /// The next line the child prints, split into words; it must start with `tag`.
    pub fn expect(&mut self, tag: &str) -> anyhow::Result<Vec<String>> {
        let mut line = String::new();
        self.out.read_line(&mut line)?;
        let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        anyhow::ensure!(
            words.first().map(String::as_str) == Some(tag),
            "a bench child said {line:?} where {tag} was expected (see its stderr above)"
        );
        Ok(words)
    }

    /// Tell the child to go on.
    pub fn go(&mut self) -> anyhow::Result<()> {
        let stdin = self.child.stdin.as_mut().expect("piped");
        stdin.write_all(b"GO\n")?;
        stdin.flush()?;
        Ok(())
    }

    /// Close the child's stdin: it stops and reports.
    pub fn stop(&mut self) {
        drop(self.child.stdin.take());
    }

    /// Wait for the child to exit.
    pub fn wait(mut self) {
        self.stop();
        let _ = self.child.wait();
    }
}

/// Start `k` children that split `total` connections between them: child `i` gets
/// `--<count_flag> <its share> --first-index <global index of its first>`.
pub fn spawn_shares(k: usize, count_flag: &str, total: usize) -> anyhow::Result<Vec<Kid>> {
    spawn(k, |i| {
        let (first, n) = share(total, k, i);
        vec![
            format!("--{count_flag}"),
            n.to_string(),
            "--first-index".into(),
            first.to_string(),
        ]
    })
}

/// As a child: wait for the coordinator's `GO` (or for stdin to close).
pub fn wait_go() {
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

/// As a child: wait until the coordinator closes stdin.
pub fn wait_stop() {
    let mut sink = String::new();
    while std::io::stdin()
        .read_line(&mut sink)
        .map(|n| n > 0)
        .unwrap_or(false)
    {
        sink.clear();
    }
}

/// As a child: print a line for the coordinator.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// A histogram as one word.
pub fn encode(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    // Serializing into a Vec cannot fail for a valid histogram.
    let _ = V2Serializer::new().serialize(h, &mut bytes);
    STANDARD.encode(bytes)
}

/// The histogram from [`encode`].
pub fn decode(word: &str) -> anyhow::Result<Histogram<u64>> {
    let bytes = STANDARD.decode(word)?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| anyhow::anyhow!("bad histogram from a bench child: {e:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_everything_once() {
        for (total, k) in [(10, 3), (3, 5), (15_000, 4)] {
            let mut next = 0;
            for i in 0..k {
                let (first, n) = share(total, k, i);
                assert_eq!(first, next);
                next += n;
            }
            assert_eq!(next, total);
        }
    }

    #[test]
    fn histograms_survive_the_trip() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for v in [1, 10, 100, 1000, 123_456] {
            h.record(v).unwrap();
        }
        let back = decode(&encode(&h)).unwrap();
        assert_eq!(back.len(), 5);
        assert_eq!(back.value_at_quantile(0.99), h.value_at_quantile(0.99));
    }
}
