//! What a join costs the media node, as a meeting forms: `N` participants, each with a
//! microphone and a one-layer camera (the load generator's meeting), join one after another,
//! and each join runs until the joiner and everyone before it receive each other's audio and
//! video.
//!
//! The node runs in memory (the harness of its tests: real `rtc` peers, ICE, DTLS, SRTP and the
//! node's interceptor chains, on a virtual clock). Counted, per join:
//! - `signalling`: the node's time in the control plane's commands: the joiner's admission and
//!   offer (the node's answer), everyone's answers to the node's offers, and the offers those
//!   commands make the node send (one to each participant already in the room, listing the
//!   joiner's tracks beside everyone else's, and one to the joiner listing everyone's; the
//!   offers the node keeps for a later turn of its loop count under `node` only);
//! - `node`: all of the node's time from the join until everyone received everyone's video,
//!   forwarding and timers included;
//! - `longest call`: the longest of the node's calls in that time (a command, a datagram, a
//!   timer): how long a live node's loop forwarded nothing at a stretch;
//! - `until heard` and `until seen`: virtual time from the join until everyone received
//!   everyone's audio, and everyone's video (ICE's and DTLS's pace, the network's 1 ms each
//!   way, the node's wait for a keyframe and for room in a new line's estimate; no CPU time
//!   enters them);
//! - the size of the largest offer the node sent to anyone in that join.
//!
//! In a live node the signalling runs on the loop that forwards media, so its time is time the
//! loop is not forwarding, and a join behind another waits for it.
//!
//! `cargo bench -p treffpunkt-media-node --features testing --bench joining [-- N ROUNDS]`
//! (defaults: a meeting of 16, 3 rounds)

use std::time::{Duration, Instant};

use rtc::rtp_transceiver::rtp_sender::RtpCodecKind;
use treffpunkt_media_node::node::tests::Net;
use treffpunkt_media_node::node::tests::peer::Publish;
use treffpunkt_proto::v1::signal::Kind;

mod common;
use common::{median, numbers};

/// The allocator of the binaries that forward media, so that the node is measured as it runs.
#[global_allocator]
static ALLOCATOR: treffpunkt_media_node::Allocator = treffpunkt_media_node::Allocator;

/// How long a join may take in virtual time before the bench gives up on it.
const JOIN_LIMIT: Duration = Duration::from_secs(10);

/// What one join cost.
#[derive(Clone, Copy, Default)]
struct Join {
    signalling: Duration,
    node: Duration,
    longest_call: Duration,
    until_heard: Duration,
    until_met: Duration,
    largest_offer: usize,
}

/// The meeting's size and the rounds from the command line (numbers only: the options cargo
/// adds are skipped), or why they cannot be measured.
fn shape() -> Result<(usize, usize), String> {
    let arguments = numbers();
    let participants = arguments.first().copied().unwrap_or(16);
    let rounds = arguments.get(1).copied().unwrap_or(3);
    if !(2..=40).contains(&participants) {
        return Err(format!("{participants} participants: from 2 to 40"));
    }
    if !(1..=50).contains(&rounds) {
        return Err(format!("{rounds} rounds: from 1 to 50"));
    }
    Ok((participants, rounds))
}

/// Whether `a` receives `b`'s packets of `kind` and `b` receives `a`'s.
fn met(net: &Net, a: usize, b: usize, kind: RtpCodecKind) -> bool {
    let id = |index: usize| format!("p-{index}");
    [(a, b), (b, a)]
        .into_iter()
        .all(|(receiver, sender)| !net.peers[receiver].from(&id(sender), kind).is_empty())
}

/// The size of the largest offer any participant received after its first `seen` signals.
fn largest_offer(net: &Net, seen: &[usize]) -> usize {
    net.peers
        .iter()
        .zip(seen.iter().copied().chain(std::iter::repeat(0)))
        .flat_map(|(peer, seen)| peer.signals.iter().skip(seen))
        .filter_map(|kind| match kind {
            Kind::Offer(offer) => Some(offer.sdp.len()),
            _ => None,
        })
        .max()
        .unwrap_or(0)
}

/// A meeting of `participants` formed one join at a time; what each join cost.
fn form_meeting(participants: usize) -> Result<Vec<Join>, String> {
    let seats = u32::try_from(participants).map_err(|_| "too many participants".to_owned())?;
    let mut net = Net::new(seats);
    net.room_limit = seats;
    let mut joins = Vec::with_capacity(participants);
    for joiner in 0..participants {
        let seen: Vec<usize> = net.peers.iter().map(|peer| peer.signals.len()).collect();
        let (commands, busy, at) = (net.node_commands, net.node_busy, net.now);
        net.node_longest_call = Duration::ZERO;
        let index = net.join(&joiner.to_string(), Publish::Plain);
        let everyone =
            |kind| move |net: &Net| (0..index).all(|earlier| met(net, earlier, index, kind));
        let mut until = [Duration::ZERO; 2];
        for (kind, until) in [RtpCodecKind::Audio, RtpCodecKind::Video]
            .into_iter()
            .zip(&mut until)
        {
            if !net.run_until(JOIN_LIMIT, everyone(kind)) {
                return Err(format!(
                    "join {} of {participants}: not everyone's {kind} arrived within \
                     {JOIN_LIMIT:?}",
                    joiner + 1
                ));
            }
            *until = net.now - at;
        }
        joins.push(Join {
            signalling: net.node_commands - commands,
            node: net.node_busy - busy,
            longest_call: net.node_longest_call,
            until_heard: until[0],
            until_met: until[1],
            largest_offer: largest_offer(&net, &seen),
        });
    }
    Ok(joins)
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn main() {
    let (participants, rounds) = match shape() {
        Ok(shape) => shape,
        Err(why) => {
            eprintln!("joining: {why}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let mut measured: Vec<Vec<Join>> = Vec::with_capacity(rounds);
    for round in 0..rounds {
        match form_meeting(participants) {
            Ok(joins) => {
                let signalling: Duration = joins.iter().map(|join| join.signalling).sum();
                println!(
                    "round {}: the meeting of {participants} formed, the node's signalling {:.1} ms \
                     in all",
                    round + 1,
                    ms(signalling)
                );
                measured.push(joins);
            }
            Err(why) => {
                eprintln!("joining: round {}: {why}", round + 1);
                std::process::exit(1);
            }
        }
    }
    println!(
        "\nmedians of {rounds} rounds, a meeting of {participants} (microphone and one-layer camera \
         each)\n"
    );
    println!(
        "| join | node's signalling ms | node ms | longest call ms | until heard ms | until seen \
         ms | largest offer bytes |"
    );
    println!("|--:|--:|--:|--:|--:|--:|--:|");
    for join in 0..participants {
        let number = join + 1;
        let shown = number <= 2 || number == participants || number.is_power_of_two();
        if !shown {
            continue;
        }
        let of = |value: fn(&Join) -> f64| {
            median(
                &mut measured
                    .iter()
                    .map(|round| value(&round[join]))
                    .collect::<Vec<_>>(),
            )
        };
        println!(
            "| {number} | {:.2} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} |",
            of(|j| ms(j.signalling)),
            of(|j| ms(j.node)),
            of(|j| ms(j.longest_call)),
            of(|j| ms(j.until_heard)),
            of(|j| ms(j.until_met)),
            of(|j| j.largest_offer as f64),
        );
    }
    let total = median(
        &mut measured
            .iter()
            .map(|joins| joins.iter().map(|join| ms(join.signalling)).sum())
            .collect::<Vec<f64>>(),
    );
    println!(
        "\nthe node's signalling for the whole meeting: {total:.1} ms (median); bench took {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
