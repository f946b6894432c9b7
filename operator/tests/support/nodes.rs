//! Media nodes as the tests run them: in the test's own process, or as `treffpunkt media-node`
//! processes with a pool's certificate.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{Operator, OperatorProcess, admin, free_port, grant_key, http, logs, unique};

/// A media node in this process of `pool` (empty: none), attached to `operator` without TLS
/// under `node_id`, holding the operators' `grant_key`; its health endpoint at `health`.
pub fn node_config(
    operator: &Operator,
    node_id: &str,
    pool: &str,
    grant_key: &str,
    health: Option<std::net::SocketAddr>,
) -> treffpunkt_media_node::NodeConfig {
    use treffpunkt_proto::grant::{Keyring, SharedKeyring};
    treffpunkt_media_node::NodeConfig {
        control_plane: vec![format!("http://{}", operator.grpc)],
        node_id: node_id.to_owned(),
        pool: pool.to_owned(),
        udp_bind: "127.0.0.1:0".parse().unwrap(),
        announce_ip: "127.0.0.1".parse().unwrap(),
        max_participants: 50,
        grant_key: SharedKeyring::new(
            Keyring::from_secrets(grant_key).expect("the operators' grant key"),
        ),
        health_listen: health,
        metrics_token_file: None,
        udp_buffers: Default::default(),
        tcp_bind: None,
        attach_tls_dir: None,
        cpu: Default::default(),
    }
}

/// Runs a media node in this process, attached to `operator` with its grant key; its id.
pub async fn run_node(operator: &Operator) -> String {
    let key = grant_key(&admin().await).await;
    let node_id = unique("node");
    let config = node_config(operator, &node_id, "", &key, None);
    let node = treffpunkt_media_node::MediaNode::bind(config)
        .await
        .unwrap();
    tokio::spawn(node.run());
    node_id
}

/// A `treffpunkt media-node` process.
pub struct NodeProcess {
    /// The process.
    pub process: std::process::Child,
    /// The node's id.
    pub id: String,
    /// Its own endpoint: /healthz, /readyz, /status.
    pub health: std::net::SocketAddr,
}

impl NodeProcess {
    /// Starts a node of the pool of `credential` (see [`pool_credential`]) attached to every one
    /// of `operators`.
    pub fn start(
        id: &str,
        operators: &[&OperatorProcess],
        grant_key: &str,
        credential: &(String, PathBuf),
    ) -> Self {
        let control_plane: Vec<String> = operators
            .iter()
            .map(|o| format!("http://{}", o.grpc))
            .collect();
        Self::start_to(id, &control_plane.join(","), grant_key, credential)
    }

    /// The same, attached to the control plane at `control_plane` (`http://host:port`, several
    /// separated by commas).
    pub fn start_to(
        id: &str,
        control_plane: &str,
        grant_key: &str,
        credential: &(String, PathBuf),
    ) -> Self {
        Self::start_with(id, control_plane, grant_key, credential, &[])
    }

    /// The same, with `env` added to its environment (a pod's, say).
    pub fn start_with(
        id: &str,
        control_plane: &str,
        grant_key: &str,
        (pool, certificate): &(String, PathBuf),
        env: &[(String, String)],
    ) -> Self {
        let health = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        let process = Command::new(env!("CARGO_BIN_EXE_treffpunkt"))
            .args([
                "media-node",
                "--node-id",
                id,
                "--control-plane",
                control_plane,
            ])
            .args(["--udp-bind", "127.0.0.1:0", "--announce-ip", "127.0.0.1"])
            .args([
                "--health-listen",
                &health.to_string(),
                "--drain-grace",
                "30",
            ])
            .args(["--pool", pool])
            .arg("--attach-tls-dir")
            .arg(certificate)
            .env("TREFFPUNKT_GRANT_KEY", grant_key)
            .env("RUST_LOG", logs::PROCESS_LOG_LEVEL)
            .env("NO_COLOR", "1")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(logs::process_log(&unique(id)))
            .spawn()
            .expect("the media node starts");
        Self {
            process,
            // With the pool's certificate the node registers under its pool's id.
            id: treffpunkt_proto::identity::node_id(pool, id),
            health,
        }
    }

    /// What the node says about itself.
    pub async fn status(&self) -> Option<serde_json::Value> {
        let (_, body) = http(self.health, "GET", "/status").await?;
        serde_json::from_str(&body).ok()
    }

    /// Kills the process at once.
    pub fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }

    /// The exit code, once the process has ended by itself within `limit`.
    pub async fn exit_code_within(&mut self, limit: Duration) -> Option<Option<i32>> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.process.try_wait() {
                return Some(status.code());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        None
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
