//! How much garbage the media port absorbs with a call still clean.
//!
//! A gateway and a media node run as processes ([`crate::processes`]); Anna publishes audio and
//! video, Ben receives them. Then, one rate after another, [`crate::flood`] sends garbage to the
//! node's media port from unknown sources for a window of a few seconds, and Ben's reception of
//! Anna is measured in the window: packets a second, as a share of the same in the first
//! window, which has no garbage (the baseline of the same run), and the longest stall (no new
//! packet, sampled every 20 ms). A window is clean when Ben receives at least 95 % of the
//! baseline and never stalls for a second or more. The node's CPU in the window is reported
//! beside it. The flood shares the machine with the node: what it manages to send is reported
//! as sent, not as asked.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use treffpunkt_client::{Kind, Participant, Publish, signal_url};

use crate::flood::{self, FloodArgs};
use crate::processes::{self, ProcessSample};

/// What to measure.
#[derive(Debug, clap::Args)]
pub struct AbsorbArgs {
    /// The `treffpunkt` binary; next to this program by default.
    #[arg(long)]
    pub treffpunkt: Option<PathBuf>,
    /// Garbage rates to try, datagrams a second, after a first window without garbage.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "25000,50000,100000,200000"
    )]
    pub rates: Vec<u32>,
    /// Seconds of each window.
    #[arg(long, default_value_t = 8)]
    pub seconds: u64,
}

/// One window's measurement.
struct Window {
    asked: u32,
    sent_per_second: f64,
    received_per_second: f64,
    longest_stall: Duration,
    node_cpu: f64,
}

/// Ben's packets from Anna (audio and video).
fn received(ben: &Participant, anna: &Participant) -> u64 {
    [Kind::Audio, Kind::Video]
        .iter()
        .map(|kind| ben.stats(&anna.id, *kind).packets)
        .sum()
}

/// Measures one window with garbage at `rate` a second (none at 0).
async fn window(
    system: &processes::System,
    ben: &Participant,
    anna: &Participant,
    rate: u32,
    seconds: u64,
) -> anyhow::Result<Window> {
    let flood = (rate > 0).then(|| {
        let args = FloodArgs {
            to: match system.nodes[0].media {
                std::net::SocketAddr::V4(address) => address,
                std::net::SocketAddr::V6(_) => unreachable!("the node binds 127.0.0.1"),
            },
            per_second: rate,
            seconds,
            spoof: Vec::new(),
        };
        std::thread::spawn(move || flood::run(&args))
    });
    let node_pid = system.nodes[0].process.pid().to_string();
    let cpu_before = ProcessSample::read(&node_pid).cpu();
    let start = Instant::now();
    let first = received(ben, anna);
    let (mut last, mut last_change, mut longest_stall) = (first, start, Duration::ZERO);
    while start.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = received(ben, anna);
        if now > last {
            last = now;
            last_change = Instant::now();
        }
        longest_stall = longest_stall.max(last_change.elapsed());
    }
    let elapsed = start.elapsed().as_secs_f64();
    let node_cpu = (ProcessSample::read(&node_pid).cpu() - cpu_before) / elapsed;
    let sent = match flood {
        Some(thread) => thread
            .join()
            .map_err(|_| anyhow::anyhow!("the flood panicked"))??,
        None => 0,
    };
    Ok(Window {
        asked: rate,
        sent_per_second: sent as f64 / elapsed,
        received_per_second: (last - first) as f64 / elapsed,
        longest_stall,
        node_cpu,
    })
}

/// Runs the measurement and prints its table.
pub async fn run(args: AbsorbArgs, binary: PathBuf) -> anyhow::Result<()> {
    let system = processes::start(&binary, 10, processes::Nodes::Processes(&[10]), None).await?;
    let url = signal_url(system.http, "public", "absorb");
    let anna = Participant::join(&url, "Anna", Some(Publish::default()))
        .await
        .context("Anna joins")?;
    let ben = Participant::join(&url, "Ben", None)
        .await
        .context("Ben joins")?;
    // The call settles: connected, and the first keyframes through.
    tokio::time::sleep(Duration::from_secs(3)).await;
    anyhow::ensure!(received(&ben, &anna) > 0, "Ben receives nothing from Anna");
    let mut windows = Vec::new();
    for rate in std::iter::once(0).chain(args.rates.iter().copied()) {
        windows.push(window(&system, &ben, &anna, rate, args.seconds).await?);
    }
    let baseline = windows[0].received_per_second.max(1.0);
    println!(
        "| garbage asked / s | garbage sent / s | Ben receives (share of baseline) | longest stall | node CPU | clean |"
    );
    println!("|--:|--:|--:|--:|--:|:-:|");
    for w in &windows {
        let share = w.received_per_second / baseline;
        let clean = share >= 0.95 && w.longest_stall < Duration::from_secs(1);
        println!(
            "| {} | {:.0} | {:.0} packets/s ({:.0} %) | {} ms | {:.0} % | {} |",
            w.asked,
            w.sent_per_second,
            w.received_per_second,
            share * 100.0,
            w.longest_stall.as_millis(),
            w.node_cpu * 100.0,
            if clean { "yes" } else { "no" }
        );
    }
    Ok(())
}
