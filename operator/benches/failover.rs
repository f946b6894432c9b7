//! How long a call is interrupted when its media node dies: the time from killing the node
//! (SIGKILL) to the first packet each affected participant receives again from each other
//! participant, over several rounds.
//!
//! Runs `treffpunkt standalone --external-media-nodes` and three `treffpunkt media-node`
//! processes, with Rust participants (4 rooms of 3). As a baseline measured in the same run it
//! reports how long a fresh join takes to its first packet from the others, since recovering
//! from a node's loss is a re-join under the hood.
//!
//! `cargo bench -p treffpunkt-operator --bench failover` (`-- --rounds 5`).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use treffpunkt_client::loopback::free_port;
use treffpunkt_client::{Kind, Participant, Publish, signal_url};

const GRANT_KEY: &str = "a shared secret for the failover benchmark";

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_gateway(grpc: u16) -> (Process, std::net::SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_treffpunkt"))
        .args([
            "standalone",
            "--listen",
            "127.0.0.1:0",
            "--external-media-nodes",
        ])
        .args(["--grpc-listen", &format!("127.0.0.1:{grpc}")])
        .env("TREFFPUNKT_GRANT_KEY", GRANT_KEY)
        // Twelve participants a round from this machine's one address: more joins a minute
        // than the limit per address lets through.
        .args(["--max-joins-per-minute", "100000"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .spawn()
        .expect("the gateway starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let http = loop {
        let line = lines
            .next()
            .expect("the gateway prints its address")
            .unwrap();
        if let Some(rest) = line.split("Open http://").nth(1) {
            break rest.split('/').next().unwrap().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (Process(child), http)
}

/// A media node: its id, its process, and the port of its own endpoint.
fn start_node(grpc: u16, id: &str) -> (String, Process, u16) {
    let health = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_treffpunkt"))
        .args([
            "media-node",
            "--node-id",
            id,
            "--control-plane",
            &format!("http://127.0.0.1:{grpc}"),
        ])
        .args(["--udp-bind", "127.0.0.1:0", "--announce-ip", "127.0.0.1"])
        .args(["--health-listen", &format!("127.0.0.1:{health}")])
        .env("TREFFPUNKT_GRANT_KEY", GRANT_KEY)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("a media node starts");
    (id.to_owned(), Process(child), health)
}

/// The participants a node reports on its own endpoint.
async fn participants_of(health: u16) -> u64 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", health)).await else {
        return 0;
    };
    let _ = stream.write_all(b"GET /status HTTP/1.0\r\n\r\n").await;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    response
        .split_once("\r\n\r\n")
        .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(body).ok())
        .and_then(|status| status["participants"].as_u64())
        .unwrap_or(0)
}

fn light() -> Publish {
    Publish {
        video_fps: 15,
        video_packet_size: 600,
        keyframe_interval: 15,
        audio_packet_size: 100,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// For every receiver and source in `room`, the time from `since` to the first packet that
/// arrived after it, given the packet counts at `since` (all pairs are watched at once, every
/// 5 ms).
async fn recovery_times(
    room: &[Participant],
    since: Instant,
    before: &[u64],
    limit: Duration,
) -> Vec<f64> {
    let pairs: Vec<(&Participant, &Participant)> = room
        .iter()
        .flat_map(|receiver| {
            room.iter()
                .filter(|s| s.id != receiver.id)
                .map(move |source| (receiver, source))
        })
        .collect();
    let mut times: Vec<Option<f64>> = vec![None; pairs.len()];
    while Instant::now() < since + limit && times.iter().any(Option::is_none) {
        for (i, (receiver, source)) in pairs.iter().enumerate() {
            let stats = receiver.stats(&source.id, Kind::Audio);
            if times[i].is_none() && stats.packets > before[i] {
                let at = stats.last_at.unwrap_or(since);
                times[i] = Some(at.saturating_duration_since(since).as_secs_f64() * 1000.0);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    times
        .into_iter()
        .map(|t| t.unwrap_or(f64::INFINITY))
        .collect()
}

/// Packets received per (receiver, source) pair of `room`, in the order `recovery_times` uses.
fn counts(room: &[Participant]) -> Vec<u64> {
    room.iter()
        .flat_map(|receiver| {
            room.iter()
                .filter(|s| s.id != receiver.id)
                .map(|source| receiver.stats(&source.id, Kind::Audio).packets)
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let grpc = free_port();
        let (_gateway, http) = start_gateway(grpc);
        let mut nodes: Vec<(String, Process, u16)> = (0..3)
            .map(|i| start_node(grpc, &format!("node-{i}")))
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;

        let mut joins = Vec::new();
        let mut recoveries = Vec::new();
        for round in 0..rounds {
            // Fresh rooms each round; the time of each join to its first packet from the
            // others is the baseline.
            let mut rooms = Vec::new();
            for r in 0..4 {
                let url = signal_url(http, "public", &format!("round{round}-room{r}"));
                let mut members = Vec::new();
                for p in 0..3 {
                    members.push(
                        Participant::join(&url, &format!("p{p}"), Some(light()))
                            .await
                            .unwrap(),
                    );
                }
                rooms.push(members);
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
            for room in &rooms {
                for receiver in room {
                    for source in room.iter().filter(|s| s.id != receiver.id) {
                        if let Some(first) = receiver.stats(&source.id, Kind::Audio).first_at {
                            let joined = receiver.join_sent_at.max(source.join_sent_at);
                            joins.push(first.duration_since(joined).as_secs_f64() * 1000.0);
                        }
                    }
                }
            }
            // Kill the node with the most participants, as the nodes themselves report.
            let mut busiest = 0;
            let mut most = 0;
            for (i, (_, _, health)) in nodes.iter().enumerate() {
                let participants = participants_of(*health).await;
                if participants > most {
                    (busiest, most) = (i, participants);
                }
            }
            let snapshot: Vec<Vec<u64>> = rooms.iter().map(|room| counts(room)).collect();
            let killed_at = Instant::now();
            // Dropping the process kills it (SIGKILL).
            let (id, _, _) = nodes.remove(busiest);
            let per_room =
                futures::future::join_all(rooms.iter().zip(&snapshot).map(|(room, before)| {
                    recovery_times(room, killed_at, before, Duration::from_secs(10))
                }))
                .await;
            for mut times in per_room {
                // Rooms on the other nodes never stopped: their next packet came at once.
                if times.iter().all(|t| *t < 200.0) {
                    continue;
                }
                times.sort_by(f64::total_cmp);
                recoveries.extend(times);
            }
            nodes.push(start_node(grpc, &id));
            for participant in rooms.into_iter().flatten() {
                participant.leave().await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        joins.sort_by(f64::total_cmp);
        recoveries.sort_by(f64::total_cmp);
        let report = serde_json::json!({
            "scenario": "3 media nodes, 4 rooms of 3 participants; one node killed per round",
            "rounds": rounds,
            "recovery_ms": {
                "samples": recoveries.len(),
                "p50": percentile(&recoveries, 50.0),
                "p95": percentile(&recoveries, 95.0),
                "max": recoveries.last().copied().unwrap_or(f64::NAN),
            },
            "baseline_join_to_first_packet_ms": {
                "samples": joins.len(),
                "p50": percentile(&joins, 50.0),
                "p95": percentile(&joins, 95.0),
            },
        });
        println!("{}", serde_json::to_string_pretty(&report).unwrap());
    });
}
