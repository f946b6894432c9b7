//! A partner's site: its nodes' credential as the partner's admins fetch it, and the load
//! balancer in front of the control-plane replicas that the site's nodes reach them through.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use tokio::net::{TcpListener, TcpStream};
use treffpunkt_operator::reconcile::PARTNER_SECRET;

use super::eventually;

/// A field of `secret` as text.
pub fn field(secret: &Secret, name: &str) -> Option<String> {
    let data = secret.data.as_ref()?;
    Some(String::from_utf8_lossy(&data.get(name)?.0).into_owned())
}

/// Waits for external `pool`'s credential in the partner's Secret and writes it into `dir`, as
/// the partner's admins do; returns the Secret.
pub async fn fetch_credential(partner: &Api<Secret>, pool: &str, dir: &Path) -> Secret {
    let credential = eventually(Duration::from_secs(30), || async {
        let secret = partner.get_opt(PARTNER_SECRET).await.ok()??;
        field(&secret, &format!("{pool}.crt")).map(|_| secret)
    })
    .await
    .expect("the partner's namespace holds its nodes' credential");
    std::fs::create_dir_all(dir).unwrap();
    for (name, file) in [
        ("ca.crt".to_owned(), "ca.crt"),
        (format!("{pool}.crt"), "tls.crt"),
        (format!("{pool}.key"), "tls.key"),
    ] {
        std::fs::write(dir.join(file), field(&credential, &name).unwrap()).unwrap();
    }
    credential
}

/// A TCP load balancer on loopback, as a cloud's or MetalLB's in front of the replicas' Attach
/// port: each new connection goes to the next backend in turn, and the bytes pass untouched
/// (TLS runs end to end). It serves until the test process ends.
pub async fn balancer(backends: Vec<SocketAddr>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let backend = backends[next.fetch_add(1, Ordering::Relaxed) % backends.len()];
            tokio::spawn(async move {
                if let Ok(mut server) = TcpStream::connect(backend).await {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    address
}
