//! Bad input from outside gets a clear error or is dropped, and a call in progress on the same
//! node keeps flowing: malformed and oversized WebSocket messages, bad SDP, empty and huge
//! display names, random datagrams on the media port, and broken, oversized, half-open and
//! garbage connections to its ICE-TCP port.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use futures::SinkExt;
use serde_json::{Value, json};
use support::sockets::{Signalling, next_reply};
use support::wait_until;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio_tungstenite::tungstenite::Message;
use treffpunkt_client::{Kind, Participant, signal_url};
use treffpunkt_operator::standalone::StandaloneConfig;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A deterministic pseudo-random byte source (xorshift), so a failure can be replayed.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Sends `message` and returns the error code the gateway answers with.
async fn error_code_for(socket: &mut Signalling, message: Message) -> String {
    socket.send(message).await.expect("the socket is open");
    let reply = next_reply(socket).await.expect("an answer");
    assert_eq!(reply["type"], "error", "expected an error, got {reply}");
    reply["code"].as_str().unwrap_or_default().to_owned()
}

fn text(value: Value) -> Message {
    Message::Text(value.to_string().into())
}

fn total(receiver: &Participant, source: &Participant) -> u64 {
    receiver.stats(&source.id, Kind::Audio).packets
        + receiver.stats(&source.id, Kind::Video).packets
}

/// Whether Anna and Ben each receive more than 40 packets from the other within a second.
async fn flows(anna: &Participant, ben: &Participant) -> bool {
    let before = (total(anna, ben), total(ben, anna));
    wait_until(Duration::from_secs(1), || {
        total(anna, ben) > before.0 + 40 && total(ben, anna) > before.1 + 40
    })
    .await
}

/// Malformed and oversized WebSocket messages before joining: each gets its error code.
async fn malformed_messages_are_refused(socket: &mut Signalling) {
    assert_eq!(
        error_code_for(socket, Message::Text("not json".into())).await,
        "bad-message"
    );
    assert_eq!(
        error_code_for(socket, Message::Text("[1,2]".into())).await,
        "bad-message"
    );
    assert_eq!(
        error_code_for(socket, text(json!({"type": "hack"}))).await,
        "bad-message"
    );
    assert_eq!(
        error_code_for(socket, Message::Binary(vec![0u8; 64].into())).await,
        "bad-message"
    );
    assert_eq!(
        error_code_for(socket, text(json!({"type": "offer", "sdp": "v=0"}))).await,
        "not-joined"
    );
    let large = json!({"type": "join", "name": "x".repeat(100 * 1024)});
    assert_eq!(
        error_code_for(socket, text(large)).await,
        "message-too-large"
    );
}

/// Empty, blank, huge and multi-line display names are refused, each with its code.
async fn bad_names_are_refused(socket: &mut Signalling) {
    for (name, code) in [
        (String::new(), "name-empty"),
        ("   ".to_owned(), "name-empty"),
        ("x".repeat(10 * 1024), "name-too-long"),
        ("Eve\nadmin".to_owned(), "name-invalid"),
    ] {
        assert_eq!(
            error_code_for(socket, text(json!({"type": "join", "name": name}))).await,
            code
        );
    }
}

/// Joined after the refusals, then bad SDP and out-of-turn signals, each refused; a frame
/// beyond the hard limit closes this one socket.
async fn bad_signals_after_joining_are_refused(socket: &mut Signalling) {
    socket
        .send(text(json!({"type": "join", "name": "Mallory"})))
        .await
        .unwrap();
    let welcome = next_reply(socket).await.unwrap();
    assert_eq!(
        welcome["type"], "welcome",
        "a refused name may try again: {welcome}"
    );
    let garbage_sdp = json!({"type": "offer", "sdp": "this is not a session description"});
    assert_eq!(error_code_for(socket, text(garbage_sdp)).await, "bad-sdp");
    let many_sections = format!(
        "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n{}",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n".repeat(50)
    );
    assert_eq!(
        error_code_for(socket, text(json!({"type": "offer", "sdp": many_sections}))).await,
        "bad-sdp"
    );
    assert_eq!(
        error_code_for(socket, text(json!({"type": "answer", "sdp": "v=0"}))).await,
        "negotiation"
    );
    assert_eq!(
        error_code_for(socket, text(json!({"type": "join", "name": "again"}))).await,
        "already-joined"
    );
    let huge_sdp = json!({"type": "offer", "sdp": "a".repeat(40 * 1024)});
    assert_eq!(
        error_code_for(socket, text(huge_sdp)).await,
        "message-too-large"
    );
    // A frame beyond the hard limit closes this one socket, and only it.
    let _ = socket
        .send(Message::Text("y".repeat(400 * 1024).into()))
        .await;
    assert!(
        next_reply(socket).await.is_none(),
        "the oversized frame closes the socket"
    );
}

/// Sends 3000 random datagrams to the media port, a quarter each shaped like STUN, RTP and
/// DTLS.
async fn spray_random_datagrams(media: SocketAddr) {
    let attacker = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    let mut noise = Noise(0x5eed_1234_abcd_0001);
    for round in 0..3000usize {
        let len = (noise.next() % 1400) as usize;
        let mut datagram = noise.bytes(len);
        match round % 4 {
            // STUN-shaped, with the magic cookie and a random USERNAME.
            0 if len >= 28 => {
                datagram[0] = 0x00;
                datagram[1] = 0x01;
                datagram[2..4].copy_from_slice(&((len - 20) as u16).to_be_bytes());
                datagram[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
                datagram[20..22].copy_from_slice(&0x0006u16.to_be_bytes());
            }
            // RTP-shaped.
            1 if len >= 12 => datagram[0] = 0x80,
            // DTLS-shaped.
            2 if len >= 13 => datagram[0] = 22,
            _ => {}
        }
        let _ = attacker.send_to(&datagram, media).await;
    }
}

/// Whether the node closes `stream` within `limit` (what it sends first is read and dropped).
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buffer = [0u8; 256];
    let read_all = async { while !matches!(stream.read(&mut buffer).await, Ok(0) | Err(_)) {} };
    tokio::time::timeout(limit, read_all).await.is_ok()
}

/// Opens connections to the ICE-TCP port that break its framing, stall halfway, send random
/// bytes or nothing at all; each must be closed by the node.
async fn abuse_the_tcp_port(port: SocketAddr) {
    let mut noise = Noise(0x7c9_5eed_0002);
    let mut streams = Vec::new();
    let garbage: Vec<(&str, Vec<u8>)> = vec![
        (
            "an oversized frame",
            [&[0xff, 0xff][..], &noise.bytes(1000)].concat(),
        ),
        ("an empty frame", vec![0, 0, 0, 0]),
        (
            "a STUN request that names no session",
            [
                &[0x00, 0x14, 0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42][..],
                &[7; 12],
            ]
            .concat(),
        ),
        (
            "a first frame that is not STUN",
            [&[0x00, 0x64][..], &noise.bytes(100)].concat(),
        ),
        ("random bytes", noise.bytes(5000)),
        ("half a frame", vec![0x00, 0x64, 0x00, 0x01]),
        ("nothing", Vec::new()),
    ];
    for (what, bytes) in garbage {
        let mut stream = TcpStream::connect(port).await.unwrap();
        stream.write_all(&bytes).await.unwrap();
        streams.push((what, stream));
    }
    for (what, mut stream) in streams {
        // A stalled connection has 5 s for its first frame.
        assert!(
            closed_within(&mut stream, Duration::from_secs(10)).await,
            "the node closes a connection that sent {what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_the_call_goes_on() {
    let server = support::calls::on_loopback(StandaloneConfig {
        tcp: Some(SocketAddr::new(LOOPBACK, 0)),
        ..StandaloneConfig::default()
    })
    .await;
    let url = signal_url(server.http, "public", "stammtisch");
    let (anna, ben) = support::calls::anna_and_ben(&url).await;
    assert!(flows(&anna, &ben).await, "the call flows before the abuse");

    let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    malformed_messages_are_refused(&mut socket).await;
    bad_names_are_refused(&mut socket).await;
    bad_signals_after_joining_are_refused(&mut socket).await;
    spray_random_datagrams(server.shards[0].udp).await;
    abuse_the_tcp_port(server.shards[0].tcp.expect("the node takes media over TCP")).await;

    assert!(
        flows(&anna, &ben).await,
        "the call still flows after the abuse"
    );
    assert_eq!(
        server.fleet.nodes().len(),
        1,
        "the media node is still attached"
    );
    // And the node still admits people and forwards to them.
    let cem = Participant::join(&url, "Cem", None)
        .await
        .expect("a new participant joins");
    let cem_receives = wait_until(Duration::from_secs(10), || total(&cem, &anna) > 20).await;
    assert!(cem_receives, "a newcomer receives media after the abuse");
    anna.leave().await;
    ben.leave().await;
    cem.leave().await;
    server.stop();
}
