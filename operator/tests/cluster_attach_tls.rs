//! Mutual TLS on the Attach port of a replica on a real API server: a MediaPool's nodes get a
//! certificate that names their pool, a real media node process attaches with it, and nobody
//! else does: not without a certificate, not with one of another authority, not for another
//! pool, not under the live node's id. A renewed certificate attaches new nodes while the node
//! attached with the old one stays.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;
use support::attach::register;
use support::resources::pool_spec;
use support::{PLATFORM, admin, admin_request, eventually, free_port, unique};
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use treffpunkt_operator::crd::MediaPool;
use treffpunkt_operator::fleet::tls::Authority;
use treffpunkt_operator::keys;
use treffpunkt_proto::grant::Keyring;
use treffpunkt_proto::identity;

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A field of the keys' Secret as text.
fn field(secret: &Secret, name: &str) -> Option<String> {
    let data = secret.data.as_ref()?;
    Some(String::from_utf8_lossy(&data.get(name)?.0).into_owned())
}

/// Writes a pool's certificate from the keys' Secret into `dir`, as a pod's mount shows it.
fn write_credential(secret: &Secret, pool: &str, dir: &Path) {
    let [cert, key, _] = keys::pool_fields(pool);
    std::fs::create_dir_all(dir).unwrap();
    for (name, file) in [
        (keys::AUTHORITY_CERT, "ca.crt"),
        (cert.as_str(), "tls.crt"),
        (key.as_str(), "tls.key"),
    ] {
        std::fs::write(dir.join(file), field(secret, name).unwrap()).unwrap();
    }
}

/// The TLS of a client that shows the certificate in `dir`.
fn tls_from(dir: &Path) -> ClientTlsConfig {
    let read = |file: &str| std::fs::read(dir.join(file)).unwrap();
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.crt")))
        .identity(Identity::from_pem(read("tls.crt"), read("tls.key")))
        .domain_name(identity::CONTROL_PLANE)
}

/// The ids of the nodes attached to the replica whose admin endpoint is `admin`.
async fn attached(admin: std::net::SocketAddr, token: &str) -> Vec<String> {
    let response = admin_request(admin, "GET /nodes", Some(token)).await;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    let nodes: Vec<serde_json::Value> = serde_json::from_str(body).unwrap_or_default();
    nodes
        .iter()
        .filter_map(|node| node["id"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_nodes_with_their_pools_certificate_attach() {
    let client = admin().await;
    let secret_name = unique("tls-keys");
    let mut settings = support::settings();
    settings.grant_key_secret = secret_name.clone();
    let operator = support::start_operator_with(&unique("tls"), settings, true);
    let secrets = Api::<Secret>::namespaced(client.clone(), PLATFORM);
    let pool = unique("alpha");
    Api::<MediaPool>::namespaced(client.clone(), PLATFORM)
        .create(&PostParams::default(), &MediaPool::new(&pool, pool_spec()))
        .await
        .unwrap();
    let [cert_field, _, not_after_field] = keys::pool_fields(&pool);
    let secret = eventually(Duration::from_secs(30), || async {
        let secret = secrets.get(&secret_name).await.ok()?;
        field(&secret, &cert_field).map(|_| secret)
    })
    .await
    .expect("the pool's nodes get a certificate");
    let grant_key = field(&secret, keys::GRANT_KEY).unwrap();
    let token = field(&secret, keys::ADMIN_TOKEN).unwrap();
    let key = Keyring::from_secrets(&grant_key).unwrap();
    let dir = std::env::temp_dir().join(unique("treffpunkt-tls"));
    write_credential(&secret, &pool, &dir.join("first"));

    // A real media node with the pool's certificate attaches.
    let node = Process(
        Command::new(env!("CARGO_BIN_EXE_treffpunkt"))
            .args(["media-node", "--node-id", "knoten-a", "--pool", &pool])
            .args(["--control-plane", &format!("http://{}", operator.grpc)])
            .args(["--udp-bind", "127.0.0.1:0", "--announce-ip", "127.0.0.1"])
            .args(["--health-listen", &format!("127.0.0.1:{}", free_port())])
            .arg("--attach-tls-dir")
            .arg(dir.join("first"))
            .env("TREFFPUNKT_GRANT_KEY", &grant_key)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("the media node starts"),
    );
    let up = eventually(Duration::from_secs(20), || async {
        attached(operator.admin, &token)
            .await
            .contains(&"knoten-a".to_owned())
            .then_some(())
    })
    .await;
    assert!(
        up.is_some(),
        "the node with its pool's certificate attaches"
    );

    // Nobody else.
    let stranger = Authority::generate().unwrap();
    let foreign = stranger
        .issue(&identity::pool(&pool), Duration::from_secs(3600), false)
        .unwrap();
    std::fs::create_dir_all(dir.join("foreign")).unwrap();
    for (file, text) in [
        ("ca.crt", field(&secret, keys::AUTHORITY_CERT).unwrap()),
        ("tls.crt", foreign.cert_pem),
        ("tls.key", foreign.key_pem),
    ] {
        std::fs::write(dir.join("foreign").join(file), text).unwrap();
    }
    let grpc = operator.grpc;
    let first = || Some(tls_from(&dir.join("first")));
    let plaintext = register(grpc, None, "knoten-x", &pool, Some(&key)).await;
    assert!(
        plaintext.is_err() || plaintext.unwrap().answer.is_err(),
        "without a certificate"
    );
    let other = register(
        grpc,
        Some(tls_from(&dir.join("foreign"))),
        "knoten-x",
        &pool,
        Some(&key),
    )
    .await;
    assert!(
        other.is_err() || other.unwrap().answer.is_err(),
        "with a certificate of another authority"
    );
    for (node_id, claimed, code, why) in [
        (
            "knoten-x",
            "beta",
            tonic::Code::PermissionDenied,
            "for another pool",
        ),
        (
            "knoten-a",
            pool.as_str(),
            tonic::Code::AlreadyExists,
            "under the live node's id",
        ),
    ] {
        let registration = register(grpc, first(), node_id, claimed, Some(&key))
            .await
            .expect("the handshake passes");
        let status = registration.answer.expect_err(why);
        assert_eq!(status.code(), code, "{why}: {status}");
    }

    // Renewed: a new node attaches with the new certificate; the first stays.
    let old = field(&secret, &cert_field);
    let due = json!({"stringData": {not_after_field: "0"}});
    secrets
        .patch(&secret_name, &PatchParams::default(), &Patch::Merge(&due))
        .await
        .unwrap();
    let touch = json!({"metadata": {"annotations": {"test.treffpunkt.io/touched": "1"}}});
    Api::<MediaPool>::namespaced(client.clone(), PLATFORM)
        .patch(&pool, &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .unwrap();
    let renewed = eventually(Duration::from_secs(30), || async {
        let secret = secrets.get(&secret_name).await.ok()?;
        (field(&secret, &cert_field) != old).then_some(secret)
    })
    .await
    .expect("the certificate is renewed");
    write_credential(&renewed, &pool, &dir.join("renewed"));
    let newcomer = register(
        grpc,
        Some(tls_from(&dir.join("renewed"))),
        "knoten-b",
        &pool,
        Some(&key),
    )
    .await
    .expect("the handshake passes");
    assert!(newcomer.answer.is_ok(), "the renewed certificate attaches");
    let nodes = attached(operator.admin, &token).await;
    assert!(
        nodes.contains(&"knoten-a".to_owned()),
        "the first node stays: {nodes:?}"
    );
    drop(node);
    let _ = std::fs::remove_dir_all(dir);
}
