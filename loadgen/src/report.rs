//! The benchmark's report: JSON for machines, checked for shape by `check`, and a Markdown
//! table for `docs/benchmarks.md`.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// What the issue asks of the node (loopback, this 2-core machine).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Targets {
    /// Node CPU (user + system) per forwarded packet, SRTP on, at most.
    pub node_cpu_us_per_packet: f64,
    /// Join-to-first-packet p95, below.
    pub join_to_first_packet_p95_ms: f64,
    /// Loss below saturation, below.
    pub loss: f64,
}

impl Default for Targets {
    fn default() -> Self {
        Self {
            node_cpu_us_per_packet: 3.0,
            join_to_first_packet_p95_ms: 200.0,
            loss: 0.005,
        }
    }
}

/// A whole run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// `treffpunkt-loadgen` and its version.
    pub tool: String,
    /// The commit measured, when the caller said.
    pub commit: Option<String>,
    /// When the run started, seconds since the Unix epoch.
    pub started_unix: u64,
    /// The machine's cores.
    pub cores: usize,
    /// How the run was set up.
    pub settings: Settings,
    /// The baseline measured in the same run.
    pub baseline: Baseline,
    /// What the node should reach.
    pub targets: Targets,
    /// One entry per scenario.
    pub scenarios: Vec<ScenarioReport>,
}

/// How the run was set up.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    /// Seconds of each measuring window.
    pub window_seconds: f64,
    /// Seconds between the last join of a step and its window.
    pub warmup_seconds: f64,
    /// Loss above which the ramp stops.
    pub loss_limit: f64,
    /// Node CPU (cores) above which the ramp stops.
    pub node_core_limit: f64,
    /// How many participants join at once.
    pub join_concurrency: usize,
    /// How many media nodes ran as shards of the gateway's process; 0 when each node was a
    /// process of its own.
    #[serde(default)]
    pub shards: u32,
}

/// The bare relay measured in the same run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Baseline {
    /// What it is.
    pub description: String,
    /// Its CPU per forwarded datagram; `None` when skipped.
    pub relay_cpu_us_per_datagram: Option<f64>,
}

/// One scenario's ramp.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScenarioReport {
    /// `audio-room`, `meeting` or `livestream`.
    pub name: String,
    /// What N means and what is sent.
    pub description: String,
    /// The SFU measured instead of the node, for comparison (`None`: the node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instead_of_the_node: Option<String>,
    /// One entry per N measured.
    pub steps: Vec<Step>,
    /// Where the ramp stopped and why.
    pub limit: Limit,
}

/// Where a ramp stopped.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Limit {
    /// Whether loss or node CPU passed its limit (rather than the ramp ending).
    pub reached: bool,
    /// The N at which it did.
    pub n: Option<u32>,
    /// Why the ramp stopped, in words.
    pub reason: String,
}

/// Percentiles in milliseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    /// How many samples.
    pub samples: u64,
    /// Median.
    pub p50: Option<f64>,
    /// 95th percentile.
    pub p95: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
}

/// The time from joining to the first packet, for the pairs that met in a step.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FirstPacket {
    /// First packet of any kind (usually audio).
    pub any_ms: Percentiles,
    /// First video packet.
    pub video_ms: Percentiles,
    /// Pairs that received nothing by the end of the window.
    pub missing: u64,
}

/// The node process in a step's window.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct NodeUsage {
    /// CPU (user + system) in cores over the window.
    pub cpu_cores: f64,
    /// User CPU seconds in the window.
    pub user_seconds: f64,
    /// System CPU seconds in the window.
    pub system_seconds: f64,
    /// CPU seconds per million forwarded packets (the same number as µs per packet).
    pub cpu_seconds_per_million_packets: Option<f64>,
    /// Forwarded packets per CPU second.
    pub packets_per_cpu_second: Option<f64>,
    /// The CPU per packet as a multiple of the bare relay's per datagram.
    pub vs_baseline: Option<f64>,
    /// Resident memory at the end of the window, KiB.
    pub rss_kib: u64,
    /// Resident memory above the idle node's, per participant, KiB.
    pub rss_kib_per_participant: Option<f64>,
    /// With several nodes (a room that spans them; the figures above are their sums): how
    /// many host participants at the end of the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes_hosting: Option<u32>,
    /// With several nodes: the CPU of the busiest, in cores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busiest_node_cores: Option<f64>,
}

/// Another process's (or the machine's) CPU in a step's window.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CpuUsage {
    /// CPU in cores over the window.
    pub cpu_cores: f64,
    /// CPU µs per forwarded packet.
    pub cpu_us_per_packet: Option<f64>,
}

/// One N of a ramp.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Step {
    /// The scenario's N.
    pub n: u32,
    /// Participants that publish.
    pub publishers: u32,
    /// Participants that only listen.
    pub listeners: u32,
    /// The measuring window, seconds.
    pub window_seconds: f64,
    /// Intact packets the subscribers received in the window.
    pub forwarded_packets: u64,
    /// The same per second.
    pub forwarded_packets_per_second: f64,
    /// Packets the subscribers should have received in the window (what the publishers sent,
    /// times their subscribers).
    pub expected_packets: u64,
    /// The share of expected packets that never arrived (distinct indices).
    pub loss: f64,
    /// Packets that arrived altered.
    pub corrupt_packets: u64,
    /// One-way latency, publisher to subscriber.
    pub latency_ms: Percentiles,
    /// Join to first packet of the participants that joined in this step.
    pub join_to_first_packet: FirstPacket,
    /// How long joining took (until media was connected), for those participants.
    pub join_ms: Percentiles,
    /// The media node.
    pub node: NodeUsage,
    /// The gateway (signalling only, once everyone is in).
    pub gateway: CpuUsage,
    /// The load generator itself (it shares the machine).
    pub load_generator: CpuUsage,
    /// All processes of the machine, in cores (from `/proc/stat`, which samples per tick:
    /// approximate at light load).
    pub machine_busy_cores: f64,
    /// The tracks that lost most packets in the window, worst first.
    #[serde(default)]
    pub worst_tracks: Vec<TrackLoss>,
}

/// What one subscriber missed of one track in a window.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TrackLoss {
    /// The subscriber's name.
    pub receiver: String,
    /// The publisher's name.
    pub source: String,
    /// `audio` or `video`.
    pub kind: String,
    /// Packets the publisher sent in the window.
    pub expected: u64,
    /// Distinct packets that arrived.
    pub received: u64,
}

impl Report {
    /// Checks that the report is well formed and that packets flowed in every step; timings
    /// are not judged.
    pub fn check(&self) -> Result<(), String> {
        if self.scenarios.is_empty() {
            return Err("no scenario".into());
        }
        for scenario in &self.scenarios {
            let name = &scenario.name;
            if scenario.steps.is_empty() {
                return Err(format!(
                    "{name}: no step was measured ({})",
                    scenario.limit.reason
                ));
            }
            for step in &scenario.steps {
                let at = format!("{name}, N={}", step.n);
                if step.forwarded_packets == 0 || step.forwarded_packets_per_second <= 0.0 {
                    return Err(format!("{at}: no packets were forwarded"));
                }
                if step.expected_packets == 0 {
                    return Err(format!("{at}: no packets were expected"));
                }
                if !(0.0..=1.0).contains(&step.loss) {
                    return Err(format!("{at}: loss {} is not a share", step.loss));
                }
                if step.corrupt_packets > 0 {
                    return Err(format!(
                        "{at}: {} packets arrived altered",
                        step.corrupt_packets
                    ));
                }
                if step.latency_ms.samples == 0 || step.latency_ms.p50.is_none() {
                    return Err(format!("{at}: no latency was measured"));
                }
                if step.node.rss_kib == 0 {
                    return Err(format!("{at}: the node's memory was not read"));
                }
                if step.window_seconds <= 0.0 {
                    return Err(format!("{at}: no measuring window"));
                }
            }
        }
        Ok(())
    }

    /// The Markdown section for `docs/benchmarks.md`: what ran, then one row per step.
    pub fn markdown(&self, command: &str, date: &str) -> String {
        let mut out = String::new();
        let commit = self.commit.as_deref().unwrap_or("unknown");
        let _ = writeln!(out, "### {date}, commit `{commit}`\n");
        let _ = writeln!(out, "Command: `{command}`");
        let processes = match self.settings.shards {
            0 => "node, gateway and load generator as separate processes".to_owned(),
            shards => format!(
                "{shards} media nodes as shards of the gateway's process (node CPU is that \
                 process's), the load generator a process of its own"
            ),
        };
        let _ = writeln!(
            out,
            "({} cores; windows of {} s after {} s of warm-up; {processes} on loopback.)\n",
            self.cores, self.settings.window_seconds, self.settings.warmup_seconds
        );
        match self.baseline.relay_cpu_us_per_datagram {
            Some(us) => {
                let _ = writeln!(
                    out,
                    "Baseline in the same run: {}: **{us:.2} µs** per forwarded datagram.\n",
                    self.baseline.description
                );
            }
            None => {
                let _ = writeln!(out, "Baseline: not measured in this run.\n");
            }
        }
        let _ = writeln!(
            out,
            "| scenario | N | pub + listen | fwd pkt/s | node cores | node µs/pkt (CPU s per M) \
             | × relay | loss | latency p50 / p95 / p99 ms | join→1st pkt p50 / p95 ms \
             | node RSS KiB / participant | loadgen cores (µs/pkt) | machine cores |"
        );
        let _ = writeln!(out, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for scenario in &self.scenarios {
            for step in &scenario.steps {
                let latency = &step.latency_ms;
                let first = &step.join_to_first_packet.any_ms;
                let node_cores = match (step.node.nodes_hosting, step.node.busiest_node_cores) {
                    (Some(hosting), Some(busiest)) => format!(
                        "{:.2} ({hosting} nodes, busiest {busiest:.2})",
                        step.node.cpu_cores
                    ),
                    (Some(hosting), None) => {
                        format!("{:.2} ({hosting} nodes)", step.node.cpu_cores)
                    }
                    _ => format!("{:.2}", step.node.cpu_cores),
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} + {} | {:.0} | {} | {} | {} | {:.2} % | {} / {} / {} | {} / {} | {} | {:.2} ({}) | {:.2} |",
                    scenario.name,
                    step.n,
                    step.publishers,
                    step.listeners,
                    step.forwarded_packets_per_second,
                    node_cores,
                    number(step.node.cpu_seconds_per_million_packets, 2),
                    number(step.node.vs_baseline, 1),
                    step.loss * 100.0,
                    number(latency.p50, 1),
                    number(latency.p95, 1),
                    number(latency.p99, 1),
                    number(first.p50, 0),
                    number(first.p95, 0),
                    number(step.node.rss_kib_per_participant, 0),
                    step.load_generator.cpu_cores,
                    number(step.load_generator.cpu_us_per_packet, 1),
                    step.machine_busy_cores,
                );
            }
        }
        let _ = writeln!(out);
        for scenario in &self.scenarios {
            let _ = writeln!(
                out,
                "- **{}** ({}): {}.",
                scenario.name, scenario.description, scenario.limit.reason
            );
        }
        for line in self.comparisons() {
            let _ = writeln!(out, "{line}");
        }
        let _ = writeln!(out, "\n{}", self.against_targets());
        out
    }

    /// For each step that the node and another SFU both ran (same scenario, same N), the node's
    /// CPU per packet as a share of the other's.
    fn comparisons(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for other in &self.scenarios {
            let Some(sfu) = &other.instead_of_the_node else {
                continue;
            };
            let Some(node) = self.scenarios.iter().find(|s| {
                s.instead_of_the_node.is_none() && other.name.starts_with(&format!("{}-", s.name))
            }) else {
                continue;
            };
            for theirs in &other.steps {
                let ours = node.steps.iter().find(|s| s.n == theirs.n);
                let ratio = ours
                    .and_then(|s| s.node.cpu_seconds_per_million_packets)
                    .zip(theirs.node.cpu_seconds_per_million_packets)
                    .map(|(ours, theirs)| ours / theirs);
                if let (Some(ours), Some(ratio)) = (ours, ratio) {
                    lines.push(format!(
                        "- {} at N={}: the node's CPU per packet is **{ratio:.2} ×** {sfu}'s \
                         (loss {:.2} % against {:.2} %).",
                        node.name,
                        theirs.n,
                        ours.loss * 100.0,
                        theirs.loss * 100.0
                    ));
                }
            }
        }
        lines
    }

    /// Where the node stands against the targets, over the steps below saturation.
    pub fn against_targets(&self) -> String {
        let targets = &self.targets;
        // Another SFU's steps, measured for comparison, are not the node's.
        let steps: Vec<&Step> = self
            .scenarios
            .iter()
            .filter(|s| s.instead_of_the_node.is_none())
            .flat_map(|s| &s.steps)
            .collect();
        let below: Vec<&&Step> = steps
            .iter()
            .filter(|s| {
                s.node.cpu_cores < self.settings.node_core_limit
                    && s.loss <= self.settings.loss_limit
            })
            .collect();
        let worst_cpu = below
            .iter()
            .filter_map(|s| s.node.cpu_seconds_per_million_packets)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        let best_cpu = below
            .iter()
            .filter_map(|s| s.node.cpu_seconds_per_million_packets)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.min(v))));
        let worst_join = below
            .iter()
            .filter_map(|s| s.join_to_first_packet.any_ms.p95)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        let worst_loss = below
            .iter()
            .map(|s| s.loss)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        let verdict = |ok: Option<bool>| match ok {
            Some(true) => "met",
            Some(false) => "**not met**",
            None => "not measured",
        };
        format!(
            "Against the targets (steps below the limits): node CPU {} to {} µs per packet \
             (target ≤ {} µs: {}); join-to-first-packet p95 at most {} ms (target < {} ms: {}); \
             loss at most {} (target < {:.1} %: {}).",
            number(best_cpu, 2),
            number(worst_cpu, 2),
            targets.node_cpu_us_per_packet,
            verdict(worst_cpu.map(|v| v <= targets.node_cpu_us_per_packet)),
            number(worst_join, 0),
            targets.join_to_first_packet_p95_ms,
            verdict(worst_join.map(|v| v < targets.join_to_first_packet_p95_ms)),
            worst_loss.map_or("–".to_owned(), |l| format!("{:.2} %", l * 100.0)),
            targets.loss * 100.0,
            verdict(worst_loss.map(|v| v < targets.loss)),
        )
    }
}

fn number(value: Option<f64>, decimals: usize) -> String {
    value.map_or("–".to_owned(), |v| format!("{v:.decimals$}"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn step(n: u32, loss: f64, cores: f64) -> Step {
        Step {
            n,
            publishers: n,
            listeners: 0,
            window_seconds: 5.0,
            forwarded_packets: 10_000,
            forwarded_packets_per_second: 2_000.0,
            expected_packets: 10_010,
            loss,
            corrupt_packets: 0,
            latency_ms: Percentiles {
                samples: 10_000,
                p50: Some(0.4),
                p95: Some(1.0),
                p99: Some(2.0),
            },
            join_to_first_packet: FirstPacket::default(),
            join_ms: Percentiles::default(),
            node: NodeUsage {
                cpu_cores: cores,
                cpu_seconds_per_million_packets: Some(4.0),
                rss_kib: 20_000,
                ..NodeUsage::default()
            },
            gateway: CpuUsage::default(),
            load_generator: CpuUsage::default(),
            machine_busy_cores: 1.0,
            worst_tracks: Vec::new(),
        }
    }

    pub(crate) fn report(steps: Vec<Step>) -> Report {
        Report {
            tool: "treffpunkt-loadgen".into(),
            commit: Some("abc1234".into()),
            started_unix: 0,
            cores: 2,
            settings: Settings {
                window_seconds: 5.0,
                warmup_seconds: 2.0,
                loss_limit: 0.01,
                node_core_limit: 1.0,
                join_concurrency: 4,
                shards: 0,
            },
            baseline: Baseline {
                description: "relay".into(),
                relay_cpu_us_per_datagram: Some(2.0),
            },
            targets: Targets::default(),
            scenarios: vec![ScenarioReport {
                name: "meeting".into(),
                description: "N x N".into(),
                instead_of_the_node: None,
                steps,
                limit: Limit {
                    reached: false,
                    n: None,
                    reason: "the ramp ended".into(),
                },
            }],
        }
    }

    #[test]
    fn a_report_survives_json_and_its_check() {
        let report = report(vec![step(2, 0.0, 0.1), step(4, 0.001, 0.2)]);
        let json = serde_json::to_string(&report).unwrap();
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back.check(), Ok(()));
    }

    #[test]
    fn the_check_refuses_a_step_without_packets() {
        let mut silent = step(2, 0.0, 0.1);
        silent.forwarded_packets = 0;
        let error = report(vec![silent]).check().unwrap_err();
        assert!(error.contains("no packets"), "{error}");
        assert!(report(vec![]).check().is_err(), "a scenario without steps");
    }

    #[test]
    fn the_table_has_a_row_per_step_and_the_verdicts() {
        let markdown = report(vec![step(2, 0.0, 0.1), step(4, 0.02, 0.2)])
            .markdown("scripts/bench", "2026-01-01");
        assert!(markdown.contains("commit `abc1234`"));
        assert!(markdown.contains("Command: `scripts/bench`"));
        assert_eq!(
            markdown
                .lines()
                .filter(|l| l.starts_with("| meeting |"))
                .count(),
            2
        );
        // The step with 2 % loss is past the limit and not judged.
        assert!(markdown.contains("4.00 to 4.00 µs"), "{markdown}");
        assert!(markdown.contains("**not met**"));
    }

    #[test]
    fn another_sfu_is_compared_step_by_step_and_not_judged_as_the_node() {
        let mut report = report(vec![step(2, 0.0, 0.1), step(4, 0.0, 0.2)]);
        let mut janus = report.scenarios[0].clone();
        janus.name = "meeting-janus".into();
        janus.instead_of_the_node = Some("Janus 1.1.2".into());
        for step in &mut janus.steps {
            step.node.cpu_seconds_per_million_packets = Some(8.0);
        }
        report.scenarios.push(janus);
        let markdown = report.markdown("scripts/bench-janus", "2026-01-01");
        assert!(
            markdown
                .contains("meeting at N=4: the node's CPU per packet is **0.50 ×** Janus 1.1.2's"),
            "{markdown}"
        );
        assert!(
            markdown.contains("4.00 to 4.00 µs"),
            "Janus's 8 µs judged as the node's: {markdown}"
        );
    }
}
