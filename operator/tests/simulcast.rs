//! Simulcast, the downlink estimate and the active speaker through standalone mode, with real
//! UDP, DTLS and SRTP between the media node and Rust clients:
//!
//! - a publisher sends its camera in three layers; a subscriber that shows it small gets the
//!   lowest, one that says nothing gets the top, and the layer nobody wants stops at the
//!   publisher and comes back when wanted;
//! - a subscriber on a 400 kbit/s line gets the lowest layer while another gets the top, and
//!   moves up within 5 s once the line clears. The line is real: a network namespace joined to
//!   this host by a veth pair, with a token-bucket qdisc on the host's end (netem is not
//!   available on these machines). Creating it needs root and iproute2, as CI has; set
//!   `TREFFPUNKT_SKIP_NETNS=1` to skip that test elsewhere;
//! - whoever speaks is announced to everyone within a second.
//!
//! The timings they measure are printed (run with `--nocapture`); only the limits are
//! asserted.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use support::{netns, wait_until};
use treffpunkt_client::{
    AUDIO_FRAME_MS, Joining, Kind, Outgoing, OutgoingAudio, OutgoingVideo, Participant, SILENCE,
    TrackStats, VideoState, signal_url,
};
use treffpunkt_operator::standalone::{self, Standalone, StandaloneConfig};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// The layers, lowest first.
const LOW: u8 = 0;
const MIDDLE: u8 = 1;
const TOP: u8 = 2;
/// An audio level that counts as speech (RFC 6464, -25 dBov).
const SPEAKING: u8 = 25;

/// One test of this file at a time: each runs a call of several Mbit/s, and the timings they
/// check should not depend on the others' load.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Standalone mode with its gateway and media port on `ip`. The node's log goes to stderr as
/// `RUST_LOG` says (nothing without it).
async fn start(ip: IpAddr) -> Standalone {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    standalone::start(StandaloneConfig {
        http: SocketAddr::new(ip, 0),
        grpc: SocketAddr::new(LOOPBACK, 0),
        udp: SocketAddr::new(ip, 0),
        announce_ip: ip,
        max_participants: 50,
        ..StandaloneConfig::default()
    })
    .await
    .expect("standalone mode starts")
}

/// A camera in three layers of 150k, 500k and 1.5 Mbit/s (320x180, 640x360, 1280x720) at 30
/// fps, a keyframe every 3 s three times the size of other frames, with a silent microphone.
fn camera() -> Outgoing {
    Outgoing {
        audio: Some(microphone()),
        video: Some(OutgoingVideo {
            fps: 30,
            bitrate: 1_500_000,
            keyframe_interval: 90,
            keyframe_ratio: 3,
            max_packet_size: 1100,
            simulcast: true,
        }),
    }
}

fn microphone() -> OutgoingAudio {
    OutgoingAudio {
        packet_size: 120,
        level: SILENCE,
        frame_ms: AUDIO_FRAME_MS,
        dtx: false,
    }
}

fn joining(outgoing: Option<Outgoing>, local_ip: IpAddr) -> Joining {
    Joining {
        outgoing,
        local_ip: Some(local_ip),
        ..Joining::default()
    }
}

/// The layer of `source`'s camera that `receiver` gets now.
fn layer(receiver: &Participant, source: &Participant) -> Option<u8> {
    let video = receiver.stats(&source.id, Kind::Video);
    assert_eq!(
        video.corrupt, 0,
        "{} got altered video from {}",
        receiver.id, source.id
    );
    video.layer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_tile_gets_the_lowest_layer_and_an_unused_layer_stops_at_the_publisher() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = start(LOOPBACK).await;
    let url = signal_url(server.http, "public", "kacheln");
    let anna = Participant::join_as(&url, "Anna", joining(Some(camera()), LOOPBACK))
        .await
        .expect("Anna joins with her camera in three layers");
    let ben = Participant::join_as(&url, "Ben", joining(None, LOOPBACK))
        .await
        .expect("Ben joins");
    let cem = Participant::join_as(&url, "Cem", joining(None, LOOPBACK))
        .await
        .expect("Cem joins");
    // Ben shows Anna in a small tile; Cem says nothing, so nothing limits the size for him.
    ben.set_viewports(&[(&anna.id, 150)]);
    let asked = Instant::now();

    let settled = wait_until(Duration::from_secs(30), || {
        layer(&ben, &anna) == Some(LOW) && layer(&cem, &anna) == Some(TOP)
    })
    .await;
    assert!(
        settled,
        "Ben (150 px tall) gets the 180p layer and Cem the 720p one: Ben {:?}, Cem {:?}",
        layer(&ben, &anna),
        layer(&cem, &anna)
    );
    eprintln!(
        "after joining: Ben on the lowest layer {:?}, Cem on the top {:?}",
        ben.stats(&anna.id, Kind::Video)
            .on_layer_since(LOW)
            .map(|at| at - asked),
        cem.stats(&anna.id, Kind::Video)
            .on_layer_since(TOP)
            .map(|at| at - asked),
    );

    // Nobody wants the middle layer: Anna is told to stop it, and does.
    let told = wait_until(Duration::from_secs(15), || {
        anna.notices()
            .publish_layers
            .get("camera")
            .is_some_and(|(active, _)| active == &[true, false, true])
    })
    .await;
    assert!(
        told,
        "Anna is told to stop the middle layer: {:?}",
        anna.notices().publish_layers
    );
    assert_eq!(anna.active_layers(), [true, false, true]);
    let before = anna.sent_layer(usize::from(MIDDLE));
    // That a layer is not sent is no event to wait for: a bounded wait of half a second (15
    // frames) shows it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        anna.sent_layer(usize::from(MIDDLE)),
        before,
        "the middle layer is not sent while nobody needs it"
    );

    // Ben enlarges the tile: the middle layer comes back, starting with a keyframe, and he gets
    // it.
    ben.set_viewports(&[(&anna.id, 360)]);
    let enlarged = Instant::now();
    let resumed = wait_until(Duration::from_secs(15), || {
        layer(&ben, &anna) == Some(MIDDLE)
    })
    .await;
    assert!(
        resumed,
        "Ben gets the 360p layer once his tile is 360 px tall: {:?}, Anna sends {:?}",
        layer(&ben, &anna),
        anna.active_layers()
    );
    eprintln!(
        "Ben on the middle layer {:?} after enlarging his tile",
        ben.stats(&anna.id, Kind::Video)
            .on_layer_since(MIDDLE)
            .map(|at| at - enlarged)
    );
    assert_eq!(anna.active_layers(), [true, true, true]);
    assert_eq!(
        layer(&cem, &anna),
        Some(TOP),
        "Cem keeps the top layer throughout"
    );
    assert_eq!(ben.stats(&anna.id, Kind::Audio).corrupt, 0);

    for participant in [anna, ben, cem] {
        participant.leave().await;
    }
    server.stop();
}

/// When every one of `listeners` was told that `speaker` is the dominant speaker, measured from
/// `since`; `None` for those not told within `limit`.
async fn announced(
    listeners: &[&Participant],
    speaker: &Participant,
    since: Instant,
    limit: Duration,
) -> Vec<Option<Duration>> {
    let told = |p: &Participant| {
        p.notices()
            .dominant_speaker
            .filter(|(id, at)| *id == speaker.id && *at >= since)
            .map(|(_, at)| at - since)
    };
    wait_until(limit, || listeners.iter().all(|p| told(p).is_some())).await;
    listeners.iter().map(|p| told(p)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whoever_speaks_is_announced_to_everyone_within_a_second() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let server = start(LOOPBACK).await;
    let url = signal_url(server.http, "public", "rede");
    let voice = || {
        Some(Outgoing {
            audio: Some(microphone()),
            video: None,
        })
    };
    let dora = Participant::join_as(&url, "Dora", joining(voice(), LOOPBACK))
        .await
        .expect("Dora joins");
    let emil = Participant::join_as(&url, "Emil", joining(voice(), LOOPBACK))
        .await
        .expect("Emil joins");
    let fynn = Participant::join_as(&url, "Fynn", joining(None, LOOPBACK))
        .await
        .expect("Fynn joins to listen");
    let flowing = wait_until(Duration::from_secs(20), || {
        [&dora, &emil]
            .iter()
            .all(|speaker| fynn.stats(&speaker.id, Kind::Audio).packets > 25)
    })
    .await;
    assert!(flowing, "both microphones reach the listener");
    let everyone = [&dora, &emil, &fynn];
    assert!(
        everyone
            .iter()
            .all(|p| p.notices().dominant_speaker.is_none()),
        "nobody is announced while all are silent"
    );

    // Dora starts to speak.
    let started = Instant::now();
    dora.set_audio_level(SPEAKING);
    let first = announced(&everyone, &dora, started, Duration::from_secs(5)).await;
    eprintln!("Dora speaks: announced after {first:?} (Dora, Emil, Fynn)");

    // Emil takes over as Dora falls silent, at the same moment, after Dora has spoken for a
    // second: the length of her turn in the scenario, not a wait for anything.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let swapped = Instant::now();
    dora.set_audio_level(SILENCE);
    emil.set_audio_level(SPEAKING);
    let second = announced(&everyone, &emil, swapped, Duration::from_secs(5)).await;
    eprintln!("Emil takes over: announced after {second:?} (Dora, Emil, Fynn)");

    for (who, times) in [("Dora", &first), ("Emil", &second)] {
        assert!(
            times
                .iter()
                .all(|t| t.is_some_and(|t| t <= Duration::from_secs(1))),
            "everyone is told within a second that {who} speaks: {times:?}"
        );
    }
    for participant in [dora, emil, fynn] {
        participant.leave().await;
    }
    server.stop();
}

/// One look at what a subscriber receives from one publisher.
#[derive(Clone, Debug)]
struct Sample {
    /// Since the line changed.
    at: Duration,
    video: TrackStats,
    audio: TrackStats,
    state: Option<VideoState>,
}

/// What a subscriber received over a stretch of samples.
#[derive(Debug)]
struct Stretch {
    seconds: f64,
    /// Payload bits per second.
    video_bits: f64,
    audio_bits: f64,
    /// Roughly what went over the line, headers included.
    wire_bits: f64,
    /// The share of the sampling intervals in which video packets of `layer` arrived (and no
    /// other layer).
    on_layer: f64,
}

impl Stretch {
    fn of(samples: &[Sample], layer: u8) -> Self {
        let (first, last) = (&samples[0], &samples[samples.len() - 1]);
        let seconds = (last.at - first.at).as_secs_f64().max(0.001);
        let bits = |after: &TrackStats, before: &TrackStats| {
            (after.bytes - before.bytes) as f64 * 8.0 / seconds
        };
        let packets =
            (last.video.packets - first.video.packets) + (last.audio.packets - first.audio.packets);
        let (video_bits, audio_bits) = (
            bits(&last.video, &first.video),
            bits(&last.audio, &first.audio),
        );
        let on_layer = samples
            .windows(2)
            .filter(|pair| {
                let grew =
                    |l: usize| pair[1].video.layer_packets[l] > pair[0].video.layer_packets[l];
                (0..pair[1].video.layer_packets.len()).all(|l| grew(l) == (l == usize::from(layer)))
            })
            .count() as f64
            / (samples.len() - 1).max(1) as f64;
        Self {
            seconds,
            video_bits,
            audio_bits,
            // Each packet also carries RTP (12 B), its header extensions (about 12 B), the SRTP
            // tag (10 B), UDP (8 B), IPv4 (20 B) and Ethernet (14 B), which the qdisc counts.
            wire_bits: video_bits + audio_bits + packets as f64 * 76.0 * 8.0 / seconds,
            on_layer,
        }
    }
}

/// Whether video arrived between two samples, and only on layers above `layer`.
fn above(before: &Sample, after: &Sample, layer: u8) -> bool {
    let grew = |l: usize| after.video.layer_packets[l] > before.video.layer_packets[l];
    let layers = after.video.layer_packets.len();
    (0..layers).any(grew) && (0..=usize::from(layer)).all(|l| !grew(l))
}

/// Where the first run of `intervals` sampling intervals with video only above `layer` begins.
fn steadily_above(samples: &[Sample], layer: u8, intervals: usize) -> Option<Duration> {
    let ok: Vec<bool> = samples
        .windows(2)
        .map(|pair| above(&pair[0], &pair[1], layer))
        .collect();
    ok.windows(intervals)
        .position(|run| run.iter().all(|ok| *ok))
        .map(|start| samples[start].at)
}

/// Samples what `receiver` gets from `source` every 100 ms for `duration`, or until `stop`
/// says so of the samples so far; times are since `since`.
async fn sample(
    receiver: &Participant,
    source: &str,
    since: Instant,
    duration: Duration,
    mut stop: impl FnMut(&[Sample]) -> bool,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let end = Instant::now() + duration;
    loop {
        let sample = Sample {
            at: since.elapsed(),
            video: receiver.stats(source, Kind::Video),
            audio: receiver.stats(source, Kind::Audio),
            state: receiver
                .notices()
                .video_states
                .get(source)
                .map(|(state, _)| *state),
        };
        samples.push(sample);
        if stop(&samples) || Instant::now() >= end {
            return samples;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A line per half second: the layer received, video and audio kbit/s, the video's state.
fn timeline(samples: &[Sample]) -> String {
    samples
        .chunks(5)
        .filter(|chunk| chunk.len() > 1)
        .map(|chunk| {
            let (first, last) = (&chunk[0], &chunk[chunk.len() - 1]);
            let stretch = Stretch::of(chunk, LOW);
            let layer = if last.video.packets > first.video.packets {
                last.video.layer.map_or("-".to_owned(), |l| l.to_string())
            } else {
                "none".to_owned()
            };
            format!(
                "  {:>5.1} s  layer {layer:<4} video {:>5.0} kbit/s  audio {:>3.0} kbit/s  {:?}",
                last.at.as_secs_f64(),
                stretch.video_bits / 1000.0,
                stretch.audio_bits / 1000.0,
                last.state
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The constrained line: narrowed to this, for this long; Ina's share of each layer counts
/// from `SETTLE` on.
const CAP_KBIT: u32 = 400;
const NARROW: Duration = Duration::from_secs(12);
const SETTLE: Duration = Duration::from_secs(4);
/// Sampling intervals of a higher layer in a row that make a move up: a second of one counts;
/// a moment of one does not.
const STEADY: usize = 10;

/// A line of this host to a network namespace; `None` when there is none and the test is to
/// be skipped.
fn constrained_line() -> Option<netns::Line> {
    match netns::Line::create() {
        Ok(line) => Some(line),
        Err(error) if std::env::var("TREFFPUNKT_SKIP_NETNS").as_deref() == Ok("1") => {
            eprintln!("skipped: no network namespace for the constrained line ({error})");
            None
        }
        Err(error) => panic!(
            "this test needs a network namespace with a veth pair and a tbf qdisc (root and \
             iproute2's ip and tc), and could not make one: {error}. Set \
             TREFFPUNKT_SKIP_NETNS=1 to skip it."
        ),
    }
}

/// What Ina received while her line was narrow, and Hanna meanwhile on an open one.
struct NarrowLine {
    /// Every sample, from the moment the line narrowed.
    samples: Vec<Sample>,
    /// The samples from `SETTLE` on.
    settled: Vec<Sample>,
    /// When, after the line narrowed, Ina got the lowest layer.
    down_after: Option<Duration>,
    /// What Ina received from `SETTLE` on.
    stretch: Stretch,
    /// The share of Hanna's video packets that were of the top layer.
    hanna_top: f64,
}

/// Narrows `line` to `CAP_KBIT` for `NARROW`, sampling what Ina gets from Gero.
async fn narrow_the_line(
    line: &netns::Line,
    ina: &Participant,
    hanna: &Participant,
    gero: &Participant,
) -> NarrowLine {
    line.limit(CAP_KBIT).expect("tc applies the limit");
    let narrowed = Instant::now();
    let hanna_before = hanna.stats(&gero.id, Kind::Video);
    let samples = sample(ina, &gero.id, narrowed, NARROW, |_| false).await;
    let hanna_after = hanna.stats(&gero.id, Kind::Video);
    let down_after = samples
        .last()
        .and_then(|s| {
            s.video
                .layer_changes
                .iter()
                .find(|(at, layer)| *at >= narrowed && *layer == LOW)
        })
        .map(|(at, _)| *at - narrowed);
    let settled: Vec<Sample> = samples.iter().filter(|s| s.at >= SETTLE).cloned().collect();
    let stretch = Stretch::of(&settled, LOW);
    let hanna_top = (hanna_after.layer_packets[usize::from(TOP)]
        - hanna_before.layer_packets[usize::from(TOP)]) as f64
        / (hanna_after.packets - hanna_before.packets).max(1) as f64;
    NarrowLine {
        samples,
        settled,
        down_after,
        stretch,
        hanna_top,
    }
}

/// Lifts the limit of `line` and samples what Ina gets from Gero until she is steadily above
/// the lowest layer, for at most 15 s; returns the samples and when the move up began.
async fn clear_the_line(
    line: &netns::Line,
    ina: &Participant,
    gero: &Participant,
) -> (Vec<Sample>, Option<Duration>) {
    line.unlimit().expect("tc removes the limit");
    let cleared = Instant::now();
    let opened = sample(ina, &gero.id, cleared, Duration::from_secs(15), |samples| {
        steadily_above(samples, LOW, STEADY).is_some()
    })
    .await;
    let up_after = steadily_above(&opened, LOW, STEADY);
    (opened, up_after)
}

/// The limits of the issue that the line's two stretches did not keep, in words.
fn missed_limits(
    narrow: &NarrowLine,
    opened: &[Sample],
    up_after: Option<Duration>,
) -> Vec<String> {
    let corrupt: u64 = narrow
        .samples
        .iter()
        .chain(opened)
        .map(|s| s.video.corrupt)
        .max()
        .unwrap_or(0);
    let mut failures = Vec::new();
    if corrupt > 0 {
        failures.push(format!("{corrupt} video packets arrived altered"));
    }
    if narrow.down_after.is_none() {
        failures.push("Ina never got the lowest layer on the narrow line".to_owned());
    }
    // The node probes the line with padding before it moves a video up, but the line's shaper
    // lets a probe of 40 ms through at full speed (its bucket holds 8 KB), so the next layer up
    // is still tried every few seconds: the lowest layer is what Ina gets most of the time, and
    // the top layer never.
    if narrow.stretch.on_layer < 0.4 {
        failures.push(format!(
            "Ina received the lowest layer only {:.0} % of the time on the narrow line (over {:.1} s)",
            narrow.stretch.on_layer * 100.0,
            narrow.stretch.seconds
        ));
    }
    let top_on_narrow = narrow
        .settled
        .last()
        .map_or(0, |s| s.video.layer_packets[usize::from(TOP)])
        - narrow
            .settled
            .first()
            .map_or(0, |s| s.video.layer_packets[usize::from(TOP)]);
    if top_on_narrow > 0 {
        failures.push(format!(
            "Ina received {top_on_narrow} packets of the top layer on the narrow line"
        ));
    }
    if narrow.hanna_top < 0.9 {
        failures.push(format!(
            "Hanna, on an open line, got the top layer for only {:.0} % of her packets",
            narrow.hanna_top * 100.0
        ));
    }
    if up_after.is_none_or(|after| after > Duration::from_secs(5)) {
        failures.push(format!(
            "Ina did not move up within 5 s of the line clearing: {up_after:?}"
        ));
    }
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_on_a_thin_line_gets_the_lowest_layer_and_moves_up_when_it_clears() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let Some(line) = constrained_line() else {
        return;
    };
    let host = IpAddr::V4(line.host_ip);
    let server = start(host).await;
    let url = signal_url(server.http, "public", "engpass");
    let gero = Participant::join_as(&url, "Gero", joining(Some(camera()), host))
        .await
        .expect("Gero joins with his camera in three layers");
    let hanna = Participant::join_as(&url, "Hanna", joining(None, host))
        .await
        .expect("Hanna joins");
    // Ina's sockets live in the namespace, behind the line the test narrows.
    let ina = netns::Guest::join(&line, &url, "Ina", joining(None, IpAddr::V4(line.guest_ip)))
        .await
        .expect("Ina joins from behind the line");

    let both_top = wait_until(Duration::from_secs(30), || {
        layer(&hanna, &gero) == Some(TOP) && layer(ina.participant(), &gero) == Some(TOP)
    })
    .await;
    assert!(
        both_top,
        "on open lines both get the top layer: Hanna {:?}, Ina {:?}",
        layer(&hanna, &gero),
        layer(ina.participant(), &gero)
    );

    // The line narrows to 400 kbit/s: Ina should fall to the lowest layer and stay there,
    // while Hanna keeps the top one.
    let narrow = narrow_the_line(&line, ina.participant(), &hanna, &gero).await;
    // The line clears: Ina should move up within 5 s, and stay up.
    let (opened, up_after) = clear_the_line(&line, ina.participant(), &gero).await;

    eprintln!(
        "Ina on a {CAP_KBIT} kbit/s line: down to the lowest layer {:?} after the \
         limit; from {SETTLE:?} to {NARROW:?} she received {:.0} kbit/s of video and {:.0} \
         kbit/s of audio (about {:.0} kbit/s on the wire), the lowest layer in {:.0} % of the \
         time; Hanna {:.0} % on the top layer. Up to layer {:?} {up_after:?} after the limit \
         was lifted.\nnarrow line:\n{}\nopen line:\n{}",
        narrow.down_after,
        narrow.stretch.video_bits / 1000.0,
        narrow.stretch.audio_bits / 1000.0,
        narrow.stretch.wire_bits / 1000.0,
        narrow.stretch.on_layer * 100.0,
        narrow.hanna_top * 100.0,
        opened.last().and_then(|s| s.video.layer),
        timeline(&narrow.samples),
        timeline(&opened),
    );
    let failures = missed_limits(&narrow, &opened, up_after);

    ina.leave().await;
    for participant in [gero, hanna] {
        participant.leave().await;
    }
    server.stop();
    drop(line);
    assert!(failures.is_empty(), "{}", failures.join("; "));
}
