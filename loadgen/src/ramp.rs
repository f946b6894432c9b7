//! Running one scenario: start the gateway and a media node (or several, which the room then
//! spans, filling one after the other), then for each N of the ramp join the participants that
//! are missing, let the room settle, and measure a window. The ramp stops where loss passes its
//! limit or a node's CPU passes its limit (one core by default).
//!
//! What is measured in a window:
//! - forwarded packets: intact packets the subscribers received (the node's output);
//! - loss: the distinct indices that arrived, against what the publishers sent in the same
//!   window times their subscribers (so a track the node never forwards counts as lost). A
//!   simulcast video reaches each subscriber as one layer of three, which the node may switch
//!   at any keyframe, so its loss is counted at the receiver instead: each stretch of one
//!   layer should hold every index from its first to its last, and a video that sent nothing
//!   to a subscriber in the window counts what its last layer sent as lost;
//! - latency: one-way, from the send time in each packet's payload to its arrival (one clock);
//! - join to first packet: for the pairs that met in this step, from the later of the two joins
//!   to the receiver's first packet from the other;
//! - CPU (user + system) of the node, the gateway, this process and the whole machine, and the
//!   node's resident memory, from `/proc`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use treffpunkt_client::{Joining, Kind, Latency, MAX_LAYERS, Participant, TrackStats};

use crate::janus::{self, JanusConfig};
use crate::processes::{self, MachineSample, ProcessSample};
use crate::report::{
    CpuUsage, FirstPacket, Limit, NodeUsage, Percentiles, ScenarioReport, Step, TrackLoss,
};
use crate::scenario::{Media, Role, Scenario};
use crate::system::{Door, System};

/// How many of the tracks that lost most a step reports.
const WORST_TRACKS: usize = 5;

/// The SFU a ramp measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Sfu {
    /// Treffpunkt: the gateway and its media nodes.
    Treffpunkt,
    /// Janus's VideoRoom, for comparison (scenarios with one publisher only).
    Janus,
}

/// How a ramp runs.
#[derive(Clone, Debug)]
pub struct RampConfig {
    /// The `treffpunkt` binary.
    pub binary: PathBuf,
    /// How Janus runs, for ramps that measure it.
    pub janus: Option<JanusConfig>,
    /// The measuring window.
    pub window: Duration,
    /// The pause between the last join of a step and its window.
    pub warmup: Duration,
    /// Loss above which the ramp stops.
    pub loss_limit: f64,
    /// The media node's CPU (cores) above which the ramp stops; another SFU's stops on loss.
    pub node_core_limit: f64,
    /// How many participants join at once.
    pub join_concurrency: usize,
    /// The bare relay's CPU µs per datagram, measured in the same run.
    pub baseline_us: Option<f64>,
    /// Whether to say what happens on standard error.
    pub verbose: bool,
    /// Media nodes (Treffpunkt only).
    pub nodes: u32,
    /// Whether the nodes are shards of standalone mode's process instead of processes of their
    /// own (their CPU is then the process's, the gateway's included).
    pub shards: bool,
    /// The participants each node takes; by default enough for the largest step on one node,
    /// or, with several nodes, its share of the largest step, so that the room spreads over
    /// all of them as it grows.
    pub node_capacity: Option<u32>,
    /// Where the gateway and the nodes keep their logs (at `info`, or what `RUST_LOG` says),
    /// one file each; none kept without it.
    pub logs: Option<PathBuf>,
}

/// A participant of the ramp.
struct Member {
    /// Its display name, which says its scenario and number.
    name: String,
    participant: Participant,
    role: Role,
    /// The step in which it joined.
    step: usize,
    /// How long its join took.
    join_time: Duration,
}

/// Everything read at one moment.
struct Snapshot {
    at: Instant,
    /// Per member: what it received, by (source, kind).
    received: Vec<HashMap<(String, Kind), TrackStats>>,
    /// Per member: packets sent (audio, video by simulcast layer; video without simulcast is
    /// layer 0).
    sent: Vec<(u32, [u32; MAX_LAYERS])>,
    nodes: Vec<ProcessSample>,
    gateway: ProcessSample,
    me: ProcessSample,
    machine: MachineSample,
}

fn snapshot(members: &[Member], node_pids: &[String], gateway_pid: Option<&str>) -> Snapshot {
    // What was sent is read before what arrived, so that packets in flight at either end of the
    // window count the same way at both ends instead of as loss.
    let sent = members
        .iter()
        .map(|m| {
            (
                m.participant.sent(Kind::Audio),
                std::array::from_fn(|layer| m.participant.sent_layer(layer)),
            )
        })
        .collect();
    let at = Instant::now();
    Snapshot {
        at,
        sent,
        received: members
            .iter()
            .map(|m| {
                m.participant
                    .tracks()
                    .into_iter()
                    .map(|(source, kind, stats)| ((source, kind), stats))
                    .collect()
            })
            .collect(),
        nodes: node_pids
            .iter()
            .map(|pid| ProcessSample::read(pid))
            .collect(),
        gateway: gateway_pid.map(ProcessSample::read).unwrap_or_default(),
        me: ProcessSample::read("self"),
        machine: MachineSample::read(),
    }
}

fn kinds_sent(role: Role) -> &'static [Kind] {
    match role {
        Role::VideoPublisher => &[Kind::Audio, Kind::Video],
        Role::Speaker => &[Kind::Audio],
        Role::Listener => &[],
    }
}

/// Sample percentiles (nearest rank) in milliseconds.
pub fn percentiles(mut samples: Vec<f64>) -> Percentiles {
    samples.sort_by(f64::total_cmp);
    let at = |p: f64| {
        if samples.is_empty() {
            return None;
        }
        let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
        Some(samples[rank.clamp(1, samples.len()) - 1])
    };
    Percentiles {
        samples: samples.len() as u64,
        p50: at(50.0),
        p95: at(95.0),
        p99: at(99.0),
    }
}

fn latency_percentiles(latency: &Latency) -> Percentiles {
    let ms = |p| latency.percentile(p).map(|us| us as f64 / 1000.0);
    Percentiles {
        samples: latency.samples(),
        p50: ms(50.0),
        p95: ms(95.0),
        p99: ms(99.0),
    }
}

/// How long a track may go without a packet at the end of a window and still count as
/// arriving: a few of the slowest streams' packet intervals (a silent microphone in DTX sends one
/// in 400 ms).
const STILL_ARRIVING: Duration = Duration::from_secs(1);

/// The packets a subscriber should have received on one track in a window, from what it
/// received before (`then`) and after (`now`) the window, and what the publisher sent on each
/// layer meanwhile (`sent`; audio and video without simulcast on layer 0).
///
/// While packets still arrive (the last less than [`STILL_ARRIVING`] before `end`), the
/// indexes that arrived say it: every index from the first to the last of each stretch of one
/// layer. A packet in flight at either end of the window then counts at neither end; counted
/// from what was sent, one frame in flight at the end was a percent of a window at ten packets a
/// second, as loss that was none. A track that stopped arriving (a stall, or nothing at all)
/// should have received what the layer it last had sent.
fn expected_packets(
    then: &TrackStats,
    now: &TrackStats,
    sent: [u64; MAX_LAYERS],
    end: Instant,
) -> u64 {
    let arriving = now.distinct > then.distinct
        && now
            .last_at
            .is_some_and(|at| end.saturating_duration_since(at) < STILL_ARRIVING);
    if arriving {
        now.expected - then.expected.min(now.expected)
    } else {
        sent[now.layer.map_or(0, usize::from).min(MAX_LAYERS - 1)]
    }
}

/// What the subscribers received in a window, over every pair of a receiver and a source that
/// sends something.
#[derive(Default)]
struct Tally {
    forwarded: u64,
    distinct: u64,
    expected: u64,
    corrupt: u64,
    latency: Latency,
    /// For the pairs that met in the step, join to the first packet of any kind, in ms.
    first_any: Vec<f64>,
    /// The same for the first video packet, from video publishers.
    first_video: Vec<f64>,
    /// The pairs that met in the step and received nothing from each other's source.
    missing: u64,
    /// The tracks that received fewer distinct packets than they should have.
    losses: Vec<TrackLoss>,
}

impl Tally {
    fn of(members: &[Member], step_index: usize, before: &Snapshot, after: &Snapshot) -> Self {
        let mut tally = Self::default();
        for (r, receiver) in members.iter().enumerate() {
            for (s, source) in members.iter().enumerate() {
                if r == s || kinds_sent(source.role).is_empty() {
                    continue;
                }
                let first = tally.add_tracks((r, receiver), (s, source), before, after);
                if receiver.step != step_index && source.step != step_index {
                    continue;
                }
                tally.add_first_packets((r, receiver), source, first, after);
            }
        }
        // The tracks that lost most, to tell loss spread thin from a few tracks that stalled.
        tally
            .losses
            .sort_by_key(|t| std::cmp::Reverse(t.expected - t.received));
        tally.losses.truncate(WORST_TRACKS);
        tally
    }

    /// Adds what `receiver` got from `source` on each of its tracks in the window; returns
    /// when the first packet from `source` arrived, if one did.
    fn add_tracks(
        &mut self,
        (r, receiver): (usize, &Member),
        (s, source): (usize, &Member),
        before: &Snapshot,
        after: &Snapshot,
    ) -> Option<Instant> {
        let none = TrackStats::default();
        let mut first: Option<Instant> = None;
        for &kind in kinds_sent(source.role) {
            let key = (source.participant.id.clone(), kind);
            let then = before.received[r].get(&key).unwrap_or(&none);
            let now = after.received[r].get(&key).unwrap_or(&none);
            self.forwarded += now.packets - then.packets.min(now.packets);
            self.distinct += now.distinct - then.distinct.min(now.distinct);
            self.corrupt += now.corrupt - then.corrupt.min(now.corrupt);
            self.latency.merge(&now.latency.since(&then.latency));
            let sent = match kind {
                Kind::Audio => [
                    u64::from(after.sent[s].0.saturating_sub(before.sent[s].0)),
                    0,
                    0,
                ],
                Kind::Video => std::array::from_fn(|layer| {
                    u64::from(after.sent[s].1[layer].saturating_sub(before.sent[s].1[layer]))
                }),
            };
            let track_expected = expected_packets(then, now, sent, after.at);
            let track_received = now.distinct - then.distinct.min(now.distinct);
            self.expected += track_expected;
            if track_received < track_expected {
                self.losses.push(TrackLoss {
                    receiver: receiver.name.clone(),
                    source: source.name.clone(),
                    kind: format!("{kind:?}").to_lowercase(),
                    expected: track_expected,
                    received: track_received,
                });
            }
            if let Some(at) = now.first_at {
                first = Some(first.map_or(at, |f| f.min(at)));
            }
        }
        first
    }

    /// Adds, for a pair that met in this step, how long after the later join the first packet
    /// (`first`) and the first video packet arrived.
    fn add_first_packets(
        &mut self,
        (r, receiver): (usize, &Member),
        source: &Member,
        first: Option<Instant>,
        after: &Snapshot,
    ) {
        let met = receiver
            .participant
            .join_sent_at
            .max(source.participant.join_sent_at);
        match first {
            Some(at) => self
                .first_any
                .push(at.saturating_duration_since(met).as_secs_f64() * 1e3),
            None => self.missing += 1,
        }
        if source.role == Role::VideoPublisher {
            let key = (source.participant.id.clone(), Kind::Video);
            if let Some(at) = after.received[r].get(&key).and_then(|t| t.first_at) {
                self.first_video
                    .push(at.saturating_duration_since(met).as_secs_f64() * 1e3);
            }
        }
    }
}

/// What one step measured, from the snapshots before and after its window.
fn measure(
    members: &[Member],
    step_index: usize,
    n: u32,
    before: &Snapshot,
    after: &Snapshot,
    idle_rss_kib: u64,
    config: &RampConfig,
) -> Step {
    let window = after.at.duration_since(before.at).as_secs_f64();
    let tally = Tally::of(members, step_index, before, after);
    let (forwarded, distinct, expected) = (tally.forwarded, tally.distinct, tally.expected);
    let per_packet = |cpu: f64| (forwarded > 0).then(|| cpu * 1e6 / forwarded as f64);
    let cpus: Vec<f64> = after
        .nodes
        .iter()
        .zip(&before.nodes)
        .map(|(after, before)| after.cpu() - before.cpu())
        .collect();
    let node_cpu: f64 = cpus.iter().sum();
    let several = cpus.len() > 1;
    let sum = |read: fn(&ProcessSample) -> f64| -> f64 {
        after.nodes.iter().map(read).sum::<f64>() - before.nodes.iter().map(read).sum::<f64>()
    };
    let rss_kib: u64 = after.nodes.iter().map(|node| node.rss_kib).sum();
    let node_us = per_packet(node_cpu);
    let me_cpu = after.me.cpu() - before.me.cpu();
    let gateway_cpu = after.gateway.cpu() - before.gateway.cpu();
    let participants = members.len() as f64;
    let publishers = members.iter().filter(|m| m.role != Role::Listener).count() as u32;
    Step {
        n,
        publishers,
        listeners: members.len() as u32 - publishers,
        window_seconds: window,
        forwarded_packets: forwarded,
        forwarded_packets_per_second: forwarded as f64 / window,
        expected_packets: expected,
        loss: if expected == 0 {
            0.0
        } else {
            (1.0 - distinct as f64 / expected as f64).clamp(0.0, 1.0)
        },
        corrupt_packets: tally.corrupt,
        latency_ms: latency_percentiles(&tally.latency),
        join_to_first_packet: FirstPacket {
            any_ms: percentiles(tally.first_any),
            video_ms: percentiles(tally.first_video),
            missing: tally.missing,
        },
        join_ms: percentiles(
            members
                .iter()
                .filter(|m| m.step == step_index)
                .map(|m| m.join_time.as_secs_f64() * 1e3)
                .collect(),
        ),
        node: NodeUsage {
            cpu_cores: node_cpu / window,
            user_seconds: sum(|node| node.user),
            system_seconds: sum(|node| node.system),
            cpu_seconds_per_million_packets: node_us,
            packets_per_cpu_second: (node_cpu > 0.0).then(|| forwarded as f64 / node_cpu),
            vs_baseline: node_us
                .zip(config.baseline_us)
                .map(|(node, relay)| node / relay),
            rss_kib,
            rss_kib_per_participant: (participants > 0.0)
                .then(|| rss_kib.saturating_sub(idle_rss_kib) as f64 / participants),
            nodes_hosting: None,
            busiest_node_cores: several.then(|| cpus.iter().copied().fold(0.0, f64::max) / window),
        },
        gateway: CpuUsage {
            cpu_cores: gateway_cpu / window,
            cpu_us_per_packet: per_packet(gateway_cpu),
        },
        load_generator: CpuUsage {
            cpu_cores: me_cpu / window,
            cpu_us_per_packet: per_packet(me_cpu),
        },
        machine_busy_cores: (after.machine.busy - before.machine.busy) / window,
        worst_tracks: tally.losses,
    }
}

/// Joins the participants that `n` needs beyond those in `members`.
async fn join_missing(
    scenario: Scenario,
    n: u32,
    step: usize,
    members: &mut Vec<Member>,
    door: &Door,
    media: &Media,
    concurrency: usize,
) -> anyhow::Result<()> {
    let want = scenario.population(n);
    let have = |role| members.iter().filter(|m| m.role == role).count() as u32;
    let mut roles = Vec::new();
    // Publishers first, so that listeners find something to receive.
    for (role, count) in [
        (Role::VideoPublisher, want.video_publishers),
        (Role::Speaker, want.speakers),
        (Role::Listener, want.listeners),
    ] {
        roles.extend(std::iter::repeat_n(
            role,
            count.saturating_sub(have(role)) as usize,
        ));
    }
    let first_number = members.len();
    let joins = futures::stream::iter(roles.into_iter().enumerate())
        .map(|(i, role)| async move {
            let name = format!("{}-{}", scenario.name(), first_number + i + 1);
            // Publishers join first, so the first to join are the ones who talk.
            let talking = role != Role::Listener && first_number + i < media.talking as usize;
            let joining = Joining {
                outgoing: scenario.outgoing(role, media, talking),
                ..Joining::default()
            };
            let started = Instant::now();
            let joined = door.join(&name, joining).await;
            (name, role, joined, started.elapsed())
        })
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await;
    let mut failure = None;
    for (name, role, joined, join_time) in joins {
        match joined {
            Ok(participant) => members.push(Member {
                name,
                participant,
                role,
                step,
                join_time,
            }),
            Err(error) => failure = Some((name, error)),
        }
    }
    match failure {
        Some((name, error)) => Err(anyhow::anyhow!("{name} could not join: {error}")),
        None => Ok(()),
    }
}

/// Runs `scenario` on `sfu` through the values of N in `ramp`.
pub async fn run(
    scenario: Scenario,
    sfu: Sfu,
    ramp: &[u32],
    media: &Media,
    config: &RampConfig,
) -> anyhow::Result<ScenarioReport> {
    let largest = ramp
        .iter()
        .map(|&n| scenario.population(n).total())
        .max()
        .unwrap_or(0);
    anyhow::ensure!(
        sfu != Sfu::Janus || matches!(scenario, Scenario::Fanout | Scenario::Livestream),
        "the Janus comparison runs the scenarios with one publisher (fanout, livestream), not {}",
        scenario.name()
    );
    let system = System::start(sfu, config, largest).await?;
    let node_pids = system.sfu_pids();
    let gateway_pid = system.gateway_pid();
    let idle_rss_kib = node_pids
        .iter()
        .map(|pid| ProcessSample::read(pid).rss_kib)
        .sum();
    let (name, door) = system.door(scenario);
    let mut members: Vec<Member> = Vec::new();
    let mut steps = Vec::new();
    let mut limit = None;
    for (index, &n) in ramp.iter().enumerate() {
        if config.verbose {
            eprintln!("{name}: N={n}: joining");
        }
        let joined = join_missing(
            scenario,
            n,
            index,
            &mut members,
            &door,
            media,
            config.join_concurrency,
        )
        .await;
        if let Err(error) = joined {
            limit = Some(Limit {
                reached: true,
                n: Some(n),
                reason: format!("stopped at N={n}: {error}"),
            });
            break;
        }
        tokio::time::sleep(config.warmup).await;
        let before = snapshot(&members, &node_pids, gateway_pid.as_deref());
        tokio::time::sleep(config.window).await;
        let after = snapshot(&members, &node_pids, gateway_pid.as_deref());
        let mut step = measure(&members, index, n, &before, &after, idle_rss_kib, config);
        step.node.nodes_hosting = system.nodes_hosting().await;
        if config.verbose {
            eprintln!(
                "{name}: N={n}: {:.0} pkt/s, node {:.2} cores, loss {:.2} %, load generator {:.2} cores",
                step.forwarded_packets_per_second,
                step.node.cpu_cores,
                step.loss * 100.0,
                step.load_generator.cpu_cores
            );
        }
        let passed = limit_passed(&step, sfu, config);
        let saturated = step.machine_busy_cores >= 0.95 * processes::cores() as f64;
        steps.push(step);
        if let Some(reason) = passed {
            let note = if saturated {
                "; the machine was saturated (the load generator shares its cores)"
            } else {
                ""
            };
            limit = Some(Limit {
                reached: true,
                n: Some(n),
                reason: format!("{reason}{note}"),
            });
            break;
        }
    }
    let limit = limit.unwrap_or_else(|| not_reached(&steps, config));
    futures::future::join_all(members.into_iter().map(|m| m.participant.leave())).await;
    drop(system);
    let instead_of_the_node = match &config.janus {
        Some(janus) if sfu == Sfu::Janus => Some(format!(
            "Janus {} VideoRoom (event_loops = {})",
            janus::version(&janus.binary),
            janus.event_loops
        )),
        _ => None,
    };
    let description = match &instead_of_the_node {
        Some(sfu) => format!(
            "{}; on {sfu} instead of the node",
            scenario.description(media)
        ),
        None => scenario.description(media),
    };
    Ok(ScenarioReport {
        name,
        description,
        instead_of_the_node,
        steps,
        limit,
    })
}

/// Why the ramp stops after `step`, if it does: loss, or (on Treffpunkt) a node's CPU passed
/// its limit.
fn limit_passed(step: &Step, sfu: Sfu, config: &RampConfig) -> Option<String> {
    let n = step.n;
    // A node's loop runs on one core; another SFU (Janus with its event loops) may use them
    // all, and only loss stops its ramp. Shards are read as one process: their share each.
    let node_cores = match config.shards {
        true => step.node.cpu_cores / f64::from(config.nodes.max(1)),
        false => step.node.busiest_node_cores.unwrap_or(step.node.cpu_cores),
    };
    if step.loss > config.loss_limit {
        Some(format!(
            "loss passed {:.1} % at N={n} ({:.2} %)",
            config.loss_limit * 100.0,
            step.loss * 100.0
        ))
    } else if sfu == Sfu::Treffpunkt && node_cores > config.node_core_limit {
        Some(format!(
            "node CPU passed {} core(s) at N={n} ({node_cores:.2} cores)",
            config.node_core_limit
        ))
    } else {
        None
    }
}

/// The limit of a ramp that ended before loss or node CPU passed theirs: how far it got, and
/// where one node core would be at the rate measured last.
fn not_reached(steps: &[Step], config: &RampConfig) -> Limit {
    let Some(last) = steps.last() else {
        return Limit {
            reached: false,
            n: None,
            reason: "no step ran".into(),
        };
    };
    let per_core = (last.node.cpu_cores > 0.0)
        .then(|| last.forwarded_packets_per_second / last.node.cpu_cores * config.node_core_limit);
    let mut reason = format!(
        "limits not reached up to N={} (node {:.2} cores, loss {:.2} %)",
        last.n,
        last.node.cpu_cores,
        last.loss * 100.0
    );
    if let Some(per_core) = per_core {
        reason.push_str(&format!(
            "; at that cost one node core would forward about {:.0} thousand pkt/s",
            per_core / 1000.0
        ));
    }
    if last.machine_busy_cores >= 0.9 * processes::cores() as f64 {
        reason.push_str("; the machine was nearly saturated (the load generator shares its cores)");
    }
    Limit {
        reached: false,
        n: None,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let p = percentiles((1..=100).map(f64::from).rev().collect());
        assert_eq!(
            (p.samples, p.p50, p.p95, p.p99),
            (100, Some(50.0), Some(95.0), Some(99.0))
        );
        assert_eq!(percentiles(Vec::new()).p50, None);
    }

    #[test]
    fn what_arrives_is_expected_from_its_indexes_and_a_stall_is_loss() {
        let end = Instant::now();
        let stats = |distinct, expected, layer, ago_ms| TrackStats {
            distinct,
            expected,
            layer: Some(layer),
            last_at: end.checked_sub(Duration::from_millis(ago_ms)),
            ..TrackStats::default()
        };
        let sent = [50, 150, 300];
        assert_eq!(
            expected_packets(&stats(0, 0, 0, 0), &stats(48, 49, 0, 30), [50, 0, 0], end),
            49,
            "a frame in flight at the window's end is not lost; the gap before it is"
        );
        assert_eq!(
            expected_packets(&stats(10, 10, 0, 0), &stats(300, 305, 2, 10), sent, end),
            295,
            "with simulcast: the stretches that arrived"
        );
        assert_eq!(
            expected_packets(&stats(10, 10, 1, 0), &stats(10, 10, 1, 4000), sent, end),
            150,
            "a stalled video loses what its layer sent"
        );
        assert_eq!(
            expected_packets(&stats(10, 10, 0, 0), &stats(20, 20, 0, 2000), sent, end),
            50,
            "a track that stopped in the window loses what was sent"
        );
        assert_eq!(
            expected_packets(
                &TrackStats::default(),
                &TrackStats::default(),
                [40, 0, 0],
                end
            ),
            40,
            "nothing at all arrived"
        );
    }

    #[test]
    fn an_unfinished_ramp_extrapolates_to_one_core() {
        let config = RampConfig {
            binary: PathBuf::new(),
            janus: None,
            window: Duration::from_secs(1),
            warmup: Duration::from_secs(1),
            loss_limit: 0.01,
            node_core_limit: 1.0,
            join_concurrency: 1,
            baseline_us: None,
            verbose: false,
            nodes: 1,
            shards: false,
            node_capacity: None,
            logs: None,
        };
        let mut step = crate::report::tests::step(8, 0.0, 0.25);
        step.forwarded_packets_per_second = 50_000.0;
        let limit = not_reached(&[step], &config);
        assert!(!limit.reached);
        assert!(
            limit.reason.contains("about 200 thousand pkt/s"),
            "{}",
            limit.reason
        );
    }
}
