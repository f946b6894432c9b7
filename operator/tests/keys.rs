//! The grant key rotated while a call runs: a standalone control plane and a separate media node
//! process share the key through a file, as a cluster's control plane and its nodes share the
//! platform's Secret, and the file goes through the steps of a rotation. The call goes on, and
//! at every step a newcomer is admitted by the node with the grant the control plane signed.
//! (The leader's rotation of the Secret itself is tested against a real API server in
//! `cluster_keys.rs`.)

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{free_port, keeps_receiving};
use treffpunkt_client::{Participant, Publish, signal_url};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Longer than the control plane and the node take to read their key file again.
const FOLLOWED: Duration = Duration::from_secs(5);

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str], key_file: &Path) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_treffpunkt"))
        .args(args)
        .arg("--grant-key-file")
        .arg(key_file)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("the binary starts");
    Process(child)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_goes_on_and_newcomers_get_in_through_every_step_of_a_key_rotation() {
    let dir = std::env::temp_dir().join(format!("treffpunkt-keys-{}", free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("grant-key");
    let (old, new) = (
        "the old grant key of enough length",
        "the new grant key of enough length",
    );
    std::fs::write(&key_file, old).unwrap();

    let (http, grpc) = (free_port(), free_port());
    let (listen, grpc_listen) = (format!("127.0.0.1:{http}"), format!("127.0.0.1:{grpc}"));
    let _control_plane = spawn(
        &[
            "standalone",
            "--listen",
            &listen,
            "--grpc-listen",
            &grpc_listen,
            "--external-media-nodes",
        ],
        &key_file,
    );
    let control_plane = format!("http://{grpc_listen}");
    let _node = spawn(
        &[
            "media-node",
            "--node-id",
            "node-a",
            "--control-plane",
            &control_plane,
            "--udp-bind",
            "127.0.0.1:0",
            "--announce-ip",
            "127.0.0.1",
            "--health-listen",
            &format!("127.0.0.1:{}", free_port()),
        ],
        &key_file,
    );
    let url = signal_url(SocketAddr::new(LOOPBACK, http), "public", "schluessel");
    let mut anna = None;
    for _ in 0..100 {
        match Participant::join(&url, "Anna", Some(Publish::default())).await {
            Ok(joined) => {
                anna = Some(joined);
                break;
            }
            // The control plane and the node are still starting.
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let anna = anna.expect("Anna joins once the node has attached");
    let ben = Participant::join(&url, "Ben", None)
        .await
        .expect("Ben joins");
    assert!(keeps_receiving(&ben, &anna).await, "Ben receives Anna");

    let steps = [
        (format!("{old},{new}"), "the new key announced"),
        (format!("{new},{old}"), "the new key signs"),
        (new.to_owned(), "the old key retired"),
    ];
    let mut newcomers = Vec::new();
    for (text, step) in steps {
        std::fs::write(&key_file, text).unwrap();
        tokio::time::sleep(FOLLOWED).await;
        let newcomer = Participant::join(&url, step, None)
            .await
            .unwrap_or_else(|error| panic!("a newcomer joins when {step}: {error}"));
        assert!(
            keeps_receiving(&newcomer, &anna).await,
            "the node admitted the newcomer's grant when {step}"
        );
        assert!(
            keeps_receiving(&ben, &anna).await,
            "Ben keeps receiving Anna when {step}"
        );
        newcomers.push(newcomer);
    }
    let _ = std::fs::remove_dir_all(dir);
}
