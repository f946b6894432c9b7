//! Mutual TLS on the Attach port of a replica on a real API server: a MediaPool's nodes get a
//! certificate that names their pool, a real media node process attaches with it, and nobody
//! else does: not without a certificate, not with one of another authority, not for another
//! pool, not under another pool's id or the live node's id (a node of the release before may use
//! its pod's name). A renewed certificate attaches new nodes while the node
//! attached with the old one stays. A partner's external pool gets its credential in the
//! partner's namespace, and a node at the partner's site hosts that tenant's rooms only; what a
//! node of that pool reports of another tenant's rooms does not count. A pool's node, run with
//! the keys its pod mounts, shows its status and metrics only to the platform's metrics token.

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use support::attach::register;
use support::partner::{fetch_credential, field};
use support::resources::{
    create_pool_pod, external_pool_spec, pool_spec, ready_tenant, tenant_spec,
};
use support::{PLATFORM, admin, admin_request, eventually, free_port, keeps_receiving, unique};
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};
use treffpunkt_client::{Participant, Publish, signal_url};
use treffpunkt_operator::crd::{self, MediaPool, Room};
use treffpunkt_operator::fleet::tls::Authority;
use treffpunkt_operator::keys;
use treffpunkt_operator::reconcile::PARTNER_SECRET;
use treffpunkt_proto::grant::Keyring;
use treffpunkt_proto::identity;
use treffpunkt_proto::v1::{self, control_message, node_message};

/// The keys' Secret of this file's replica.
const KEYS: &str = "treffpunkt-tls-keys";

/// Taken by each test for its whole run: the tests attach nodes that never answer to pools open
/// to every tenant, where another test's joins would be placed and wait.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The replica of this file's tests: its Attach port runs mutual TLS.
fn tls_operator() -> &'static support::Operator {
    static OPERATOR: OnceLock<support::Operator> = OnceLock::new();
    OPERATOR.get_or_init(|| {
        let mut settings = support::settings();
        settings.grant_key_secret = KEYS.to_owned();
        support::start_operator_with("treffpunkt-tls-tests", settings, true)
    })
}

/// A media node process for `pool` that attaches to `operator` as `id`, its health endpoint on
/// `health`; the caller adds its keys.
fn node_command(
    operator: &support::Operator,
    id: &str,
    pool: &str,
    health: std::net::SocketAddr,
) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_treffpunkt"));
    command
        .args(["media-node", "--node-id", id, "--pool", pool])
        .args(["--control-plane", &format!("http://{}", operator.grpc)])
        .args(["--udp-bind", "127.0.0.1:0", "--announce-ip", "127.0.0.1"])
        .args(["--health-listen", &health.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    command
}

/// Starts a media node process for `pool` that attaches to `operator` with the certificate in
/// `dir` and `grant_key`.
fn start_node(
    operator: &support::Operator,
    id: &str,
    pool: &str,
    dir: &Path,
    grant_key: &str,
) -> Process {
    let health = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    Process(
        node_command(operator, id, pool, health)
            .arg("--attach-tls-dir")
            .arg(dir)
            .env("TREFFPUNKT_GRANT_KEY", grant_key)
            .spawn()
            .expect("the media node starts"),
    )
}

/// Whether node `id` attaches to `operator` in time.
async fn attaches(operator: &support::Operator, token: &str, id: &str) -> bool {
    eventually(Duration::from_secs(20), || async {
        attached(operator.admin, token)
            .await
            .contains(&id.to_owned())
            .then_some(())
    })
    .await
    .is_some()
}

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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

/// The nodes attached to the replica whose admin endpoint is `admin`, as it lists them.
async fn nodes(admin: std::net::SocketAddr, token: &str) -> Vec<serde_json::Value> {
    let response = admin_request(admin, "GET /nodes", Some(token)).await;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_default()
}

/// The ids of the nodes attached to the replica whose admin endpoint is `admin`.
async fn attached(admin: std::net::SocketAddr, token: &str) -> Vec<String> {
    nodes(admin, token)
        .await
        .iter()
        .filter_map(|node| node["id"].as_str().map(str::to_owned))
        .collect()
}

/// A MediaPool open to every tenant, with the keys' Secret once it holds the pool's
/// certificate.
struct OpenPool {
    name: String,
    secret: Secret,
    grant_key: String,
    key: Keyring,
    token: String,
}

/// Makes an open MediaPool named after `prefix` and writes its nodes' credential into `dir`.
async fn open_pool(client: &Client, prefix: &str, dir: &Path) -> OpenPool {
    let name = unique(prefix);
    Api::<MediaPool>::namespaced(client.clone(), PLATFORM)
        .create(&PostParams::default(), &MediaPool::new(&name, pool_spec()))
        .await
        .unwrap();
    let [cert_field, _, _] = keys::pool_fields(&name);
    let secrets = Api::<Secret>::namespaced(client.clone(), PLATFORM);
    let secret = eventually(Duration::from_secs(30), || async {
        let secret = secrets.get(KEYS).await.ok()?;
        field(&secret, &cert_field).map(|_| secret)
    })
    .await
    .expect("the pool's nodes get a certificate");
    write_credential(&secret, &name, dir);
    let grant_key = field(&secret, keys::GRANT_KEY).unwrap();
    OpenPool {
        key: Keyring::from_secrets(&grant_key).unwrap(),
        token: field(&secret, keys::ADMIN_TOKEN).unwrap(),
        grant_key,
        name,
        secret,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_nodes_with_their_pools_certificate_attach() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let client = admin().await;
    let operator = tls_operator();
    let secrets = Api::<Secret>::namespaced(client.clone(), PLATFORM);
    let dir = std::env::temp_dir().join(unique("treffpunkt-tls"));
    let OpenPool {
        name: pool,
        secret,
        grant_key,
        key,
        token,
    } = open_pool(&client, "alpha", &dir.join("first")).await;

    // A real media node with the pool's certificate attaches.
    let node = start_node(operator, "knoten-a", &pool, &dir.join("first"), &grant_key);
    let knoten_a = identity::node_id(&pool, "knoten-a");
    assert!(
        attaches(operator, &token, &knoten_a).await,
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
            "beta:knoten-x",
            "beta",
            tonic::Code::PermissionDenied,
            "for another pool",
        ),
        (
            knoten_a.as_str(),
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
    let [cert_field, _, not_after_field] = keys::pool_fields(&pool);
    let old = field(&secret, &cert_field);
    let due = json!({"stringData": {not_after_field: "0"}});
    secrets
        .patch(KEYS, &PatchParams::default(), &Patch::Merge(&due))
        .await
        .unwrap();
    let touch = json!({"metadata": {"annotations": {"test.treffpunkt.io/touched": "1"}}});
    Api::<MediaPool>::namespaced(client.clone(), PLATFORM)
        .patch(&pool, &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .unwrap();
    let renewed = eventually(Duration::from_secs(30), || async {
        let secret = secrets.get(KEYS).await.ok()?;
        (field(&secret, &cert_field) != old).then_some(secret)
    })
    .await
    .expect("the certificate is renewed");
    write_credential(&renewed, &pool, &dir.join("renewed"));
    let newcomer = register(
        grpc,
        Some(tls_from(&dir.join("renewed"))),
        &identity::node_id(&pool, "knoten-b"),
        &pool,
        Some(&key),
    )
    .await
    .expect("the handshake passes");
    assert!(newcomer.answer.is_ok(), "the renewed certificate attaches");
    let nodes = attached(operator.admin, &token).await;
    assert!(nodes.contains(&knoten_a), "the first node stays: {nodes:?}");
    drop(node);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_registers_only_under_an_id_of_its_pool() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let client = admin().await;
    let grpc = tls_operator().grpc;
    let dir = std::env::temp_dir().join(unique("treffpunkt-ids"));
    let OpenPool {
        name: pool, key, ..
    } = open_pool(&client, "gamma", &dir).await;
    let with_certificate = |id: String| {
        let (dir, pool, key) = (dir.clone(), pool.clone(), key.clone());
        async move {
            register(grpc, Some(tls_from(&dir)), &id, &pool, Some(&key))
                .await
                .expect("the handshake passes")
        }
    };
    assert!(
        with_certificate(identity::node_id(&pool, "knoten-c"))
            .await
            .answer
            .is_ok(),
        "under an id that begins with its pool's name"
    );
    // A node of the release before registers under its pod's name: taken for a pod of its own
    // pool, refused for another pool's.
    let (ours, theirs) = (unique("media-pod"), unique("media-pod"));
    create_pool_pod(&client, &ours, &pool).await;
    create_pool_pod(&client, &theirs, "beta").await;
    let earlier = with_certificate(ours.clone()).await;
    assert!(
        earlier.answer.is_ok(),
        "a node of the release before attaches under its pod's name"
    );
    for (node_id, why) in [
        (
            "knoten-x".to_owned(),
            "under an id that does not name the pool",
        ),
        (
            identity::node_id("beta", "knoten-x"),
            "under an id of another pool",
        ),
        (theirs, "under the name of another pool's pod"),
        // Not even looked up: only what can name a pod goes into a path of the API server.
        (format!("x/../{ours}"), "under a path to its pool's pod"),
    ] {
        let status = with_certificate(node_id).await.answer.expect_err(why);
        assert_eq!(
            status.code(),
            tonic::Code::PermissionDenied,
            "{why}: {status}"
        );
    }
    drop(earlier);
    let _ = std::fs::remove_dir_all(dir);
}

/// A partner with a tenant whose rooms run on an external MediaPool of its own, and the
/// pool's credential as the partner's admins fetch it from their namespace into `dir`.
struct PartnerSite {
    tenant: String,
    pool: String,
    /// The partner's Secret and its namespace's Secrets.
    credential: Secret,
    secrets: Api<Secret>,
    dir: std::path::PathBuf,
    grant_key: String,
    /// The replica's admin token.
    token: String,
}

async fn partner_site(client: &Client) -> PartnerSite {
    let tenant = unique("verein");
    let pool = unique("vereinsheim");
    let mut spec = tenant_spec(None, 5);
    spec.policy.adhoc_rooms = true;
    spec.media_pools = vec![pool.clone()];
    ready_tenant(client, &tenant, spec).await;
    Api::<MediaPool>::namespaced(client.clone(), PLATFORM)
        .create(
            &PostParams::default(),
            &MediaPool::new(&pool, external_pool_spec(&tenant)),
        )
        .await
        .unwrap();
    let secrets = Api::<Secret>::namespaced(client.clone(), &crd::tenant_namespace(&tenant));
    let dir = std::env::temp_dir().join(unique("treffpunkt-partner"));
    let credential = fetch_credential(&secrets, &pool, &dir).await;
    let keys_secret = Api::<Secret>::namespaced(client.clone(), PLATFORM)
        .get(KEYS)
        .await
        .unwrap();
    PartnerSite {
        grant_key: field(&credential, "grant-key").unwrap(),
        token: field(&keys_secret, keys::ADMIN_TOKEN).unwrap(),
        tenant,
        pool,
        credential,
        secrets,
        dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partner_site_node_hosts_its_tenants_rooms_and_no_other() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let client = admin().await;
    let operator = tls_operator();
    // The partner's rooms run on the nodes it brings.
    let PartnerSite {
        tenant,
        pool,
        credential,
        secrets: partner,
        dir,
        grant_key,
        token,
    } = partner_site(&client).await;
    let namespace = crd::tenant_namespace(&tenant);
    let _node = start_node(operator, "vereinsheim-1", &pool, &dir, &grant_key);
    let partner_node = identity::node_id(&pool, "vereinsheim-1");
    assert!(
        attaches(operator, &token, &partner_node).await,
        "the partner's node attaches with its credential"
    );

    // The partner's room goes to the partner's node, and its call runs there.
    let url = signal_url(operator.http, &tenant, "probe");
    let mut anna = None;
    for _ in 0..50 {
        match Participant::join(&url, "Anna", Some(Publish::default())).await {
            Ok(participant) => {
                anna = Some(participant);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    let anna = anna.expect("the partner's member joins");
    let ben = Participant::join(&url, "Ben", None)
        .await
        .expect("Ben joins");
    let placed = Api::<Room>::namespaced(client.clone(), &namespace)
        .get("probe")
        .await
        .unwrap()
        .status
        .and_then(|status| status.node);
    assert_eq!(placed.as_deref(), Some(partner_node.as_str()));
    assert!(keeps_receiving(&ben, &anna).await, "Ben receives Anna");

    // The partner's certificate renewed during the call: the call goes on.
    let not_after = format!("{pool}.not-after");
    let old = field(&credential, &format!("{pool}.crt"));
    let due = json!({"stringData": {not_after: "0"}});
    partner
        .patch(PARTNER_SECRET, &PatchParams::default(), &Patch::Merge(&due))
        .await
        .unwrap();
    let touch = json!({"metadata": {"annotations": {"test.treffpunkt.io/touched": "1"}}});
    Api::<MediaPool>::namespaced(client.clone(), PLATFORM)
        .patch(&pool, &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .unwrap();
    let renewed = eventually(Duration::from_secs(30), || async {
        let secret = partner.get(PARTNER_SECRET).await.ok()?;
        (field(&secret, &format!("{pool}.crt")) != old).then_some(())
    })
    .await;
    assert!(renewed.is_some(), "the partner's certificate is renewed");
    assert!(
        keeps_receiving(&ben, &anna).await,
        "Ben keeps receiving Anna after the renewal"
    );

    // Another tenant's room never does: refused when the partner's node is the only one with
    // room, placed elsewhere otherwise.
    let other = unique("nachbar");
    let mut spec = tenant_spec(None, 5);
    spec.policy.adhoc_rooms = true;
    ready_tenant(&client, &other, spec).await;
    let url = signal_url(operator.http, &other, "probe");
    match Participant::join(&url, "Ben", None).await {
        Err(treffpunkt_client::Error::Refused { code, .. }) => assert_eq!(code, "platform-full"),
        Err(error) => panic!("Ben's join fails otherwise: {error}"),
        Ok(_) => {
            let placed = Api::<Room>::namespaced(client.clone(), &crd::tenant_namespace(&other))
                .get("probe")
                .await
                .unwrap()
                .status
                .and_then(|status| status.node);
            assert_ne!(
                placed.as_deref(),
                Some(partner_node.as_str()),
                "not on the partner's node"
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_partner_site_node_reports_counts_for_its_tenants_rooms_only() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let client = admin().await;
    let operator = tls_operator();
    let PartnerSite {
        pool,
        dir,
        grant_key,
        token,
        ..
    } = partner_site(&client).await;
    let other = unique("nachbar");
    let mut spec = tenant_spec(None, 5);
    spec.policy.adhoc_rooms = true;
    ready_tenant(&client, &other, spec).await;

    // A node of the partner's pool claims a crowd in the other tenant's room.
    let key = Keyring::from_secrets(&grant_key).unwrap();
    let rogue_id = identity::node_id(&pool, "rogue");
    let rogue = register(
        operator.grpc,
        Some(tls_from(&dir)),
        &rogue_id,
        &pool,
        Some(&key),
    )
    .await
    .expect("the handshake passes");
    assert!(
        rogue.answer.is_ok(),
        "a second node of the partner's pool attaches"
    );
    let crowd = 100_000;
    let claim = v1::LoadReport {
        rooms: 1,
        participants: crowd,
        room_loads: vec![v1::RoomLoad {
            room: Some(v1::RoomRef {
                tenant: other.clone(),
                name: "probe".into(),
            }),
            participants: crowd,
        }],
        ..v1::LoadReport::default()
    };
    rogue
        .to_control_plane
        .send(v1::NodeMessage::new(node_message::Kind::Load(claim)))
        .await
        .expect("the stream takes the report");
    let reported = eventually(Duration::from_secs(10), || async {
        nodes(operator.admin, &token)
            .await
            .iter()
            .any(|node| node["id"] == rogue_id.as_str() && node["participants"] == crowd)
            .then_some(())
    })
    .await;
    assert!(reported.is_some(), "the replica has the rogue report");

    // The other tenant's next join is let in all the same, and placed on a node of a pool open
    // to every tenant (this test plays it) that is asked to open the session.
    let city = open_pool(&client, "stadt", &dir.join("city")).await;
    let city_node = register(
        operator.grpc,
        Some(tls_from(&dir.join("city"))),
        &identity::node_id(&city.name, "played"),
        &city.name,
        Some(&city.key),
    )
    .await
    .expect("the handshake passes");
    let mut commands = city_node.answer.expect("the open pool's node attaches");
    let url = signal_url(operator.http, &other, "zweiter");
    let join = tokio::time::timeout(Duration::from_secs(4), Participant::join(&url, "Cem", None));
    match join.await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => panic!("Cem's join is refused: {error}"),
        // The played node does not answer: the join waits for it, and it was asked.
        Err(_) => {
            let opened = tokio::time::timeout(Duration::from_secs(5), async {
                while let Some(Ok(message)) = commands.next().await {
                    if matches!(message.kind, Some(control_message::Kind::OpenSession(_))) {
                        return true;
                    }
                }
                false
            });
            assert_eq!(
                opened.await,
                Ok(true),
                "Cem's session opens on the open pool's node"
            );
        }
    }
    drop(rogue);
    let _ = std::fs::remove_dir_all(dir);
}

/// What a node of `pool` finds of the keys' Secret in its pod: each item of the pod template's
/// keys volume written into `dir` as the kubelet mounts it, and the container's variables that
/// name a place in that mount, pointed at `dir`.
async fn mount_keys_as_the_pod(client: &Client, pool: &str, dir: &Path) -> Vec<(String, String)> {
    let deployment = eventually(Duration::from_secs(30), || async {
        Api::<Deployment>::namespaced(client.clone(), PLATFORM)
            .get(&format!("treffpunkt-media-{pool}"))
            .await
            .ok()
    })
    .await
    .expect("the pool's Deployment");
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let keys = pod
        .volumes
        .unwrap_or_default()
        .into_iter()
        .find(|v| v.name == "keys");
    let source = keys
        .and_then(|v| v.secret)
        .expect("the pod mounts the keys");
    let secret = Api::<Secret>::namespaced(client.clone(), PLATFORM)
        .get(source.secret_name.as_deref().unwrap())
        .await
        .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    for item in source.items.unwrap_or_default() {
        let text = field(&secret, &item.key).expect("the Secret has every field the pod mounts");
        std::fs::write(dir.join(&item.path), text).unwrap();
    }
    let container = &pod.containers[0];
    let mounts = container.volume_mounts.clone().unwrap_or_default();
    let mount = &mounts.iter().find(|m| m.name == "keys").unwrap().mount_path;
    let env = container.env.clone().unwrap_or_default();
    env.into_iter()
        .filter_map(|var| {
            let within = var.value?.strip_prefix(mount.as_str())?.to_owned();
            Some((var.name, format!("{}{within}", dir.display())))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pools_nodes_show_their_status_and_metrics_only_to_the_platforms_metrics_token() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let client = admin().await;
    let operator = tls_operator();
    let dir = std::env::temp_dir().join(unique("treffpunkt-metrics"));
    let OpenPool {
        name: pool,
        secret,
        token: admin_token,
        ..
    } = open_pool(&client, "gamma", &dir.join("unused")).await;
    // The node runs with what its pod gets: grant key, certificate and metrics token as files.
    let pod_env = mount_keys_as_the_pod(&client, &pool, &dir.join("keys")).await;
    let names: Vec<&str> = pod_env.iter().map(|(name, _)| name.as_str()).collect();
    assert!(
        names.contains(&"TREFFPUNKT_METRICS_TOKEN_FILE"),
        "{names:?}"
    );
    let health = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let _node = Process(
        node_command(operator, "knoten-m", &pool, health)
            .envs(pod_env)
            .spawn()
            .expect("the media node starts"),
    );
    let id = identity::node_id(&pool, "knoten-m");
    assert!(
        attaches(operator, &admin_token, &id).await,
        "the node attaches"
    );

    let metrics_token = field(&secret, keys::METRICS_TOKEN).expect("the keys hold a metrics token");
    let status = admin_request(health, "GET /status", Some(&metrics_token)).await;
    assert!(status.starts_with("HTTP/1.0 200"), "{status}");
    assert!(status.contains(&id), "{status}");
    let metrics = admin_request(health, "GET /metrics", Some(&metrics_token)).await;
    assert!(metrics.contains("treffpunkt_node_"), "{metrics}");
    for (path, token) in [
        ("GET /status", None),
        ("GET /metrics", None),
        ("GET /metrics", Some(admin_token.as_str())),
    ] {
        let refused = admin_request(health, path, token).await;
        assert!(refused.starts_with("HTTP/1.0 401"), "{path}: {refused}");
        assert!(!refused.contains(&id), "{path}: {refused}");
    }
    let ready = admin_request(health, "GET /readyz", None).await;
    assert!(
        ready.starts_with("HTTP/1.0 200"),
        "the probes answer anyone: {ready}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
