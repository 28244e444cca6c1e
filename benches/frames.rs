//! Micro-benchmarks of the per-message hot path: encoding a broadcast frame,
//! decoding and unmasking client frames, and queueing one shared frame to 10,000
//! connections. `cargo bench --bench frames`.

use std::hint::black_box;
use std::rc::Rc;

use bytes::Bytes;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use ringway::conn::outq::{Arrival, Out, OutQueue, SharedFrame};
use ringway::protocol::msg_frame;
use ringway::ws::frame::{Decoder, Limits, unmask};
use serde_json::value::RawValue;

/// A masked client text frame carrying `payload`.
fn client_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x11, 0x22, 0x33, 0x44];
    let mut out = vec![0x81];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

fn encode(c: &mut Criterion) {
    let data = RawValue::from_string(format!(r#"{{"text":"{}"}}"#, "x".repeat(100))).unwrap();
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("msg_frame_128B", |b| {
        b.iter(|| msg_frame(black_box("chat:42"), black_box(18), None, None, &data))
    });
    g.finish();
}

fn decode(c: &mut Criterion) {
    let limits = Limits {
        max_frame: 1 << 20,
        max_message: 1 << 20,
        deflate: false,
    };
    let mut g = c.benchmark_group("decode");
    for size in [64usize, 1024, 16 * 1024] {
        let frame = client_frame(&vec![b'a'; size]);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("text_{size}B"), |b| {
            b.iter_batched_ref(
                || frame.clone(),
                |buf| {
                    let mut d = Decoder::default();
                    let r = d.decode(buf, limits).unwrap().unwrap();
                    black_box(r.0)
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn masking(c: &mut Criterion) {
    let mut g = c.benchmark_group("unmask");
    let mut buf = vec![0x5au8; 64 * 1024];
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("64KiB", |b| {
        b.iter(|| unmask(black_box(&mut buf), [1, 2, 3, 4]))
    });
    g.finish();
}

fn fanout(c: &mut Criterion) {
    let mut g = c.benchmark_group("fanout");
    let n = 10_000;
    g.throughput(Throughput::Elements(n as u64));
    let frame = Bytes::from(vec![b'm'; 128]);
    g.bench_function("queue_shared_frame_to_10k", |b| {
        b.iter_batched_ref(
            || (0..n).map(|_| OutQueue::default()).collect::<Vec<_>>(),
            |queues| {
                let shared = Rc::new(SharedFrame {
                    bytes: frame.clone(),
                    tag: 0,
                    born: Arrival::at_ns(0),
                });
                for q in queues.iter_mut() {
                    q.push(Out::Shared(shared.clone()));
                }
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

criterion_group!(benches, encode, decode, masking, fanout);
criterion_main!(benches);
