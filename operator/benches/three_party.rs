//! What the media node costs per forwarded packet in a three-person call.
//!
//! Runs `treffpunkt standalone` as its own process, joins three Rust participants (30 fps video
//! of 1000-byte packets plus 50 audio packets per second each), and reads the node process's
//! CPU time (user + system, from `/proc`) over a measuring window, divided by the packets the
//! participants received in that window.
//!
//! The machines are shared and noisy, so the same run also measures a baseline: a bare UDP relay
//! thread that receives each datagram once and sends it to two receivers (the least any
//! forwarder must do for a three-person call), and reports the node's cost as a multiple of it.
//!
//! `cargo bench -p treffpunkt-operator --bench three_party` (`-- --seconds 20` to change the
//! window).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use treffpunkt_client::{Kind, Participant, Publish, signal_url};

/// Linux reports CPU time in ticks of 1/100 s.
const TICKS_PER_SECOND: f64 = 100.0;

/// User + system CPU seconds of a process or thread, from its `stat` file.
fn cpu_seconds(stat_path: &str) -> f64 {
    let stat = std::fs::read_to_string(stat_path).expect("the stat file is readable");
    let after_name = stat.rsplit_once(')').expect("stat has a command name").1;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / TICKS_PER_SECOND
}

struct Node {
    child: Child,
    http: std::net::SocketAddr,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node() -> Node {
    let mut child = Command::new(env!("CARGO_BIN_EXE_treffpunkt"))
        .args([
            "standalone",
            "--listen",
            "127.0.0.1:0",
            "--udp-port",
            "0",
            "--tcp-port",
            "0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the treffpunkt binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let http = loop {
        let line = lines
            .next()
            .expect("standalone prints its address")
            .unwrap();
        if let Some(rest) = line.split("Open http://").nth(1) {
            let address = rest.split('/').next().unwrap();
            break address.parse().expect("an address");
        }
    };
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Node { child, http }
}

fn received_total(participants: &[Participant]) -> u64 {
    participants
        .iter()
        .flat_map(|receiver| {
            participants
                .iter()
                .filter(|source| source.id != receiver.id)
                .flat_map(move |source| {
                    [Kind::Audio, Kind::Video].map(|kind| receiver.stats(&source.id, kind).packets)
                })
        })
        .sum()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args
        .iter()
        .position(|a| a == "--seconds")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let node = start_node();
    let stat_path = format!("/proc/{}/stat", node.child.id());
    let url = signal_url(node.http, "public", "bench");
    let (node_per_packet, forwarded, window) = runtime.block_on(async {
        let mut participants = Vec::new();
        for name in ["Anna", "Ben", "Cem"] {
            let participant = Participant::join(&url, name, Some(Publish::default()))
                .await
                .expect("a participant joins");
            participants.push(participant);
        }
        // Warm up: connections settle, keyframes arrive.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (cpu_before, packets_before, started) = (
            cpu_seconds(&stat_path),
            received_total(&participants),
            Instant::now(),
        );
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let (cpu_after, packets_after) = (cpu_seconds(&stat_path), received_total(&participants));
        let window = started.elapsed();
        for participant in participants {
            participant.leave().await;
        }
        let forwarded = packets_after - packets_before;
        (
            (cpu_after - cpu_before) / forwarded.max(1) as f64,
            forwarded,
            window,
        )
    });
    // A bare relay thread: receive once, send twice (to the two others), in seconds.
    let baseline = treffpunkt_client::baseline::relay_us_per_datagram(200_000, 2)
        .expect("loopback UDP sockets for the baseline relay")
        .expect("the baseline relay forwarded datagrams")
        / 1e6;
    let report = serde_json::json!({
        "scenario": "three participants, 30 fps x 1000 B video + 50 pps audio each",
        "window_seconds": window.as_secs_f64(),
        "forwarded_packets": forwarded,
        "forwarded_packets_per_second": forwarded as f64 / window.as_secs_f64(),
        "node_cpu_us_per_forwarded_packet": node_per_packet * 1e6,
        "baseline_relay_cpu_us_per_forwarded_packet": baseline * 1e6,
        "node_vs_baseline": node_per_packet / baseline,
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
