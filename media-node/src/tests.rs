//! A node started alone on a thread of its own: what it says when it cannot start, and that
//! stopping it leaves nothing of it running.

use std::time::{Duration, Instant};

use treffpunkt_proto::grant::{Keyring, SharedKeyring};

use super::*;

/// A node on loopback whose control plane (a port nothing listens on) never answers.
fn config(udp_bind: SocketAddr) -> NodeConfig {
    let unanswered = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port");
    NodeConfig {
        control_plane: vec![format!("http://{unanswered}")],
        node_id: "alone".to_owned(),
        pool: String::new(),
        udp_bind,
        announce_ip: IpAddr::from([127, 0, 0, 1]),
        max_participants: 10,
        grant_key: SharedKeyring::new(Keyring::from_secret(b"a grant key for the tests")),
        health_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        metrics_token_file: None,
        udp_buffers: Default::default(),
        tcp_bind: None,
        attach_tls_dir: None,
        cpu: Default::default(),
    }
}

#[tokio::test]
async fn that_a_node_that_cannot_bind_its_port_says_why() {
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("a free port on loopback");
    let port = taken.local_addr().expect("a bound socket has an address");
    let started = MediaNode::start_alone(
        config(port),
        "taken".to_owned(),
        |node| node,
        std::future::pending(),
    )
    .await;
    match started {
        Err(Error::Io(error)) => assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse),
        Err(error) => panic!("another error than the port's: {error}"),
        Ok(_) => panic!("a second node bound {port}"),
    }
}

#[tokio::test]
async fn that_a_node_stopped_leaves_neither_its_thread_nor_its_links_running() {
    let runtime = tokio::runtime::Handle::current();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let node = MediaNode::start_alone(
        config(SocketAddr::from(([127, 0, 0, 1], 0))),
        "stopped".to_owned(),
        |node| node,
        async {
            let _ = stopped.await;
        },
    )
    .await
    .expect("the node starts");
    assert!(node.started.media_address.port() != 0);
    // The control link (dialling again and again) and the health endpoint run here.
    let by = Instant::now() + Duration::from_secs(5);
    while runtime.metrics().num_alive_tasks() < 2 {
        assert!(Instant::now() < by, "the node's links never started here");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    drop(stop);
    let ended = tokio::task::spawn_blocking(move || node.thread.join())
        .await
        .expect("joining a thread neither panics nor is cancelled");
    assert!(
        matches!(ended, Ok(Ok(()))),
        "the node's thread ends cleanly"
    );
    let by = Instant::now() + Duration::from_secs(5);
    while runtime.metrics().num_alive_tasks() > 0 {
        assert!(
            Instant::now() < by,
            "{} of the node's tasks still run after it stopped",
            runtime.metrics().num_alive_tasks()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
