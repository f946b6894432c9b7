//! Bare sockets against the gateway, for the tests and the benchmark of its limits: WebSockets
//! opened by hand (so the client side costs next to nothing), the process's resident memory,
//! a higher open-files limit, and the gateway's next answer on a signalling WebSocket.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// A signalling WebSocket opened with tungstenite.
pub type Signalling =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// The gateway's next answer on `socket` (within 5 s), or `None` when it closed the socket or
/// said nothing.
pub async fn next_reply(socket: &mut Signalling) -> Option<Value> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let message = tokio::time::timeout_at(deadline.into(), socket.next())
            .await
            .ok()??;
        match message.ok()? {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(&text).ok()?;
                // The resume ticket that comes with a session is not an answer to anything.
                if value["type"] != "session" {
                    return Some(value);
                }
            }
            Message::Close(_) => return None,
            _ => {}
        }
    }
}

/// Opens the signalling WebSocket of `tenant/room` on `http` with a handshake written by hand,
/// and returns the socket once the gateway answered `101 Switching Protocols`; `None` when it
/// answered anything else or not within five seconds.
pub async fn open_websocket(http: SocketAddr, tenant: &str, room: &str) -> Option<TcpStream> {
    let mut stream = TcpStream::connect(http).await.ok()?;
    let request = format!(
        "GET /api/v1/rooms/{tenant}/{room}/signal HTTP/1.1\r\nHost: {http}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut stream))
        .await
        .ok()??;
    head.starts_with("HTTP/1.1 101").then_some(stream)
}

/// Reads a response head, byte by byte so that nothing after it is consumed.
async fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if stream.read(&mut byte).await.ok()? == 0 || head.len() > 16 * 1024 {
            return None;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).ok()
}

/// This process's resident memory in KiB, from `/proc/self/status`.
pub fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            let value = line.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?;
            value.trim().parse().ok()
        })
        .unwrap_or(0)
}

/// Raises this process's open-files limit to `wanted` (or as far as the hard limit allows);
/// returns the limit now in force.
pub fn raise_open_files_limit(wanted: u64) -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    if soft >= wanted {
        return soft;
    }
    let raised = wanted.min(hard);
    match setrlimit(Resource::RLIMIT_NOFILE, raised, hard) {
        Ok(()) => raised,
        Err(_) => soft,
    }
}
