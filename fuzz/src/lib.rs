//! What Treffpunkt's fuzzers feed to the parsers that outside input reaches.
//!
//! Each target takes the fuzzer's bytes the way the outside would hand them over:
//!
//! - [`signalling`]: a browser's message on the signalling WebSocket, as the gateway parses it
//!   (JSON, the display name of a join), converts it to a signal and relays it to the session's
//!   media node, which acts on it (offers and answers are SDP; candidates, viewports, chat).
//! - [`sdp`]: the text of a client's SDP offer, as the media node answers it.
//! - [`datagram`]: datagrams on the media port from a few source addresses, some wrapped as a
//!   STUN binding request that names a live session's username fragment (a fuzzer cannot guess
//!   it), so that they pass the port's demultiplexing and gate and reach the session's STUN
//!   handling.
//! - [`connected`]: datagrams from the addresses of two participants whose sessions completed
//!   ICE and DTLS and carry media (real `rtc` peers in memory, the node's own test harness):
//!   what a participant's address sends reaches its session's DTLS, SRTP and SRTCP.
//! - [`tokens`]: signed grants, attach claims and resume tickets: first as they arrive (the
//!   signature is checked over the bytes received), then whatever of them decodes, signed:
//!   a genuine token must open to what was signed unless it expired.
//! - [`attach`]: the messages of a node's `Attach` stream, length-delimited protobuf, as the
//!   control plane takes them; the registration is signed by the harness when the fuzzer asks
//!   for it (a set low bit of the first byte), so that the messages after it are handled.
//!
//! The binaries under `fuzz/afl` run these under AFL++ (`scripts/fuzz`); the test
//! `tests/corpus.rs` replays the committed corpus and every crash found, so that a crash,
//! once fixed, stays fixed.
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use prost::Message as _;
use treffpunkt_media_node::node::tests::Net;
use treffpunkt_media_node::node::tests::peer::Publish;
use treffpunkt_media_node::{Admission, Command, Event, Node};
use treffpunkt_operator::domain::DisplayName;
use treffpunkt_operator::fleet::Fleet;
use treffpunkt_operator::fleet::attach::AttachService;
use treffpunkt_proto::grant::{GrantError, Keyring, now_unix_ms};
use treffpunkt_proto::signalling::{ClientMessage, ServerMessage, to_signal};
use treffpunkt_proto::v1::{self, signal::Kind as SignalKind};

/// A fuzz target: takes the fuzzer's bytes.
pub type Target = fn(&[u8]);

/// Every target by name, as the fuzzing script and the regression test call them.
pub const TARGETS: &[(&str, Target)] = &[
    ("signalling", signalling),
    ("sdp", sdp),
    ("datagram", datagram),
    ("connected", connected),
    ("tokens", tokens),
    ("attach", attach),
];

/// Runs target `name` on `data`; `false` if there is no such target.
pub fn run(name: &str, data: &[u8]) -> bool {
    match TARGETS.iter().find(|(target, _)| *target == name) {
        Some((_, target)) => {
            target(data);
            true
        }
        None => false,
    }
}

/// A client's offer as browsers make it: audio and video, bundled, ICE and DTLS attributes.
pub const OFFER: &str = include_str!("../corpus/sdp/chromium-offer.sdp");

/// The node's media address in every target.
const ANNOUNCED: &str = "192.0.2.1:10000";
/// Where the fuzzer's datagrams come from.
const SOURCES: [&str; 4] = [
    "198.51.100.1:5000",
    "198.51.100.2:5000",
    "198.51.100.1:5001",
    "[2001:db8::1]:5000",
];

/// A media node with sessions, kept from one input to the next (making one costs more than a
/// run of most inputs).
struct Harness {
    node: Node,
    now: Instant,
    next_session: u64,
    /// The username fragments of the sessions the datagrams may name.
    ufrags: Vec<String>,
}

impl Harness {
    fn new() -> Self {
        let now = Instant::now();
        let announced: SocketAddr = ANNOUNCED.parse().expect("a socket address");
        let mut harness = Self {
            node: Node::new(now, announced, 1000),
            now,
            next_session: 0,
            ufrags: Vec::new(),
        };
        for _ in 0..2 {
            let session = harness.open();
            harness.node.command(now, offer(&session, OFFER));
            if let Some(ufrag) = harness.drain().iter().find_map(|sdp| answer_ufrag(sdp)) {
                harness.ufrags.push(ufrag);
            }
        }
        harness
    }

    /// Opens a new session; returns its id.
    fn open(&mut self) -> String {
        self.next_session += 1;
        let session_id = format!("s{}", self.next_session);
        let admission = Admission {
            session_id: session_id.clone(),
            room: "public/fuzz".to_owned(),
            participant_id: format!("p{}", self.next_session),
            display_name: "Fuzz".to_owned(),
            max_participants: 1000,
            last_n: 0,
            continues: String::new(),
            // The first session moderates, so that fuzzed moderator actions reach the core;
            // every third waits in the lobby.
            moderator: false,
            lobby: self.next_session.is_multiple_of(3),
            first_moderates: true,
        };
        self.node.command(self.now, Command::Open(admission));
        session_id
    }

    fn close(&mut self, session_id: String) {
        self.node.command(self.now, Command::Close { session_id });
        self.drain();
    }

    /// Lets a little time pass, and forgets what the node sends; returns the SDP of its
    /// answers.
    fn drain(&mut self) -> Vec<String> {
        self.now += Duration::from_millis(5);
        self.node.handle_timeout(self.now);
        while self.node.poll_transmit().is_some() {}
        let mut answers = Vec::new();
        while let Some(event) = self.node.poll_event() {
            if let Event::Signal { signal, .. } = event
                && let Some(SignalKind::Answer(answer)) = signal.kind
            {
                answers.push(answer.sdp);
            }
        }
        answers
    }
}

/// How many sessions of the datagram target's node answered the corpus offer (whose username
/// fragments the datagrams can name).
pub fn ufrags_known() -> usize {
    let mut known = 0;
    with_harness(|harness| known = harness.ufrags.len());
    known
}

thread_local! {
    static HARNESS: RefCell<Option<Harness>> = const { RefCell::new(None) };
}

fn with_harness(run: impl FnOnce(&mut Harness)) {
    HARNESS.with(|harness| run(harness.borrow_mut().get_or_insert_with(Harness::new)));
}

fn offer(session_id: &str, sdp: &str) -> Command {
    Command::Signal {
        session_id: session_id.to_owned(),
        signal: v1::Signal::new(SignalKind::Offer(v1::SessionDescription {
            sdp: sdp.to_owned(),
            ..Default::default()
        })),
    }
}

/// The username fragment in an answer.
fn answer_ufrag(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|line| line.trim().strip_prefix("a=ice-ufrag:"))
        .map(str::to_owned)
}

/// The fuzzer's records: a tag byte, a big-endian length of two bytes, and that many bytes
/// (fewer at the end).
fn records(mut data: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (&tag, rest) = data.split_first()?;
        let (length, rest) = match rest {
            [high, low, rest @ ..] => (usize::from(u16::from_be_bytes([*high, *low])), rest),
            _ => (rest.len(), &[][..]),
        };
        let (record, rest) = rest.split_at(length.min(rest.len()));
        data = rest;
        Some((tag, record))
    })
}

/// A browser's message on the signalling WebSocket, through the gateway to the node.
pub fn signalling(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // What the client makes of the gateway's messages.
    if let Ok(message) = serde_json::from_str::<ServerMessage>(text) {
        let _ = serde_json::to_string(&message);
    }
    let Ok(message) = serde_json::from_str::<ClientMessage>(text) else {
        return;
    };
    if let ClientMessage::Join { name, .. } = &message {
        let _ = DisplayName::new(name.as_str());
    }
    let Ok(signal) = to_signal(message) else {
        return;
    };
    with_harness(|harness| {
        let session_id = harness.open();
        let (now, id) = (harness.now, session_id.clone());
        harness.node.command(
            now,
            Command::Signal {
                session_id: id,
                signal,
            },
        );
        harness.drain();
        harness.close(session_id);
    });
}

/// A client's SDP offer, answered by the node.
pub fn sdp(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    with_harness(|harness| {
        let session_id = harness.open();
        let now = harness.now;
        harness.node.command(now, offer(&session_id, text));
        harness.drain();
        harness.close(session_id);
    });
}

/// A STUN binding request (RFC 8489) from the fuzzer's `payload`: its transaction id, a
/// USERNAME that names `ufrag`, and the rest of the payload as further attributes.
fn binding_request(ufrag: &str, payload: &[u8]) -> Vec<u8> {
    let (transaction, attributes) = payload.split_at(payload.len().min(12));
    let username = format!("{ufrag}:fuzz");
    let padded = username.len().div_ceil(4) * 4;
    let length = 4 + padded + attributes.len();
    let mut message = Vec::with_capacity(20 + length);
    message.extend_from_slice(&[0x00, 0x01]);
    message.extend_from_slice(&(length.min(usize::from(u16::MAX)) as u16).to_be_bytes());
    message.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    message.extend_from_slice(transaction);
    message.resize(20, 0);
    message.extend_from_slice(&[0x00, 0x06]);
    message.extend_from_slice(&(username.len() as u16).to_be_bytes());
    message.extend_from_slice(username.as_bytes());
    message.resize(20 + 4 + padded, 0);
    message.extend_from_slice(attributes);
    message
}

/// Datagrams on the media port.
pub fn datagram(data: &[u8]) {
    with_harness(|harness| {
        for (tag, payload) in records(data) {
            let from: SocketAddr = SOURCES[usize::from(tag & 3)]
                .parse()
                .expect("a socket address");
            let named = harness.ufrags.get(usize::from(tag >> 2 & 1)).cloned();
            let datagram = match named {
                Some(ufrag) if tag & 0x80 != 0 => binding_request(&ufrag, payload),
                _ => payload.to_vec(),
            };
            let now = harness.now;
            harness.node.datagram(now, now, from, &datagram);
            if tag & 0x40 != 0 {
                harness.drain();
            }
        }
        harness.drain();
    });
}

thread_local! {
    static CONNECTED: RefCell<Option<Net>> = const { RefCell::new(None) };
}

/// A call of two on the in-memory network: Anna publishes, Ben listens, both connected.
fn call() -> Net {
    let mut net = Net::new(10);
    net.join("anna", Publish::Plain);
    net.join("ben", Publish::Nothing);
    let connected = net.run_until(Duration::from_secs(10), |net| {
        net.peers.iter().all(|peer| peer.connected)
    });
    assert!(connected, "the harness's call connects");
    net
}

/// Whether both participants of the `connected` target's call are connected.
pub fn call_connected() -> bool {
    CONNECTED.with(|net| {
        let mut net = net.borrow_mut();
        net.get_or_insert_with(call)
            .peers
            .iter()
            .all(|peer| peer.connected)
    })
}

/// Datagrams from the participants of a connected call: the tag's low bit says whose.
pub fn connected(data: &[u8]) {
    CONNECTED.with(|net| {
        let mut net = net.borrow_mut();
        let net = net.get_or_insert_with(call);
        for (tag, payload) in records(data) {
            let from = net.peers[usize::from(tag & 1)].address;
            let now = net.now;
            net.node.datagram(now, now, from, payload);
            if tag & 0x40 != 0 {
                net.run_for(Duration::from_millis(5));
            }
        }
        net.run_for(Duration::from_millis(5));
    });
}

/// The key the token targets sign with.
fn token_keys() -> Keyring {
    Keyring::from_secret(b"the fuzzing key, not a real one!")
}

/// Signed tokens: grants, attach claims and resume tickets.
pub fn tokens(data: &[u8]) {
    let keys = token_keys();
    let now = now_unix_ms();
    // As they arrive.
    if let Ok(token) = v1::SignedToken::decode(data) {
        let _ = keys.open_grant(&token, "node-a", now);
        let _ = keys.open_attach(&token, now);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = keys.open_ticket(text, now);
    }
    // Whatever decodes, signed: a genuine token opens to what was signed, unless it expired.
    if let Ok(grant) = v1::Grant::decode(data) {
        let opened = keys.open_grant(&keys.sign_grant(&grant), &grant.node_id, now);
        assert!(opened.as_ref() == Ok(&grant) || grant.expires_at_unix_ms < now);
    }
    if let Ok(claim) = v1::AttachClaim::decode(data) {
        let opened = keys.open_attach(&keys.sign_attach(&claim), now);
        assert!(opened.as_ref() == Ok(&claim) || opened.is_err_and(|e| e == GrantError::Stale));
    }
    if let Ok(ticket) = v1::ResumeTicket::decode(data) {
        let opened = keys.open_ticket(&keys.seal_ticket(&ticket), now);
        assert!(opened.as_ref() == Ok(&ticket) || ticket.expires_at_unix_ms < now);
    }
}

/// The runtime the control plane's handling runs on.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime")
    })
}

/// The messages of one node's `Attach` stream.
pub fn attach(data: &[u8]) {
    let sign = data.first().is_some_and(|first| first & 1 == 1);
    let mut rest = data.get(1..).unwrap_or_default();
    let mut messages = Vec::new();
    while !rest.is_empty() {
        match v1::NodeMessage::decode_length_delimited(&mut rest) {
            Ok(message) => messages.push(message),
            Err(_) => break,
        }
    }
    let keys = token_keys();
    if sign
        && let Some(v1::NodeMessage {
            kind: Some(v1::node_message::Kind::Register(register)),
        }) = messages.first_mut()
    {
        let claim = v1::AttachClaim {
            node_id: register.node_id.clone(),
            instance_id: register.instance_id.clone(),
            issued_at_unix_ms: now_unix_ms(),
        };
        register.proof = Some(keys.sign_attach(&claim));
    }
    let keys = treffpunkt_proto::grant::SharedKeyring::new(keys);
    let service = AttachService::new(std::sync::Arc::new(Fleet::default()), keys);
    let _ = runtime().block_on(service.take_messages(messages));
}
