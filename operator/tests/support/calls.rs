//! A standalone server on loopback, and a call of two participants who both send sound and
//! video.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use treffpunkt_client::{Participant, Publish};
use treffpunkt_operator::standalone::{self, Standalone, StandaloneConfig};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Standalone mode on free loopback ports with the rest of `config`.
pub async fn on_loopback(config: StandaloneConfig) -> Standalone {
    standalone::start(StandaloneConfig {
        http: SocketAddr::new(LOOPBACK, 0),
        grpc: SocketAddr::new(LOOPBACK, 0),
        udp: SocketAddr::new(LOOPBACK, 0),
        announce_ip: LOOPBACK,
        ..config
    })
    .await
    .expect("standalone mode starts")
}

/// Anna and Ben join the room of signalling URL `url`, both publishing.
pub async fn anna_and_ben(url: &str) -> (Participant, Participant) {
    let anna = Participant::join(url, "Anna", Some(Publish::default()))
        .await
        .expect("Anna joins");
    let ben = Participant::join(url, "Ben", Some(Publish::default()))
        .await
        .expect("Ben joins");
    (anna, ben)
}
