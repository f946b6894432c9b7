//! The system a ramp measures: Treffpunkt's gateway and media nodes (processes of their own or
//! shards of the gateway's process), or Janus; and the door its participants join by.

use std::net::SocketAddr;

use anyhow::Context;
use treffpunkt_client::{Joining, Participant, signal_url};

use crate::janus;
use crate::processes;
use crate::ramp::{RampConfig, Sfu};
use crate::scenario::Scenario;

/// The system a ramp measures, running.
pub enum System {
    Treffpunkt(processes::System),
    Janus(janus::Janus),
}

impl System {
    pub async fn start(sfu: Sfu, config: &RampConfig, largest: u32) -> anyhow::Result<Self> {
        Ok(match sfu {
            Sfu::Treffpunkt => {
                let nodes = config.nodes.max(1);
                let capacity = config.node_capacity.unwrap_or(if nodes == 1 {
                    largest.max(20) + 10
                } else {
                    largest.div_ceil(nodes) + 1
                });
                let capacities = vec![capacity; nodes as usize];
                let room = largest.max(20) + 10;
                let where_ = match config.shards {
                    true => processes::Nodes::Shards(nodes, capacity * nodes),
                    false => processes::Nodes::Processes(&capacities),
                };
                Self::Treffpunkt(
                    processes::start(&config.binary, room, where_, config.logs.as_deref()).await?,
                )
            }
            Sfu::Janus => {
                let janus = config.janus.as_ref().context("no Janus configured")?;
                Self::Janus(janus::start(janus).await?)
            }
        })
    }

    /// The processes that forward media.
    pub fn sfu_pids(&self) -> Vec<String> {
        match self {
            Self::Treffpunkt(system) if system.nodes.is_empty() => {
                vec![system.gateway.pid().to_string()]
            }
            Self::Treffpunkt(system) => system
                .nodes
                .iter()
                .map(|node| node.process.pid().to_string())
                .collect(),
            Self::Janus(janus) => vec![janus.process.pid().to_string()],
        }
    }

    /// How many nodes host participants now, with several nodes.
    pub async fn nodes_hosting(&self) -> Option<u32> {
        let Self::Treffpunkt(system) = self else {
            return None;
        };
        if let Some(metrics) = system.metrics {
            return processes::shards_hosting(metrics).await;
        }
        if system.nodes.len() < 2 {
            return None;
        }
        let counts = system
            .nodes
            .iter()
            .map(|node| processes::participants(node.health));
        let counts = futures::future::join_all(counts).await;
        Some(counts.into_iter().filter(|n| n.unwrap_or(0) > 0).count() as u32)
    }

    /// The name of `scenario`'s report on this system, and where its participants join.
    pub fn door(&self, scenario: Scenario) -> (String, Door) {
        match self {
            Self::Janus(janus) => (
                format!("{}-janus", scenario.name()),
                Door::Janus(janus.http, janus.ip),
            ),
            Self::Treffpunkt(system) => (
                scenario.name().to_owned(),
                Door::Gateway(signal_url(
                    system.http,
                    "public",
                    &format!("bench-{}", scenario.name()),
                )),
            ),
        }
    }

    /// The signalling process apart from it, if there is one.
    pub fn gateway_pid(&self) -> Option<String> {
        match self {
            Self::Treffpunkt(system) => Some(system.gateway.pid().to_string()),
            Self::Janus(_) => None,
        }
    }
}

/// Where participants join.
#[derive(Clone, Debug)]
pub enum Door {
    /// The gateway's signalling URL of the room.
    Gateway(String),
    /// Janus's HTTP API, and the address its participants' media use.
    Janus(SocketAddr, std::net::IpAddr),
}

impl Door {
    pub async fn join(
        &self,
        name: &str,
        joining: Joining,
    ) -> treffpunkt_client::Result<Participant> {
        match self {
            Self::Gateway(url) => Participant::join_as(url, name, joining).await,
            Self::Janus(server, ip) => {
                let joining = Joining {
                    local_ip: Some(*ip),
                    ..joining
                };
                Participant::join_janus(*server, janus::ROOM, name, joining).await
            }
        }
    }
}
