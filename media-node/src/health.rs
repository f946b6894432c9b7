//! The node's own small HTTP endpoint, on a port apart from media:
//!
//! - `GET /healthz` answers while the process serves (liveness);
//! - `GET /readyz` answers 200 only while the node is attached to the control plane and not
//!   draining (a node that cannot be given rooms is not ready);
//! - `GET /status` tells, as JSON, the node's id, how many rooms and participants it has,
//!   whether it drains, and what crossed each of its links to other nodes of spanning rooms
//!   (by the other node's id; never a room's name);
//! - `GET /metrics`: the node's metrics ([`crate::metrics`]), for Prometheus.
//!
//! The probes answer anyone: the kubelet asks them, and they tell no more than "ready" or not.
//! `/status` and `/metrics` tell how busy the node is and whom it links to, so they ask for the
//! bearer token in the node's metrics token file (`--metrics-token-file`, read again for every
//! request so that a changed token counts at once; the operator mounts the platform's and the
//! chart's PodMonitor shows it). A node without that file answers them on loopback only: a pool
//! with the host's network opens this port on the host's address.
//!
//! It takes no commands: a node is drained by SIGTERM (the pod's end) or by the control plane
//! over the authenticated Attach stream (`POST /nodes/{node}/drain` on the control plane's admin
//! port), never by whoever reaches this port.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;

use crate::status::NodeStatus;

/// What the endpoint serves and whom it lets read.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The node's id, as `/status` names it.
    pub node_id: String,
    /// The node's state.
    pub status: NodeStatus,
    /// The file with the token of `/status` and `/metrics`.
    pub token_file: Option<PathBuf>,
}

async fn ready(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    let status = &endpoint.status;
    if status.draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if status.attached() {
        (StatusCode::OK, "ready")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not attached to the control plane",
        )
    }
}

async fn status(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    let status = &endpoint.status;
    let (rooms, participants) = status.load();
    Json(serde_json::json!({
        "nodeId": endpoint.node_id,
        "attached": status.attached(),
        "draining": status.draining(),
        "rooms": rooms,
        "participants": participants,
        "links": status.links(),
    }))
}

async fn metrics(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        endpoint.status.metrics().encode(),
    )
}

/// Whom `/status` and `/metrics` answer.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Let,
    /// No token is set and the asker is not on this machine.
    OnlyLoopback,
    /// The token file cannot be read, or holds too short a token.
    NoToken(String),
    /// The token is missing or wrong.
    Unauthorized,
}

/// Whether a request from `peer` with the `Authorization` header `authorization` may read,
/// when the token file holds `token` (none without a file).
fn verdict(
    peer: SocketAddr,
    authorization: Option<&str>,
    token: Option<std::io::Result<String>>,
) -> Verdict {
    match token {
        None if peer.ip().to_canonical().is_loopback() => Verdict::Let,
        None => Verdict::OnlyLoopback,
        Some(Err(error)) => Verdict::NoToken(error.to_string()),
        Some(Ok(text)) => match treffpunkt_proto::bearer::token(&text) {
            None => Verdict::NoToken(format!(
                "shorter than {} characters",
                treffpunkt_proto::bearer::MIN_CHARS
            )),
            Some(token) if treffpunkt_proto::bearer::carries(authorization, token) => Verdict::Let,
            Some(_) => Verdict::Unauthorized,
        },
    }
}

/// Lets `/status` and `/metrics` be read only as [`verdict`] says.
async fn readers_only(
    State(endpoint): State<Endpoint>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    // A few bytes on a mounted Secret: read in place.
    let token = endpoint.token_file.as_ref().map(std::fs::read_to_string);
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    match verdict(peer, authorization, token) {
        Verdict::Let => next.run(request).await,
        Verdict::OnlyLoopback => (
            StatusCode::FORBIDDEN,
            "this node has no metrics token (--metrics-token-file): its status and metrics \
             answer on loopback only",
        )
            .into_response(),
        Verdict::NoToken(why) => {
            tracing::warn!(%why, "the metrics token file is unusable; /status and /metrics refuse everyone");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the node's metrics token cannot be read",
            )
                .into_response()
        }
        Verdict::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "the metrics token is missing or wrong",
        )
            .into_response(),
    }
}

/// Serves `endpoint` on `address` until the process ends.
pub async fn serve(address: SocketAddr, endpoint: Endpoint) -> std::io::Result<()> {
    serve_on(tokio::net::TcpListener::bind(address).await?, endpoint).await
}

async fn serve_on(listener: tokio::net::TcpListener, endpoint: Endpoint) -> std::io::Result<()> {
    let readers = Router::new()
        .route("/status", get(self::status))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(
            endpoint.clone(),
            readers_only,
        ));
    let router = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .merge(readers)
        .with_state(endpoint);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef0123";

    fn at(address: &str) -> SocketAddr {
        address.parse().expect("the tests' addresses parse")
    }

    #[test]
    fn without_a_token_only_this_machine_reads() {
        for local in [
            "127.0.0.1:1",
            "127.8.0.2:1",
            "[::1]:1",
            "[::ffff:127.0.0.1]:1",
        ] {
            assert_eq!(verdict(at(local), None, None), Verdict::Let, "{local}");
        }
        for remote in ["10.0.0.7:1", "[fd00::7]:1", "[::ffff:10.0.0.7]:1"] {
            let asked = Some("Bearer 0123456789abcdef0123");
            assert_eq!(
                verdict(at(remote), asked, None),
                Verdict::OnlyLoopback,
                "{remote}"
            );
        }
    }

    #[test]
    fn with_a_token_everyone_needs_it() {
        let token = || Some(Ok(format!("{TOKEN}\n")));
        let bearer = format!("Bearer {TOKEN}");
        for peer in ["10.0.0.7:1", "127.0.0.1:1"] {
            assert_eq!(verdict(at(peer), Some(&bearer), token()), Verdict::Let);
            assert_eq!(verdict(at(peer), None, token()), Verdict::Unauthorized);
            let wrong = Some("Bearer 0123456789abcdef0124");
            assert_eq!(verdict(at(peer), wrong, token()), Verdict::Unauthorized);
        }
    }

    /// The status code of `GET path` with `authorization`, on a real socket.
    async fn get(address: SocketAddr, path: &str, authorization: Option<&str>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(address)
            .await
            .expect("the endpoint listens");
        let authorization = authorization
            .map(|value| format!("Authorization: {value}\r\n"))
            .unwrap_or_default();
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: node\r\n{authorization}Connection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .await
            .expect("the endpoint reads the request");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .expect("the endpoint answers");
        response
    }

    #[tokio::test]
    async fn the_status_and_metrics_answer_the_token_of_the_file_and_the_probes_anyone() {
        let dir = std::env::temp_dir().join(format!("treffpunkt-health-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let file = dir.join("metrics-token");
        std::fs::write(&file, TOKEN).expect("the token file is written");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port on loopback");
        let address = listener
            .local_addr()
            .expect("a bound listener has an address");
        let endpoint = Endpoint {
            node_id: "knoten".to_owned(),
            status: NodeStatus::default(),
            token_file: Some(file.clone()),
        };
        let server = tokio::spawn(serve_on(listener, endpoint));
        let bearer = format!("Bearer {TOKEN}");
        let status = get(address, "/status", Some(&bearer)).await;
        assert!(status.starts_with("HTTP/1.1 200"), "{status}");
        assert!(status.contains("\"nodeId\":\"knoten\""), "{status}");
        let metrics = get(address, "/metrics", Some(&bearer)).await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains("# EOF"), "{metrics}");
        for path in ["/status", "/metrics"] {
            let refused = get(address, path, None).await;
            assert!(refused.starts_with("HTTP/1.1 401"), "{path}: {refused}");
            assert!(!refused.contains("knoten"), "{path}: {refused}");
        }
        assert!(
            get(address, "/healthz", None)
                .await
                .starts_with("HTTP/1.1 200")
        );
        assert!(
            get(address, "/readyz", None)
                .await
                .starts_with("HTTP/1.1 503")
        );
        // A new token counts from the next request on; the old one no longer does.
        std::fs::write(&file, "a-new-token-of-the-platform").expect("the token file is written");
        let old = get(address, "/metrics", Some(&bearer)).await;
        assert!(old.starts_with("HTTP/1.1 401"), "{old}");
        let new = get(
            address,
            "/metrics",
            Some("Bearer a-new-token-of-the-platform"),
        )
        .await;
        assert!(new.starts_with("HTTP/1.1 200"), "{new}");
        // Without the file nobody reads, not even on this machine.
        std::fs::remove_file(&file).expect("the token file is removed");
        let gone = get(
            address,
            "/metrics",
            Some("Bearer a-new-token-of-the-platform"),
        )
        .await;
        assert!(gone.starts_with("HTTP/1.1 503"), "{gone}");
        server.abort();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_unusable_token_file_lets_nobody_read() {
        let bearer = "Bearer short";
        let short = verdict(
            at("127.0.0.1:1"),
            Some(bearer),
            Some(Ok("short".to_owned())),
        );
        assert!(matches!(short, Verdict::NoToken(_)), "{short:?}");
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let unread = verdict(at("127.0.0.1:1"), None, Some(Err(missing)));
        assert!(matches!(unread, Verdict::NoToken(_)), "{unread:?}");
    }
}
