//! The `treffpunkt` binary: the control plane, and standalone mode.

use std::net::{IpAddr, SocketAddr};

use clap::{Parser, Subcommand};
use treffpunkt_operator::domain::Tenant;
use treffpunkt_operator::standalone::{self, StandaloneConfig};

/// Treffpunkt: video meetings a city can run for its people.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Everything on one machine, no cluster: the web client, the control plane and one media
    /// node, with rooms kept in memory.
    Standalone {
        /// Where the web client is served.
        #[arg(long, env = "TREFFPUNKT_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The media node's UDP port.
        #[arg(long, env = "TREFFPUNKT_UDP_PORT", default_value_t = 10000)]
        udp_port: u16,
        /// The address browsers send media to: 127.0.0.1 for this machine only, the machine's
        /// LAN address to let others in the network join.
        #[arg(long, env = "TREFFPUNKT_ANNOUNCE_IP", default_value = "127.0.0.1")]
        announce_ip: IpAddr,
        /// Participants the media node accepts.
        #[arg(long, default_value_t = 200)]
        max_participants: u32,
        /// Participants one room admits.
        #[arg(long, default_value_t = 20)]
        max_participants_per_room: u32,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,rtc=error,rtc_ice=error,rtc_dtls=error".into()),
        )
        .init();
    match Args::parse().command {
        Command::Standalone {
            listen,
            udp_port,
            announce_ip,
            max_participants,
            max_participants_per_room,
        } => {
            let mut public = Tenant::public();
            public.limits.max_participants_per_room = max_participants_per_room;
            let running = standalone::start(StandaloneConfig {
                http: listen,
                udp: SocketAddr::new(IpAddr::from([0, 0, 0, 0]), udp_port),
                announce_ip,
                max_participants,
                tenants: vec![public],
                ..StandaloneConfig::default()
            })
            .await?;
            let url = match running.http.ip() {
                ip if ip.is_unspecified() => {
                    format!("http://{announce_ip}:{}/", running.http.port())
                }
                _ => format!("http://{}/", running.http),
            };
            println!("Treffpunkt is running. Open {url} in your browser.");
            println!("Treffpunkt läuft. Öffnen Sie {url} im Browser.");
            tokio::signal::ctrl_c().await?;
            running.stop();
        }
    }
    Ok(())
}
