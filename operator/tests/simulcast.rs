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

use support::wait_until;
use treffpunkt_client::{
    Joining, Kind, Outgoing, OutgoingAudio, OutgoingVideo, Participant, SILENCE, TrackStats,
    VideoState, signal_url,
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

    // Emil takes over as Dora falls silent, at the same moment.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_on_a_thin_line_gets_the_lowest_layer_and_moves_up_when_it_clears() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let line = match netns::Line::create() {
        Ok(line) => line,
        Err(error) if std::env::var("TREFFPUNKT_SKIP_NETNS").as_deref() == Ok("1") => {
            eprintln!("skipped: no network namespace for the constrained line ({error})");
            return;
        }
        Err(error) => panic!(
            "this test needs a network namespace with a veth pair and a tbf qdisc (root and \
             iproute2's ip and tc), and could not make one: {error}. Set \
             TREFFPUNKT_SKIP_NETNS=1 to skip it."
        ),
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
    const CAP_KBIT: u32 = 400;
    const NARROW: Duration = Duration::from_secs(12);
    const SETTLE: Duration = Duration::from_secs(4);
    line.limit(CAP_KBIT).expect("tc applies the limit");
    let narrowed = Instant::now();
    let hanna_before = hanna.stats(&gero.id, Kind::Video);
    let constrained = sample(ina.participant(), &gero.id, narrowed, NARROW, |_| false).await;
    let hanna_after = hanna.stats(&gero.id, Kind::Video);
    let down_after = constrained
        .last()
        .and_then(|s| {
            s.video
                .layer_changes
                .iter()
                .find(|(at, layer)| *at >= narrowed && *layer == LOW)
        })
        .map(|(at, _)| *at - narrowed);
    let settled: Vec<Sample> = constrained
        .iter()
        .filter(|s| s.at >= SETTLE)
        .cloned()
        .collect();
    let narrow = Stretch::of(&settled, LOW);
    let hanna_top = (hanna_after.layer_packets[usize::from(TOP)]
        - hanna_before.layer_packets[usize::from(TOP)]) as f64
        / (hanna_after.packets - hanna_before.packets).max(1) as f64;

    // The line clears: Ina should move up within 5 s, and stay up (a second of a higher layer
    // counts; a moment of one does not).
    const STEADY: usize = 10;
    line.unlimit().expect("tc removes the limit");
    let cleared = Instant::now();
    let opened = sample(
        ina.participant(),
        &gero.id,
        cleared,
        Duration::from_secs(15),
        |samples| steadily_above(samples, LOW, STEADY).is_some(),
    )
    .await;
    let up_after = steadily_above(&opened, LOW, STEADY);

    eprintln!(
        "Ina on a {CAP_KBIT} kbit/s line: down to the lowest layer {down_after:?} after the \
         limit; from {SETTLE:?} to {NARROW:?} she received {:.0} kbit/s of video and {:.0} \
         kbit/s of audio (about {:.0} kbit/s on the wire), the lowest layer in {:.0} % of the \
         time; Hanna {:.0} % on the top layer. Up to layer {:?} {up_after:?} after the limit \
         was lifted.\nnarrow line:\n{}\nopen line:\n{}",
        narrow.video_bits / 1000.0,
        narrow.audio_bits / 1000.0,
        narrow.wire_bits / 1000.0,
        narrow.on_layer * 100.0,
        hanna_top * 100.0,
        opened.last().and_then(|s| s.video.layer),
        timeline(&constrained),
        timeline(&opened),
    );
    let corrupt: u64 = constrained
        .iter()
        .chain(&opened)
        .map(|s| s.video.corrupt)
        .max()
        .unwrap_or(0);
    let mut failures = Vec::new();
    if corrupt > 0 {
        failures.push(format!("{corrupt} video packets arrived altered"));
    }
    if down_after.is_none() {
        failures.push("Ina never got the lowest layer on the narrow line".to_owned());
    }
    // The node probes the line with padding before it moves a video up, but the line's shaper
    // lets a probe of 40 ms through at full speed (its bucket holds 8 KB), so the next layer up
    // is still tried every few seconds: the lowest layer is what Ina gets most of the time, and
    // the top layer never.
    if narrow.on_layer < 0.4 {
        failures.push(format!(
            "Ina received the lowest layer only {:.0} % of the time on the narrow line (over {:.1} s)",
            narrow.on_layer * 100.0,
            narrow.seconds
        ));
    }
    let top_on_narrow = settled
        .last()
        .map_or(0, |s| s.video.layer_packets[usize::from(TOP)])
        - settled
            .first()
            .map_or(0, |s| s.video.layer_packets[usize::from(TOP)]);
    if top_on_narrow > 0 {
        failures.push(format!(
            "Ina received {top_on_narrow} packets of the top layer on the narrow line"
        ));
    }
    if hanna_top < 0.9 {
        failures.push(format!(
            "Hanna, on an open line, got the top layer for only {:.0} % of her packets",
            hanna_top * 100.0
        ));
    }
    if up_after.is_none_or(|after| after > Duration::from_secs(5)) {
        failures.push(format!(
            "Ina did not move up within 5 s of the line clearing: {up_after:?}"
        ));
    }

    ina.leave().await;
    for participant in [gero, hanna] {
        participant.leave().await;
    }
    server.stop();
    drop(line);
    assert!(failures.is_empty(), "{}", failures.join("; "));
}

/// A network namespace joined to this host by a veth pair, and participants that live in it.
mod netns {
    use std::fs::File;
    use std::net::Ipv4Addr;
    use std::process::Command;

    use nix::sched::{CloneFlags, setns};
    use tokio::sync::oneshot;
    use treffpunkt_client::{Joining, Participant};

    /// Namespaces of these tests are called this, with the test process's id.
    const PREFIX: &str = "tpsim-";

    fn run(program: &str, args: &[&str]) -> Result<(), String> {
        let output = Command::new(program)
            .args(args)
            .output()
            .map_err(|error| format!("{program}: {error}"))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{program} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }

    /// The host's end of the veth pair of namespace `name`.
    fn host_interface(pid: u32) -> String {
        format!("tps{pid}-h")
    }

    /// Removes what earlier runs of these tests left behind when they were killed: namespaces
    /// whose process is gone.
    fn remove_stale() {
        let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
            return;
        };
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            let Some(pid) = name
                .strip_prefix(PREFIX)
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = run("ip", &["link", "del", &host_interface(pid)]);
                let _ = run("ip", &["netns", "del", name]);
            }
        }
    }

    /// A namespace with one veth pair: the host's end has `host_ip`, the namespace's end
    /// `guest_ip`, in a /30 of 10.213.0.0/16 of this process's own. A token-bucket qdisc on
    /// the host's end limits what the host sends into the namespace: the guest's downlink.
    /// Dropping it removes both.
    pub struct Line {
        name: String,
        host_if: String,
        /// This host's address on the line.
        pub host_ip: Ipv4Addr,
        /// The namespace's address on the line.
        pub guest_ip: Ipv4Addr,
    }

    impl Line {
        /// Makes the namespace and the veth pair, and brings them up.
        pub fn create() -> Result<Self, String> {
            remove_stale();
            let pid = std::process::id();
            let block = pid % 16_384;
            let (third, fourth) = ((block / 64) as u8, ((block % 64) * 4) as u8);
            let line = Self {
                name: format!("{PREFIX}{pid}"),
                host_if: host_interface(pid),
                host_ip: Ipv4Addr::new(10, 213, third, fourth + 1),
                guest_ip: Ipv4Addr::new(10, 213, third, fourth + 2),
            };
            // Dropped on failure, which removes what was made.
            let guest_if = format!("tps{pid}-g");
            let (host_ip, guest_ip) = (
                format!("{}/30", line.host_ip),
                format!("{}/30", line.guest_ip),
            );
            run("ip", &["netns", "add", &line.name])?;
            run(
                "ip",
                &[
                    "link",
                    "add",
                    &line.host_if,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &guest_if,
                    "netns",
                    &line.name,
                ],
            )?;
            run("ip", &["addr", "add", &host_ip, "dev", &line.host_if])?;
            run("ip", &["link", "set", &line.host_if, "up"])?;
            let inside = |args: &[&str]| {
                let mut full = vec!["-n", line.name.as_str()];
                full.extend_from_slice(args);
                run("ip", &full)
            };
            inside(&["addr", "add", &guest_ip, "dev", &guest_if])?;
            inside(&["link", "set", &guest_if, "up"])?;
            inside(&["link", "set", "lo", "up"])?;
            Ok(line)
        }

        /// Limits the guest's downlink to `kbit` kbit/s, with a queue of 100 ms.
        pub fn limit(&self, kbit: u32) -> Result<(), String> {
            let rate = format!("{kbit}kbit");
            run(
                "tc",
                &[
                    "qdisc",
                    "replace",
                    "dev",
                    &self.host_if,
                    "root",
                    "tbf",
                    "rate",
                    &rate,
                    "burst",
                    "8kb",
                    "latency",
                    "100ms",
                ],
            )
        }

        /// Lifts the limit.
        pub fn unlimit(&self) -> Result<(), String> {
            run("tc", &["qdisc", "del", "dev", &self.host_if, "root"])
        }

        /// Runs `f` on a new thread that has joined the namespace: every socket it (and any
        /// thread it starts) opens lives there.
        fn spawn<T: Send + 'static>(
            &self,
            f: impl FnOnce() -> T + Send + 'static,
        ) -> Result<std::thread::JoinHandle<T>, String> {
            let namespace = File::open(format!("/var/run/netns/{}", self.name))
                .map_err(|error| format!("opening the namespace {}: {error}", self.name))?;
            Ok(std::thread::spawn(move || {
                // Network namespaces are per thread: this one joins it, the test's threads stay
                // outside.
                setns(&namespace, CloneFlags::CLONE_NEWNET)
                    .expect("the thread joins the test's network namespace");
                f()
            }))
        }
    }

    impl Drop for Line {
        fn drop(&mut self) {
            // Removing the host's end removes the pair; the namespace goes once nothing in it
            // is open.
            let _ = run("ip", &["link", "del", &self.host_if]);
            let _ = run("ip", &["netns", "del", &self.name]);
        }
    }

    /// A participant whose media and signalling sockets live in a [`Line`]'s namespace: it runs
    /// on a runtime of its own on a thread inside; the test reads it from outside.
    pub struct Guest {
        /// The participant (its statistics are shared with the thread inside); taken when it
        /// leaves.
        participant: Option<Participant>,
        stop: Option<oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Guest {
        /// Joins `url` as `name` from inside the namespace.
        pub async fn join(
            line: &Line,
            url: &str,
            name: &str,
            joining: Joining,
        ) -> Result<Self, String> {
            let (joined_tx, joined) = oneshot::channel();
            let (stop, stopped) = oneshot::channel::<()>();
            let (url, name) = (url.to_owned(), name.to_owned());
            let thread = line.spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime inside the namespace");
                runtime.block_on(async move {
                    let result = Participant::join_as(&url, &name, joining).await;
                    let _ = joined_tx.send(result);
                    // The participant's tasks run on this runtime until the test is done.
                    let _ = stopped.await;
                });
            })?;
            let participant = joined
                .await
                .map_err(|_| "the thread inside the namespace ended".to_owned())?
                .map_err(|error| error.to_string())?;
            Ok(Self {
                participant: Some(participant),
                stop: Some(stop),
                thread: Some(thread),
            })
        }

        /// The participant.
        pub fn participant(&self) -> &Participant {
            self.participant
                .as_ref()
                .expect("a guest has its participant until it leaves")
        }

        /// Leaves the room and stops the thread inside.
        pub async fn leave(mut self) {
            if let Some(participant) = self.participant.take() {
                participant.leave().await;
            }
            self.stop_thread();
        }

        fn stop_thread(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    impl Drop for Guest {
        fn drop(&mut self) {
            self.stop_thread();
        }
    }
}
