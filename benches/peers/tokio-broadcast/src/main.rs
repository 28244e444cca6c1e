//! Broadcast server: every text or binary message any client sends is sent to every
//! connected client. Idiomatic tokio: a task per connection for reading, one for
//! writing, and a `tokio::sync::broadcast` channel between them (a receiver that
//! falls more than 4,096 messages behind skips ahead, like ringway's drop-oldest).
//!
//!   usage: tokio-broadcast [ADDR] [READ_BUFFER_BYTES]
//!
//! ADDR defaults to 127.0.0.1:9100. READ_BUFFER_BYTES sets tungstenite's per-
//! connection read buffer (its default is 128 KiB, which dominates idle memory);
//! omit it for the defaults a user gets without tuning.

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9100".into());
    let read_buffer: Option<usize> = std::env::args().nth(2).and_then(|v| v.parse().ok());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("tokio-broadcast listening on ws://{addr}/");
    let (tx, _) = broadcast::channel::<Message>(4096);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let tx = tx.clone();
        tokio::spawn(async move {
            let config = read_buffer.map(|n| WebSocketConfig::default().read_buffer_size(n));
            let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, config).await else {
                return;
            };
            let (mut sink, mut source) = ws.split();
            let mut rx = tx.subscribe();
            let writer = tokio::spawn(async move {
                loop {
                    match rx.recv().await {
                        Ok(m) => {
                            if sink.send(m).await.is_err() {
                                break;
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
            });
            while let Some(Ok(m)) = source.next().await {
                if m.is_text() || m.is_binary() {
                    let _ = tx.send(m);
                }
            }
            writer.abort();
        });
    }
}
