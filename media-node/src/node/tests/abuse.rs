//! Garbage on the media port during a call: from unknown sources, and forged with a
//! participant's own address as its source.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind::{Audio, Video};

use super::peer::{Arrival, Publish};
use super::{Flood, Net};
use crate::node::Command;
use crate::node::gate::SUMMARY_INTERVAL;

/// A small, fast, deterministic source of garbage.
fn noise(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// The `n`th datagram of garbage, cut from `noise`: random bytes, or shaped like RTP, RTCP, STUN
/// or DTLS as far as their headers go, with random identifiers; every fourth RTP one carries
/// `known_ssrc`, as a forger on the path could.
fn garbage(n: u64, noise: &[u8], random: &mut impl FnMut() -> u64, known_ssrc: u32) -> Vec<u8> {
    let length = 60 + (random() % 1100) as usize;
    let start = (random() % (noise.len() - length) as u64) as usize;
    let mut bytes = noise[start..start + length].to_vec();
    let word = random() as u32;
    match n % 6 {
        0 => {}
        1 => {
            bytes[..2].copy_from_slice(&[0x80, 96]);
            let ssrc = if n % 4 == 1 { known_ssrc } else { word };
            bytes[8..12].copy_from_slice(&ssrc.to_be_bytes());
        }
        2 => {
            let words = ((length - 14) / 4 - 1) as u16;
            bytes[..2].copy_from_slice(&[0x80, 200]);
            bytes[2..4].copy_from_slice(&words.to_be_bytes());
        }
        3 => {
            bytes.truncate(20 + 8);
            bytes[..4].copy_from_slice(&[0, 1, 0, 8]);
            bytes[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
            bytes[20..24].copy_from_slice(&[0, 6, 0, 4]);
        }
        4 => {
            bytes[..3].copy_from_slice(&[23, 0xfe, 0xfd]);
            bytes[11..13].copy_from_slice(&((length - 13) as u16).to_be_bytes());
        }
        _ => bytes[0] = 22,
    }
    bytes
}

/// The longest time between two packets of `arrivals` that arrived within `from..until`.
fn longest_gap(arrivals: &[Arrival], from: Instant, until: Instant) -> Duration {
    let times: Vec<Instant> = arrivals.iter().map(|a| a.at).collect();
    longest_gap_of(&times, from, until)
}

/// The longest time between two of `times` within `from..until`, or from its ends.
fn longest_gap_of(times: &[Instant], from: Instant, until: Instant) -> Duration {
    let times = times
        .iter()
        .copied()
        .filter(|at| (from..until).contains(at));
    let edges = [from].into_iter().chain(times).chain([until]);
    let edges: Vec<Instant> = edges.collect();
    edges
        .windows(2)
        .map(|pair| pair[1].saturating_duration_since(pair[0]))
        .max()
        .unwrap_or_default()
}

#[test]
fn a_flood_of_garbage_from_anywhere_and_from_a_participants_address_does_not_stop_the_call() {
    let mut net = Net::new(10);
    let anna = net.join("anna", Publish::Plain);
    let ben = net.join("ben", Publish::Plain);
    let flowing = net.run_until(Duration::from_secs(6), |net| {
        net.peers[ben].from("p-anna", Video).len() >= 30
            && net.peers[anna].from("p-ben", Video).len() >= 30
    });
    assert!(flowing, "the call is up before the flood");
    let spoofed = net.peers[anna].address;
    let known_ssrc = net.peers[anna].video_ssrcs()[0];
    let mut random = noise(7);
    let pool: Vec<u8> = (0..4096).map(|_| random() as u8).collect();
    let start = net.now;
    let seconds = Duration::from_secs(10);
    net.flood = Some(Flood::new(start, seconds, 20_000, move |n| {
        // Half from addresses the node has never seen, half forged as Anna's.
        let from = if n % 2 == 0 {
            SocketAddr::from(([198, 51, 100, (n % 200) as u8], 1024 + (n % 50_000) as u16))
        } else {
            spoofed
        };
        (from, garbage(n / 2, &pool, &mut random, known_ssrc))
    }));
    net.run_for(seconds);
    let end = net.now;
    assert_eq!(net.flood.as_ref().map(|f| f.sent), Some(200_000));
    for (to, from) in [(ben, "p-anna"), (anna, "p-ben")] {
        for kind in [Audio, Video] {
            let gap = longest_gap(net.peers[to].from(from, kind), start, end);
            assert!(
                gap < Duration::from_secs(1),
                "{from}'s {kind} keeps arriving during the flood: longest gap {gap:?}"
            );
        }
    }
    // A browser stops sending when its consent checks go unanswered for a few seconds; the
    // test peers check every 2 s.
    for (name, peer) in [("Anna", anna), ("Ben", ben)] {
        let address = net.peers[peer].address;
        let answers: Vec<Instant> = net
            .stun_down
            .iter()
            .filter(|(_, to)| *to == address)
            .map(|(at, _)| *at)
            .collect();
        let gap = longest_gap_of(&answers, start, end);
        assert!(
            gap < Duration::from_secs(3),
            "{name}'s consent checks were answered through the flood: longest gap {gap:?}"
        );
    }
    assert_eq!(net.node.session_count(), 2, "nobody was thrown out");
    assert!(net.closed.is_empty(), "no session closed: {:?}", net.closed);
    let (dropped, summaries) = net.node.dropped_datagrams();
    assert!(dropped > 190_000, "the garbage was dropped: {dropped}");
    assert!(
        summaries <= 2,
        "one summary line per 10 s at most: {summaries}"
    );
}

/// A well-formed RTP packet of `ssrc`, numbered `n`, with a payload of noise.
fn rtp_packet(ssrc: u32, n: u64) -> Vec<u8> {
    let mut packet = vec![0x80, 96];
    packet.extend_from_slice(&(n as u16).to_be_bytes());
    packet.extend_from_slice(&(n as u32 * 3000).to_be_bytes());
    packet.extend_from_slice(&ssrc.to_be_bytes());
    packet.extend((0..100).map(|i| (n as u8).wrapping_mul(31).wrapping_add(i)));
    packet
}

#[test]
fn what_a_departed_participant_s_browser_still_sends_is_no_warning_and_garbage_still_is() {
    let mut net = Net::new(10);
    let anna = net.join("anna", Publish::Plain);
    let ben = net.join("ben", Publish::Plain);
    let flowing = net.run_until(Duration::from_secs(6), |net| {
        net.peers[anna].from("p-ben", Video).len() >= 30
    });
    assert!(flowing, "the call is up");
    let (dropped_before, warnings_before) = net.node.dropped_datagrams();
    // Ben leaves; his browser's packets already on their way, and those it sends before it
    // hears of the close, arrive after his session is gone.
    let (address, ssrc) = (net.peers[ben].address, net.peers[ben].video_ssrcs()[0]);
    let session_id = net.peers[ben].session_id.clone();
    let now = net.now;
    net.node.command(now, Command::Close { session_id });
    net.flood = Some(Flood::new(
        now,
        Duration::from_millis(300),
        1000,
        move |n| (address, rtp_packet(ssrc, n)),
    ));
    net.run_for(SUMMARY_INTERVAL / 2);
    let (dropped, warnings) = net.node.dropped_datagrams();
    assert!(
        dropped >= dropped_before + 300,
        "they were dropped: {dropped}"
    );
    assert_eq!(warnings, warnings_before, "a leave is no reason to warn");
    // Garbage from an address no session has shown still is.
    let stranger = SocketAddr::from(([198, 51, 100, 7], 4000));
    net.flood = Some(Flood::new(
        net.now,
        Duration::from_millis(100),
        1000,
        move |n| (stranger, rtp_packet(7, n)),
    ));
    net.run_for(Duration::from_secs(2));
    let (_, warnings) = net.node.dropped_datagrams();
    assert_eq!(
        warnings,
        warnings_before + 1,
        "garbage is warned about at once: the leave's summary did not hold it back"
    );
}
