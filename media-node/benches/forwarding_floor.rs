//! What forwarding one packet costs the node outside the kernel, against the floor of a send
//! path that does not run each packet through `rtc`'s handler pipeline, and against one
//! `sendto`, each measured in turn in the same run (rounds alternate):
//!
//! - `node`: the media node in memory (the harness of its tests: real `rtc` peers, ICE, DTLS,
//!   SRTP and the node's interceptor chains; datagrams travel through a queue, not sockets),
//!   one publisher sending `RATE` video packets a second of `BYTES` bytes (and audio every
//!   20 ms) to `N` subscribers. Counted: the node's own calls (datagrams in, timers, what it
//!   sends out), per RTP packet it sent to a subscriber. No kernel time: no socket is involved.
//! - `floor`: what forwarding needs at the least per packet, with `rtc`'s own SRTP: the
//!   publisher's packet decrypted, its arrival noted, and for each subscriber the header
//!   rewritten (SSRC, sequence number, timestamp, the leg's own transport-wide sequence
//!   number), marshalled with the payload into a reused buffer, sealed with AES-128 in counter
//!   mode and an HMAC-SHA1 tag (the profile the node negotiates), and noted in a transport-wide send history, a send
//!   buffer for retransmissions and the sender report's counts. This is what the node would
//!   cost if `rtc` offered a write path that does these steps in place of its handler and
//!   interceptor queues; nothing of it is the node's code.
//! - `sendto`: one datagram of `BYTES` bytes to a receiver on loopback that another thread
//!   drains, kernel included: what the node's cost per packet is set against.
//!
//! `cargo bench -p treffpunkt-media-node --features testing --bench forwarding_floor
//! [-- N RATE BYTES ROUNDS]` (defaults: 10 subscribers, 1,000 packets a second, 1,000 bytes,
//! 5 rounds)

use std::hint::black_box;
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::crypto::default_provider;
use rtc::rtp;
use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use rtc::shared::marshal::{Marshal, Unmarshal};
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;
use treffpunkt_media_node::node::tests::Net;

mod common;
use common::{median, numbers};
use treffpunkt_media_node::node::tests::peer::Publish;

/// The allocator of the binaries that forward media, so that the node is measured as it runs.
#[global_allocator]
static ALLOCATOR: treffpunkt_media_node::Allocator = treffpunkt_media_node::Allocator;

/// Virtual time of the call measured in one round.
const NODE_ROUND: Duration = Duration::from_secs(2);
/// Packets the publisher sends in one round of the floor.
const FLOOR_PACKETS: usize = 4_000;
/// Datagrams sent in one round of `sendto`.
const SENDTO_DATAGRAMS: usize = 40_000;
/// The transport-wide sequence number's extension id on every leg.
const TRANSPORT_CC_ID: u8 = 3;
/// Entries of the send history and of the retransmission buffer of each leg.
const HISTORY: usize = 4_096;
const RETRANSMISSIONS: usize = 512;
/// The largest payload measured: a packet with its header and tag stays within a datagram.
const MAX_BYTES: usize = 1_200;

struct Shape {
    subscribers: usize,
    rate: u32,
    bytes: usize,
    rounds: usize,
}

/// The shape from the command line (numbers only: the options cargo adds are skipped), or why
/// it cannot be measured.
fn shape() -> Result<Shape, String> {
    let arguments = numbers();
    let at = |index: usize, default: usize| arguments.get(index).copied().unwrap_or(default);
    let shape = Shape {
        subscribers: at(0, 10),
        rate: u32::try_from(at(1, 1_000)).unwrap_or(u32::MAX),
        bytes: at(2, 1_000),
        rounds: at(3, 5),
    };
    if !(1..=200).contains(&shape.subscribers) {
        return Err(format!("{} subscribers: from 1 to 200", shape.subscribers));
    }
    if !(1..=20_000).contains(&shape.rate) {
        return Err(format!("{} packets a second: from 1 to 20,000", shape.rate));
    }
    if !(100..=MAX_BYTES).contains(&shape.bytes) {
        return Err(format!("{} bytes: from 100 to {MAX_BYTES}", shape.bytes));
    }
    if !(1..=100).contains(&shape.rounds) {
        return Err(format!("{} rounds: from 1 to 100", shape.rounds));
    }
    Ok(shape)
}

/// A call in which every subscriber receives the publisher's camera at its full rate.
fn connected_call(shape: &Shape) -> Net {
    let seats = u32::try_from(shape.subscribers + 1).expect("a number of subscribers that fits");
    let mut net = Net::new(seats);
    net.room_limit = net.room_limit.max(seats);
    let publish = Publish::Steady {
        per_second: shape.rate,
        bytes: shape.bytes,
    };
    net.join("sender", publish);
    let subscribers: Vec<usize> = (0..shape.subscribers)
        .map(|index| net.join(&format!("s{index}"), Publish::Nothing))
        .collect();
    let full_rate = |net: &Net| {
        subscribers.iter().all(|&index| {
            let video = net.peers[index].from("p-sender", RtpCodecKind::Video);
            let last_second = video
                .iter()
                .rev()
                .take_while(|arrival| net.now - arrival.at < Duration::from_secs(1))
                .count();
            last_second as f64 >= 0.99 * f64::from(shape.rate)
        })
    };
    assert!(
        net.run_until(Duration::from_secs(60), full_rate),
        "every subscriber receives the camera at its full rate within a minute"
    );
    net
}

/// The node's time per RTP packet it sent to a subscriber over one round, and the share of
/// the publisher's packets that reached each subscriber.
fn node_round(net: &mut Net, shape: &Shape) -> (f64, f64) {
    let (busy, sent) = (net.node_busy, net.rtp_down);
    net.run_for(NODE_ROUND);
    let packets = net.rtp_down - sent;
    let expected = (f64::from(shape.rate) + 50.0) * NODE_ROUND.as_secs_f64();
    let delivered = packets as f64 / shape.subscribers as f64 / expected;
    let per_packet = (net.node_busy - busy).as_secs_f64() * 1e6 / packets.max(1) as f64;
    (per_packet, delivered)
}

/// One subscriber's leg in the floor: its SRTP context and what the node keeps per leg.
struct Leg {
    context: Context,
    ssrc: u32,
    sequence_offset: u16,
    timestamp_offset: u32,
    transport_sequence: u16,
    history: Vec<(u16, u16, Instant)>,
    retransmissions: Vec<Option<Bytes>>,
    packets: u32,
    octets: u32,
}

fn context(seed: u8) -> Context {
    let provider = default_provider().expect("a crypto provider");
    let profile = ProtectionProfile::Aes128CmHmacSha1_80;
    let key: Vec<u8> = (0..profile.key_len())
        .map(|index| index as u8 ^ seed)
        .collect();
    let salt: Vec<u8> = (0..profile.salt_len())
        .map(|index| index as u8 ^ seed.rotate_left(3))
        .collect();
    Context::new(&key, &salt, profile, None, None, provider.crypto()).expect("an SRTP context")
}

/// The publisher's SRTP packets of one round, sealed before the clock runs.
fn published(publisher: &mut Context, count: usize, bytes: usize, first: u16) -> Vec<BytesMut> {
    let payload = Bytes::from(vec![0x5a; bytes]);
    (0..count)
        .map(|index| {
            let header = rtp::Header {
                version: 2,
                marker: true,
                payload_type: 96,
                sequence_number: first.wrapping_add(index as u16),
                timestamp: index as u32 * 90,
                ssrc: 0x1234,
                ..Default::default()
            };
            let packet = rtp::Packet {
                header: header.clone(),
                payload: payload.clone(),
            };
            let plain = packet.marshal().expect("a packet marshals");
            publisher
                .encrypt_rtp_with_header(&plain, &header)
                .expect("the publisher seals")
        })
        .collect()
}

/// Forwards each of `datagrams` to every leg as the floor does; the time per forwarded packet.
fn floor_round(receiver: &mut Context, legs: &mut [Leg], datagrams: &[BytesMut]) -> f64 {
    let mut arrivals = vec![(0u16, Instant::now()); HISTORY];
    let mut buffer = vec![0u8; 1_500];
    let mut out: Vec<BytesMut> = Vec::with_capacity(legs.len());
    let started = Instant::now();
    for datagram in datagrams {
        let now = Instant::now();
        let plain = receiver
            .decrypt_rtp(datagram)
            .expect("the publisher's packet opens");
        let packet = rtp::Packet::unmarshal(&mut &plain[..]).expect("an RTP packet");
        let sequence = packet.header.sequence_number;
        arrivals[usize::from(sequence) % HISTORY] = (sequence, now);
        for leg in legs.iter_mut() {
            let mut header = rtp::Header {
                version: 2,
                marker: packet.header.marker,
                payload_type: packet.header.payload_type,
                sequence_number: sequence.wrapping_add(leg.sequence_offset),
                timestamp: packet.header.timestamp.wrapping_add(leg.timestamp_offset),
                ssrc: leg.ssrc,
                ..Default::default()
            };
            leg.transport_sequence = leg.transport_sequence.wrapping_add(1);
            let wide = leg.transport_sequence.to_be_bytes();
            header
                .set_extension(TRANSPORT_CC_ID, Bytes::copy_from_slice(&wide))
                .expect("the extension fits");
            let header_length = header.marshal_to(&mut buffer).expect("the header fits");
            let length = header_length + packet.payload.len();
            buffer[header_length..length].copy_from_slice(&packet.payload);
            let sealed = leg
                .context
                .encrypt_rtp_with_header(&buffer[..length], &header)
                .expect("the leg seals");
            let size = u16::try_from(sealed.len()).unwrap_or(u16::MAX);
            let slot = usize::from(leg.transport_sequence) % HISTORY;
            leg.history[slot] = (leg.transport_sequence, size, now);
            let sent = header.sequence_number;
            leg.retransmissions[usize::from(sent) % RETRANSMISSIONS] = Some(packet.payload.clone());
            leg.packets = leg.packets.wrapping_add(1);
            leg.octets = leg.octets.wrapping_add(packet.payload.len() as u32);
            out.push(sealed);
        }
        black_box(&out);
        out.clear();
    }
    let elapsed = started.elapsed();
    // What was noted is read, so that no step of the floor is optimised away.
    black_box((&arrivals, &*legs));
    elapsed.as_secs_f64() * 1e6 / (datagrams.len() * legs.len()) as f64
}

/// One `sendto` of `bytes` bytes to a drained receiver on loopback, in µs.
fn sendto_round(bytes: usize) -> f64 {
    let receiver = UdpSocket::bind("127.0.0.1:0").expect("a loopback socket");
    receiver
        .set_read_timeout(Some(Duration::from_millis(20)))
        .expect("a read timeout");
    let to = receiver.local_addr().expect("its address");
    let stop = Arc::new(AtomicBool::new(false));
    let drain = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut buffer = [0u8; 2_048];
            while !stop.load(Ordering::Relaxed) {
                let _ = receiver.recv(&mut buffer);
            }
        })
    };
    let sender = UdpSocket::bind("127.0.0.1:0").expect("a loopback socket");
    let datagram = vec![0x5a; bytes];
    let started = Instant::now();
    for _ in 0..SENDTO_DATAGRAMS {
        // A full receive buffer drops the datagram; the send costs the same.
        let _ = sender.send_to(&datagram, to);
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let _ = drain.join();
    elapsed.as_secs_f64() * 1e6 / SENDTO_DATAGRAMS as f64
}

fn main() {
    let shape = match shape() {
        Ok(shape) => shape,
        Err(problem) => {
            eprintln!("forwarding floor: {problem} (arguments: N RATE BYTES ROUNDS)");
            std::process::exit(2);
        }
    };
    println!(
        "forwarding floor: {} subscribers, {} packets a second of {} bytes, {} rounds",
        shape.subscribers, shape.rate, shape.bytes, shape.rounds
    );
    let mut net = connected_call(&shape);
    let (mut publisher, mut receiver) = (context(0), context(0));
    let mut legs: Vec<Leg> = (0..shape.subscribers)
        .map(|index| Leg {
            context: context(index as u8 + 1),
            ssrc: 0x1000 + index as u32,
            sequence_offset: index as u16 * 7,
            timestamp_offset: index as u32 * 1_000,
            transport_sequence: 0,
            history: vec![(0, 0, Instant::now()); HISTORY],
            retransmissions: vec![None; RETRANSMISSIONS],
            packets: 0,
            octets: 0,
        })
        .collect();
    let (mut node, mut floor, mut sendto) = (Vec::new(), Vec::new(), Vec::new());
    println!("round  node µs/pkt (delivered)  floor µs/pkt  sendto µs");
    for round in 0..shape.rounds {
        let (per_packet, delivered) = node_round(&mut net, &shape);
        let first = (round * FLOOR_PACKETS) as u16; // wraps as a sender's numbers do
        let datagrams = published(&mut publisher, FLOOR_PACKETS, shape.bytes, first);
        let floor_cost = floor_round(&mut receiver, &mut legs, &datagrams);
        let sendto_cost = sendto_round(shape.bytes);
        println!(
            "{round:>5}  {per_packet:>11.2} ({:>5.1} %)  {floor_cost:>12.2}  {sendto_cost:>9.2}",
            delivered * 100.0
        );
        node.push(per_packet);
        floor.push(floor_cost);
        sendto.push(sendto_cost);
    }
    let (node, floor, sendto) = (median(&mut node), median(&mut floor), median(&mut sendto));
    println!(
        "median: node {node:.2} µs, floor {floor:.2} µs, sendto {sendto:.2} µs; \
         node ÷ floor {:.1}, node ÷ sendto {:.2}, floor ÷ sendto {:.2}",
        node / floor,
        node / sendto,
        floor / sendto
    );
}
