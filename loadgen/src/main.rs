//! Treffpunkt's load generator and media-node benchmark.
//!
//! Synthetic participants ([`treffpunkt_client`], on the `webrtc` crate) join through the
//! gateway's WebSocket exactly as browsers do, publish Opus-sized audio and VP8-shaped video
//! whose every packet carries its index and send time, and count what they receive. The gateway
//! and one media node run as processes of their own, so the node's CPU time and memory are read
//! from `/proc` apart from everything else; the load generator's own cost is reported beside
//! them, since it shares the machine.
//!
//! - `run`: ramps the scenarios ([`scenario`]) up through values of N, measures a window at
//!   each ([`ramp`]), stops where loss or the node's CPU passes its limit, and writes the JSON
//!   report ([`report`]), with a bare UDP relay measured in the same run as the baseline
//!   ([`baseline`]). With `--sfu treffpunkt,janus` it measures each scenario on Janus's
//!   VideoRoom as well, the SFU users would otherwise pick ([`janus`]), with the same
//!   participants counting the same way.
//! - `check`: checks that a report is well formed and that packets flowed (no timing).
//! - `table`: prints a report as the Markdown section of `docs/benchmarks.md`.
//! - `flood`: sends garbage to a media port, from unknown sources and forged with participants'
//!   addresses ([`flood`]), for the tests that show a call shrugs it off.
//! - `absorb`: how much of that garbage a second the media port takes with a call still clean
//!   ([`absorb`]), against the same call without garbage in the same run.
//!
//! `scripts/bench` runs the whole benchmark with one command.
#![forbid(unsafe_code)]

mod absorb;
mod flood;
mod janus;
mod processes;
mod ramp;
mod report;
mod scenario;
mod system;

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, Subcommand};

use report::{Baseline, Report, Settings, Targets};
use scenario::{Media, Scenario};
use treffpunkt_client::baseline;

/// How many receivers the baseline relay sends each datagram to.
const BASELINE_FAN_OUT: usize = 4;

/// An Opus frame's length in milliseconds, as the command line gives it.
fn audio_frame_ms(text: &str) -> Result<u32, String> {
    match text.parse() {
        Ok(ms @ (10 | 20 | 40 | 60 | 80 | 100 | 120)) => Ok(ms),
        _ => Err(format!(
            "{text}: Opus frames are 10, 20, 40, 60, 80, 100 or 120 ms"
        )),
    }
}

/// Treffpunkt's load generator and media-node benchmark.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs scenarios against a gateway and a media node started from the `treffpunkt` binary,
    /// and writes the JSON report.
    Run(Box<RunArgs>),
    /// Checks that a JSON report is well formed and that packets flowed in every step.
    Check {
        /// The report.
        report: PathBuf,
    },
    /// Prints a JSON report as a Markdown section (for docs/benchmarks.md).
    Table {
        /// The report.
        report: PathBuf,
        /// The command that produced it, as the section shows it.
        #[arg(long, default_value = "scripts/bench")]
        command: String,
        /// The date the section shows (default: today, UTC).
        #[arg(long)]
        date: Option<String>,
    },
    /// Sends garbage to a media port at a steady rate (for tests on loopback).
    Flood(flood::FloodArgs),
    /// Measures how much garbage a second the media port absorbs with a call still clean.
    Absorb(absorb::AbsorbArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The scenarios to run, comma-separated (default: the three of the published benchmark,
    /// without the fan-out).
    #[arg(long, value_enum, value_delimiter = ',')]
    scenario: Vec<Scenario>,
    /// The values of N to ramp through, comma-separated (default: each scenario's own ramp).
    #[arg(long, value_delimiter = ',')]
    steps: Vec<u32>,
    /// The `treffpunkt` binary (default: the one beside this program).
    #[arg(long, env = "TREFFPUNKT_BIN")]
    treffpunkt: Option<PathBuf>,
    /// Seconds of each measuring window.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Seconds between the last join of a step and its window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Video bitrate in the meeting, bit/s.
    #[arg(long, default_value_t = 500_000)]
    meeting_bitrate: u64,
    /// Video bitrate of the livestream, bit/s.
    #[arg(long, default_value_t = 1_500_000)]
    livestream_bitrate: u64,
    /// Video frames per second.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Seconds between keyframes.
    #[arg(long, default_value_t = 3)]
    keyframe_seconds: u32,
    /// How many times larger a keyframe is than other frames.
    #[arg(long, default_value_t = 4)]
    keyframe_ratio: u32,
    /// The largest payload of one video packet, bytes.
    #[arg(long, default_value_t = 1100)]
    max_packet_size: usize,
    /// Audio payload per packet, bytes (120 B is 20 ms of Opus at 48 kbit/s).
    #[arg(long, default_value_t = 120)]
    audio_packet_size: usize,
    /// Milliseconds of sound per audio packet, as Opus frames them (20: 50 packets a second).
    #[arg(long, default_value_t = 20, value_parser = audio_frame_ms)]
    audio_frame_ms: u32,
    /// Silent microphones send as Opus in discontinuous transmission (DTX) does: one packet
    /// in 400 ms.
    #[arg(long)]
    audio_dtx: bool,
    /// How many publishers talk (the first to join): their audio carries a voice's level and
    /// goes every frame; the others' microphones are silent.
    #[arg(long, default_value_t = 0)]
    talking: u32,
    /// Publish cameras in three simulcast layers (a tenth, a third and all of the bitrate);
    /// each subscriber then receives the layer the node chooses for it.
    #[arg(long)]
    simulcast: bool,
    /// The fan-out scenario's packets a second.
    #[arg(long, default_value_t = 1000)]
    fanout_rate: u32,
    /// The fan-out scenario's payload of one packet, bytes.
    #[arg(long, default_value_t = 1000)]
    fanout_payload: usize,
    /// The SFUs to measure each scenario on, comma-separated, one after the other in this
    /// run: `treffpunkt` (the default) and `janus` (Janus's VideoRoom, for the fan-out and the
    /// livestream; see `scripts/bench-janus`).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "treffpunkt")]
    sfu: Vec<ramp::Sfu>,
    /// The `janus` binary.
    #[arg(long, default_value = "janus")]
    janus: PathBuf,
    /// The folder that holds Janus's `plugins/` and `transports/`.
    #[arg(long, default_value = janus::DEFAULT_LIBRARY)]
    janus_library: PathBuf,
    /// Janus's event loops (0: its default, a thread per peer connection).
    #[arg(long, default_value_t = 2)]
    janus_event_loops: u32,
    /// The address Janus and its participants use for media: one of an interface other than
    /// loopback, since Janus gathers no candidates on loopback.
    #[arg(long)]
    janus_ip: Option<std::net::IpAddr>,
    /// Loss (a share) above which a ramp stops.
    #[arg(long, default_value_t = 0.01)]
    loss_limit: f64,
    /// The media node's CPU in cores above which a ramp stops (another SFU's ramp, `--sfu
    /// janus`, stops on loss alone: it may use every core).
    #[arg(long, default_value_t = 1.0)]
    node_core_limit: f64,
    /// How many participants join at once.
    #[arg(long, default_value_t = 4)]
    join_concurrency: usize,
    /// Media nodes (each a process of its own); with more than one, each takes its share of
    /// the largest step, so that the room spreads over them as it grows.
    #[arg(long, default_value_t = 1)]
    nodes: u32,
    /// The participants each node takes (default: see `--nodes`).
    #[arg(long)]
    node_capacity: Option<u32>,
    /// Keep the gateway's and the media nodes' logs (at `info`, or at what `RUST_LOG` says) in
    /// this folder, one file each (`gateway.log`, `bench-1.log`, ...), to read what happened in
    /// a run that failed.
    #[arg(long)]
    logs: Option<PathBuf>,
    /// Run the `--nodes` media nodes as shards of standalone mode's process, one thread each
    /// (`treffpunkt standalone --media-shards`), as a machine runs it; their CPU is then the
    /// process's, the gateway's included.
    #[arg(long)]
    shards: bool,
    /// Datagrams through the bare relay of the baseline (0: skip it).
    #[arg(long, default_value_t = 200_000)]
    baseline_datagrams: u64,
    /// The commit measured, recorded in the report.
    #[arg(long)]
    commit: Option<String>,
    /// Where to write the JSON report (default: standard output).
    #[arg(long)]
    output: Option<PathBuf>,
    /// After writing the report, check it as `check` does and fail if it is not well formed.
    #[arg(long)]
    check: bool,
    /// Print progress on standard error.
    #[arg(long, short)]
    verbose: bool,
}

fn main() -> anyhow::Result<()> {
    match Args::parse().command {
        Command::Run(args) => run(*args),
        Command::Check { report } => {
            let report = read(&report)?;
            report.check().map_err(anyhow::Error::msg)?;
            let steps: usize = report.scenarios.iter().map(|s| s.steps.len()).sum();
            println!(
                "report well formed: {} scenario(s), {steps} step(s), packets flowed in each",
                report.scenarios.len()
            );
            Ok(())
        }
        Command::Table {
            report,
            command,
            date,
        } => {
            let report = read(&report)?;
            let date = date.unwrap_or_else(|| today(report.started_unix));
            print!("{}", report.markdown(&command, &date));
            Ok(())
        }
        Command::Flood(args) => {
            let sent = flood::run(&args)?;
            println!("sent {sent} datagrams");
            Ok(())
        }
        Command::Absorb(args) => {
            let binary = treffpunkt_binary(args.treffpunkt.clone())?;
            tokio::runtime::Runtime::new()?.block_on(absorb::run(args, binary))
        }
    }
}

fn read(path: &PathBuf) -> anyhow::Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a report", path.display()))
}

/// The calendar date (UTC) of a Unix time, as YYYY-MM-DD.
fn today(unix: u64) -> String {
    // Days to civil date (Howard Hinnant's algorithm).
    let days = (unix / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The `treffpunkt` binary: `given`, or the one next to this program.
fn treffpunkt_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let binary = match given {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .context("this program's folder")?
            .join("treffpunkt"),
    };
    anyhow::ensure!(
        binary.exists(),
        "no treffpunkt binary at {} (build it, or pass --treffpunkt)",
        binary.display()
    );
    Ok(binary)
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let binary = treffpunkt_binary(args.treffpunkt.clone())?;
    let scenarios = if args.scenario.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenario.clone()
    };
    let media = Media {
        audio_packet_size: args.audio_packet_size,
        audio_frame_ms: args.audio_frame_ms,
        audio_dtx: args.audio_dtx,
        talking: args.talking,
        meeting_bitrate: args.meeting_bitrate,
        livestream_bitrate: args.livestream_bitrate,
        fps: args.fps,
        keyframe_seconds: args.keyframe_seconds,
        keyframe_ratio: args.keyframe_ratio,
        max_packet_size: args.max_packet_size,
        simulcast: args.simulcast,
        fanout_rate: args.fanout_rate,
        fanout_payload: args.fanout_payload,
    };
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if args.verbose {
        eprintln!("baseline: a bare UDP relay");
    }
    let baseline_us = baseline::relay_us_per_datagram(args.baseline_datagrams, BASELINE_FAN_OUT)?;
    let janus = match args.janus_ip {
        Some(ip) => Some(janus::JanusConfig {
            binary: args.janus.clone(),
            library: args.janus_library.clone(),
            event_loops: args.janus_event_loops,
            ip,
        }),
        None if args.sfu.contains(&ramp::Sfu::Janus) => {
            anyhow::bail!("--sfu janus needs --janus-ip (Janus gathers no candidates on loopback)")
        }
        None => None,
    };
    let config = ramp::RampConfig {
        binary,
        janus,
        window: Duration::from_secs_f64(args.seconds),
        warmup: Duration::from_secs_f64(args.warmup),
        loss_limit: args.loss_limit,
        node_core_limit: args.node_core_limit,
        join_concurrency: args.join_concurrency,
        baseline_us,
        verbose: args.verbose,
        nodes: args.nodes,
        shards: args.shards,
        node_capacity: args.node_capacity,
        logs: args.logs.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(processes::cores().min(2))
        .enable_all()
        .build()?;
    let mut reports = Vec::new();
    for scenario in scenarios {
        let ramp_values = if args.steps.is_empty() {
            scenario.default_ramp()
        } else {
            args.steps.clone()
        };
        for &sfu in &args.sfu {
            let report = runtime
                .block_on(ramp::run(scenario, sfu, &ramp_values, &media, &config))
                .with_context(|| format!("scenario {} on {sfu:?}", scenario.name()))?;
            reports.push(report);
        }
    }
    let report = Report {
        tool: format!("treffpunkt-loadgen {}", env!("CARGO_PKG_VERSION")),
        commit: args.commit,
        started_unix,
        cores: processes::cores(),
        settings: Settings {
            window_seconds: args.seconds,
            warmup_seconds: args.warmup,
            loss_limit: args.loss_limit,
            node_core_limit: args.node_core_limit,
            join_concurrency: args.join_concurrency,
            shards: if args.shards { args.nodes } else { 0 },
        },
        baseline: Baseline {
            description: format!(
                "a bare UDP relay thread, each {} B datagram received once and sent to {} receivers",
                baseline::DATAGRAM_SIZE,
                BASELINE_FAN_OUT
            ),
            relay_cpu_us_per_datagram: baseline_us,
        },
        targets: Targets::default(),
        scenarios: reports,
    };
    let json = serde_json::to_string_pretty(&report)?;
    match &args.output {
        Some(path) => std::fs::write(path, json + "\n")
            .with_context(|| format!("writing {}", path.display()))?,
        None => println!("{json}"),
    }
    if args.check {
        let path = args.output.context("--check needs --output")?;
        read(&path)?.check().map_err(anyhow::Error::msg)?;
        eprintln!("report well formed, packets flowed in every step");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates_are_civil() {
        assert_eq!(super::today(0), "1970-01-01");
        assert_eq!(super::today(951_782_400), "2000-02-29");
        assert_eq!(super::today(1_767_225_600), "2026-01-01");
    }
}
