//! Which deflate, at which level: compression time and ratio for ringway's kind of
//! payloads (a ~300-byte chat message, a ~4 KiB JSON document), raw deflate with no
//! context takeover as permessage-deflate sends it. flate2 over zlib-rs (what ringway
//! uses) against miniz_oxide (flate2's default backend).
//!
//! `cargo bench --bench deflate` prints a table; numbers, not assertions.

use std::hint::black_box;
use std::time::Instant;

use flate2::{Compress, Compression, FlushCompress};

fn chat() -> Vec<u8> {
    br#"{"type":"msg","room":"chat:lobby","seq":48213,"from":"alice","data":{"id":"01J9Z3K8Q4W7","text":"Are we still on for the design review at 3? I pushed the new mockups to the shared folder.","sent_at":"2026-12-02T09:41:07Z","reply_to":null,"mentions":["bob","carol"]}}"#.to_vec()
}

fn document() -> Vec<u8> {
    let mut s = String::from(r#"{"type":"msg","room":"doc:roadmap","seq":912,"data":{"rows":["#);
    for i in 0..40 {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            r#"{{"id":{i},"title":"Item {i}: improve the onboarding flow","owner":"user{}","status":"{}","estimate":{}}}"#,
            i % 7,
            ["open", "in_progress", "done"][i % 3],
            (i * 37) % 13
        ));
    }
    s.push_str("]}}");
    s.into_bytes()
}

/// ns per compression and compressed size, flate2 (zlib-rs) at `level`.
fn zlib_rs(input: &[u8], level: u32, n: u32) -> (f64, usize) {
    let mut c = Compress::new(Compression::new(level), false);
    let mut out = Vec::with_capacity(input.len() + 64);
    let t = Instant::now();
    for _ in 0..n {
        c.reset();
        out.clear();
        c.compress_vec(black_box(input), &mut out, FlushCompress::Sync)
            .unwrap();
    }
    (t.elapsed().as_nanos() as f64 / f64::from(n), out.len() - 4)
}

/// The same with miniz_oxide.
fn miniz(input: &[u8], level: u8, n: u32) -> (f64, usize) {
    use miniz_oxide::deflate::core::{
        CompressorOxide, TDEFLFlush, compress, create_comp_flags_from_zip_params,
    };
    let flags = create_comp_flags_from_zip_params(level.into(), -15, 0);
    let mut c = CompressorOxide::new(flags);
    let mut out = vec![0u8; input.len() + 64];
    let mut len = 0;
    let t = Instant::now();
    for _ in 0..n {
        c.reset();
        let (_, _, written) = compress(&mut c, black_box(input), &mut out, TDEFLFlush::Sync);
        len = written;
    }
    (t.elapsed().as_nanos() as f64 / f64::from(n), len - 4)
}

fn main() {
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = if quick { 200 } else { 20_000 };
    println!("| payload | bytes | engine | level | µs per message | compressed | ratio |");
    println!("|---|---|---|---|---|---|---|");
    for (name, input) in [("chat", chat()), ("document", document())] {
        for level in [1u32, 2, 3, 4, 6, 9] {
            // Alternate, so both see the same machine.
            let mut z = (0.0, 0);
            let mut m = (0.0, 0);
            for _ in 0..3 {
                let a = zlib_rs(&input, level, n);
                let b = miniz(&input, level as u8, n);
                z = (z.0 + a.0 / 3.0, a.1);
                m = (m.0 + b.0 / 3.0, b.1);
            }
            for (engine, (ns, size)) in [("zlib-rs", z), ("miniz_oxide", m)] {
                println!(
                    "| {name} | {} | {engine} | {level} | {:.2} | {size} | {:.2} |",
                    input.len(),
                    ns / 1000.0,
                    input.len() as f64 / size as f64
                );
            }
        }
    }
}
