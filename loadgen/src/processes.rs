//! The system under test as processes of their own: the gateway (`treffpunkt standalone
//! --external-media-nodes`) and one media node (`treffpunkt media-node`) attached to it, or
//! several for a room that spans nodes, so that the nodes' CPU time and memory can be read from
//! `/proc` apart from everything else; or standalone mode with its media nodes as shards of its
//! own process (`--media-shards`), as a machine runs it. And the readings themselves.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use treffpunkt_client::loopback::free_port;

/// The key grants are signed with between this gateway and node; they only ever listen on
/// loopback.
const GRANT_KEY: &str = "treffpunkt load generator: loopback only";

/// Linux reports CPU time in clock ticks of 1/100 s (`USER_HZ`).
const TICKS_PER_SECOND: f64 = 100.0;

/// A child process, killed when dropped.
pub struct Process(Child);

impl Process {
    /// Owns `child`.
    pub fn new(child: Child) -> Self {
        Self(child)
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A media node process and its health port.
pub struct Node {
    /// The process.
    pub process: Process,
    /// Its health endpoint's port on loopback.
    pub health: u16,
    /// Its media port.
    pub media: SocketAddr,
}

/// The gateway and its media nodes.
pub struct System {
    /// The gateway's HTTP address.
    pub http: SocketAddr,
    /// The gateway process.
    pub gateway: Process,
    /// The media node processes; none when the nodes are shards of the gateway's process.
    pub nodes: Vec<Node>,
    /// Where the gateway serves its metrics (and its shards'), when it runs shards.
    pub metrics: Option<u16>,
}

/// Flags that lift the gateway's limits per client address.
const UNLIMITED_PER_ADDRESS: [&str; 6] = [
    "--max-connections-per-address",
    "100000",
    "--max-websockets-per-address",
    "100000",
    "--max-joins-per-minute",
    "100000",
];

/// Where the media nodes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nodes<'a> {
    /// One process each, taking the participants given.
    Processes(&'a [u32]),
    /// This many shards of the gateway's process, together taking the participants given.
    Shards(u32, u32),
}

/// The file in `logs` that process `name` logs into, if logs are kept.
fn log_file(logs: Option<&Path>, name: &str) -> anyhow::Result<Option<std::fs::File>> {
    logs.map(|dir| {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{name}.log"));
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))
    })
    .transpose()
}

/// Starts the gateway and its media nodes from the `treffpunkt` binary at `binary`, and
/// returns once every node has attached. Node processes are named `bench-1`, `bench-2`, ...: a
/// room fills them in that order. With `logs`, each process logs (at `info`, or what `RUST_LOG`
/// says) into a file of its own there (`gateway.log`, `bench-1.log`, ...); without, only
/// errors, and nothing is kept.
pub async fn start(
    binary: &Path,
    max_participants: u32,
    nodes: Nodes<'_>,
    logs: Option<&Path>,
) -> anyhow::Result<System> {
    let level = match logs {
        Some(_) => std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned()),
        None => "error".to_owned(),
    };
    let log_file = |name: &str| log_file(logs, name);
    let grpc = free_port();
    let mut command = Command::new(binary);
    command.args(["standalone", "--listen", "127.0.0.1:0"]);
    let (capacities, metrics) = match nodes {
        Nodes::Processes(capacities) => {
            command.arg("--external-media-nodes");
            (capacities, None)
        }
        Nodes::Shards(shards, participants) => {
            let metrics = free_port();
            command
                .args(["--media-shards", &shards.to_string()])
                .args(["--max-participants", &participants.to_string()])
                .args(["--udp-port", "0", "--tcp-port", "0"])
                .args(["--metrics-listen", &format!("127.0.0.1:{metrics}")]);
            (&[][..], Some(metrics))
        }
    };
    let mut child = command
        .args(["--grpc-listen", &format!("127.0.0.1:{grpc}")])
        .env("TREFFPUNKT_GRANT_KEY", GRANT_KEY)
        .args(["--max-participants-per-room", &max_participants.to_string()])
        // Every participant comes from this machine's one address: the limits per address,
        // made for a city's clients, would refuse most of them.
        .args(UNLIMITED_PER_ADDRESS)
        .env("RUST_LOG", &level)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting the gateway from {}", binary.display()))?;
    let stdout = child.stdout.take().context("the gateway's stdout")?;
    let gateway = Process(child);
    let mut lines = BufReader::new(stdout).lines();
    let http: SocketAddr = loop {
        let Some(line) = lines.next() else {
            bail!("the gateway exited before it printed its address");
        };
        if let Some(rest) = line?.split("Open http://").nth(1) {
            break rest
                .split('/')
                .next()
                .unwrap_or_default()
                .parse()
                .context("the gateway's address")?;
        }
    };
    // Keep reading so the gateway never blocks on a full pipe.
    let mut gateway_log = log_file("gateway")?;
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            if let Some(file) = gateway_log.as_mut() {
                let _ = writeln!(file, "{line}");
            }
        }
    });

    let mut nodes = Vec::new();
    for (index, capacity) in capacities.iter().enumerate() {
        let name = format!("bench-{}", index + 1);
        let output = match log_file(&name)? {
            Some(file) => Stdio::from(file),
            None => Stdio::null(),
        };
        let health = free_port();
        let media: SocketAddr = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
        let process = Process(
            Command::new(binary)
                .args(["media-node", "--node-id", &name])
                .args(["--control-plane", &format!("http://127.0.0.1:{grpc}")])
                .args([
                    "--udp-bind",
                    &media.to_string(),
                    "--announce-ip",
                    "127.0.0.1",
                ])
                .args(["--health-listen", &format!("127.0.0.1:{health}")])
                .args(["--max-participants", &capacity.to_string()])
                .env("TREFFPUNKT_GRANT_KEY", GRANT_KEY)
                .env("RUST_LOG", &level)
                .env("NO_COLOR", "1")
                .stdout(output)
                .spawn()
                .context("starting a media node")?,
        );
        nodes.push(Node {
            process,
            health,
            media,
        });
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for node in &nodes {
        while !ready(node.health).await {
            if Instant::now() > deadline {
                bail!("the media nodes did not attach to the gateway within 20 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(System {
        http,
        gateway,
        nodes,
        metrics,
    })
}

/// How many of the shards of a gateway that serves its metrics on `port` host participants;
/// `None` when it does not answer.
pub async fn shards_hosting(port: u16) -> Option<u32> {
    let response = get(port, "/metrics").await?;
    let hosting = response.lines().filter(|line| {
        let Some(rest) = line.strip_prefix("treffpunkt_node_participants{") else {
            return false;
        };
        let value = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        value.is_some_and(|participants| participants > 0.0)
    });
    Some(hosting.count() as u32)
}

/// The participants a node on `health` has, from its status; `None` when it does not answer.
pub async fn participants(health: u16) -> Option<u32> {
    let response = get(health, "/status").await?;
    let body = response.split("\r\n\r\n").nth(1)?;
    let status: serde_json::Value = serde_json::from_str(body).ok()?;
    status.get("participants")?.as_u64().map(|n| n as u32)
}

/// The raw HTTP/1.0 response to `GET path` on loopback port `port`.
async fn get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.0\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    Some(response)
}

/// Whether the node on `health` says it is attached and takes rooms.
async fn ready(health: u16) -> bool {
    get(health, "/readyz").await.is_some_and(|response| {
        response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200")
    })
}

/// CPU time and memory of a process at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessSample {
    /// User CPU seconds so far.
    pub user: f64,
    /// System CPU seconds so far.
    pub system: f64,
    /// Resident memory, KiB.
    pub rss_kib: u64,
}

impl ProcessSample {
    /// Reads `/proc/<pid>` (`self` for this process); zeros when it cannot be read.
    pub fn read(pid: &str) -> Self {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let (user, system) = parse_stat(&stat).unwrap_or_default();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        Self {
            user,
            system,
            rss_kib: parse_rss(&status).unwrap_or(0),
        }
    }

    /// User and system CPU seconds together.
    pub fn cpu(&self) -> f64 {
        self.user + self.system
    }
}

/// User and system CPU seconds from a `stat` line (fields 14 and 15).
fn parse_stat(stat: &str) -> Option<(f64, f64)> {
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some((
        user as f64 / TICKS_PER_SECOND,
        system as f64 / TICKS_PER_SECOND,
    ))
}

fn parse_rss(status: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        line.strip_prefix("VmRSS:")?
            .trim()
            .strip_suffix("kB")?
            .trim()
            .parse()
            .ok()
    })
}

/// The whole machine's busy and total CPU time, seconds, from `/proc/stat`.
#[derive(Clone, Copy, Debug, Default)]
pub struct MachineSample {
    /// Time not idle, over all cores.
    pub busy: f64,
}

impl MachineSample {
    /// Reads `/proc/stat`; zero when it cannot be read.
    pub fn read() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        Self {
            busy: parse_machine(&stat).unwrap_or(0.0),
        }
    }
}

fn parse_machine(stat: &str) -> Option<f64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...: idle and iowait are not busy.
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4).copied().unwrap_or(0);
    Some((total - idle) as f64 / TICKS_PER_SECOND)
}

/// The cores this machine has.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_found_after_a_name_with_spaces() {
        let stat = "4242 (tokio (rt) 1) S 1 2 3 4 5 6 7 8 9 10 250 75 0 0 20 0 9 0 100 0";
        assert_eq!(parse_stat(stat), Some((2.5, 0.75)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn rss_and_machine_time_are_read() {
        assert_eq!(parse_rss("Name:\tx\nVmRSS:\t  12345 kB\n"), Some(12345));
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(parse_machine(stat), Some(1.5));
    }

    #[test]
    fn this_process_can_be_read() {
        let me = ProcessSample::read("self");
        assert!(me.rss_kib > 0);
    }
}
