//! What the integration tests share: the real Kubernetes API server, control-plane replicas
//! and media nodes, ways to wait for a condition, (in [`netns`]) a line whose downlink a test
//! can narrow, (in [`sockets`]) bare sockets against the gateway, (in [`attach`]) a
//! registration on the Attach port, (in [`partner`]) a partner's site, (in [`events`]) what a
//! Rust participant is told, (in [`browser`]) real browser pages in a room, and (in [`logs`])
//! what the control planes and media nodes that a test started logged.
//!
//! `deploy/testenv` builds one binary with etcd, kube-apiserver, kube-controller-manager and
//! kube-scheduler from the Go modules of Kubernetes. A test binary starts it once (the first test
//! that asks) and shares it; tests keep apart by using names of their own. The environment stops
//! when the test process ends, because it exits when its stdin closes.
#![allow(dead_code)]

pub mod attach;
pub mod audit;
pub mod browser;
pub mod calls;
pub mod events;
pub mod helm;
pub mod kubelet;
pub mod logs;
pub mod netns;
pub mod nodes;
pub mod partner;
pub mod resources;
pub mod sockets;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, Config, ResourceExt};
use treffpunkt_operator::crd;

/// A running test environment.
pub struct TestEnv {
    /// The admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// The API server's URL.
    pub server: String,
    /// The API server's audit log (JSON lines; see [`audit_files`]).
    pub audit_log: PathBuf,
    _process: Child,
}

/// `path` in the repository this test runs from, as cargo says when it runs the test. Not the
/// one it was built in: checkouts that share a build folder may share test binaries too (cargo
/// reuses one built elsewhere when the sources are the same).
pub fn repository(path: &str) -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo runs the test"))
        .join("..")
        .join(path)
}

fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("TREFFPUNKT_TESTENV") {
        return PathBuf::from(path);
    }
    let script = repository("deploy/testenv/build.sh");
    let output = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("deploy/testenv/build.sh runs");
    assert!(
        output.status.success(),
        "building the test environment failed"
    );
    let stdout = String::from_utf8(output.stdout).expect("a path");
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("build.sh prints the binary's path")
            .trim(),
    )
}

fn start() -> TestEnv {
    let started = Instant::now();
    // The CRDs go in before kube-controller-manager starts, so that its quota and garbage
    // collector controllers know rooms from the start (they rediscover only every 30 s).
    let crds = repository("charts/treffpunkt/crds");
    let audit = audit_files();
    let mut process = Command::new(binary())
        .arg("--crds")
        .arg(crds)
        .arg(format!(
            "--apiserver-arg=--audit-policy-file={}",
            audit.policy.display()
        ))
        .arg(format!(
            "--apiserver-arg=--audit-log-path={}",
            audit.log.display()
        ))
        // One file, never rotated: the tests read it from an offset.
        .arg("--apiserver-arg=--audit-log-maxsize=1000000")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the test environment starts");
    let stdout = process.stdout.take().expect("stdout is piped");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("the test environment reports readiness");
    let ready: serde_json::Value = serde_json::from_str(&line)
        .unwrap_or_else(|_| panic!("the test environment failed to start: {line:?}"));
    eprintln!(
        "test environment ready in {:.1} s at {}",
        started.elapsed().as_secs_f64(),
        ready["server"]
    );
    TestEnv {
        kubeconfig: PathBuf::from(ready["kubeconfig"].as_str().expect("a kubeconfig path")),
        server: ready["server"].as_str().expect("a server").to_owned(),
        audit_log: audit.log,
        _process: process,
    }
}

struct AuditFiles {
    policy: PathBuf,
    log: PathBuf,
}

/// The API server's audit log of this test process: every write, read and watch, with who
/// asked, what and when, no bodies.
fn audit_files() -> AuditFiles {
    // The logs of test processes that have ended go.
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name.strip_prefix("treffpunkt-audit-") else {
                continue;
            };
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = logs::folder();
    std::fs::create_dir_all(&dir).expect("a folder for the audit log");
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  \
         - level: Metadata\n    verbs: [create, update, patch, delete, deletecollection, get, \
         list, watch]\n  - level: None\n",
    )
    .expect("the audit policy");
    AuditFiles {
        policy,
        log: dir.join("audit.log"),
    }
}

/// The shared test environment, started on first use.
pub fn testenv() -> &'static TestEnv {
    static ENV: OnceLock<TestEnv> = OnceLock::new();
    ENV.get_or_init(start)
}

/// The admin's client configuration.
pub async fn admin_config() -> Config {
    let kubeconfig = Kubeconfig::read_from(&testenv().kubeconfig).expect("a kubeconfig");
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a client configuration")
}

/// A client as the cluster's admin, with the CRDs installed.
pub async fn admin() -> Client {
    let client = Client::try_from(admin_config().await).expect("a client");
    install_crds(&client).await;
    client
}

/// A client that impersonates `user` in `groups` (needs the admin's impersonate right).
pub async fn impersonating(user: &str, groups: &[&str]) -> Client {
    let mut config = admin_config().await;
    config.auth_info.impersonate = Some(user.to_owned());
    config.auth_info.impersonate_groups = Some(groups.iter().map(|g| (*g).to_owned()).collect());
    Client::try_from(config).expect("an impersonating client")
}

/// Applies the operator's CRDs and waits until the API server serves them.
pub async fn install_crds(client: &Client) {
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    for definition in crd::crds() {
        let name = definition.name_any();
        crds.patch(
            &name,
            &PatchParams::apply("treffpunkt-tests").force(),
            &Patch::Apply(&definition),
        )
        .await
        .expect("the CRD applies");
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(crds.clone(), &name, conditions::is_crd_established()),
        )
        .await
        .expect("the CRD is established in time")
        .expect("waiting for the CRD works");
    }
}

/// A name no other test uses: `prefix` and a random suffix.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "{prefix}-{:x}{:x}",
        nanos % 0xffff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Polls `check` every 100 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks `condition` every 20 ms until it holds, for at most `limit`; whether it held. For
/// what the test's own process sees, such as a participant's counters and notices.
pub async fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    condition()
}

/// Whether `receiver` gets more of `source`'s video within a few seconds.
pub async fn keeps_receiving(
    receiver: &treffpunkt_client::Participant,
    source: &treffpunkt_client::Participant,
) -> bool {
    let packets = || {
        receiver
            .stats(&source.id, treffpunkt_client::Kind::Video)
            .packets
    };
    let before = packets();
    wait_until(Duration::from_secs(10), || packets() > before + 20).await
}

/// The platform namespace of the shared operator.
pub const PLATFORM: &str = "treffpunkt";
/// How long ad-hoc rooms may stay empty under the shared operator.
pub const ADHOC_TTL: Duration = Duration::from_secs(3);

/// A control-plane replica running in this test process.
pub struct Operator {
    /// The gateway.
    pub http: std::net::SocketAddr,
    /// The Attach endpoint.
    pub grpc: std::net::SocketAddr,
    /// /metrics, /healthz, /readyz.
    pub admin: std::net::SocketAddr,
}

/// Settings for an operator in the tests.
pub fn settings() -> treffpunkt_operator::reconcile::Settings {
    treffpunkt_operator::reconcile::Settings {
        platform_namespace: PLATFORM.to_owned(),
        public_url: "https://treffpunkt.test".to_owned(),
        adhoc_room_ttl: ADHOC_TTL,
        attach_address: "http://treffpunkt-attach.treffpunkt.svc:7001".to_owned(),
        grant_key_secret: "treffpunkt-grant-key".to_owned(),
        key_rotation: None,
        tenant_secrets: Some(treffpunkt_operator::reconcile::TenantSecrets {
            cluster_role: "treffpunkt-tenant-secrets".to_owned(),
            service_account: "treffpunkt".to_owned(),
        }),
        autoscaling: treffpunkt_operator::autoscaler::Timing::default(),
        log_json: false,
        log_filter: None,
    }
}

/// Starts a replica on its own thread and runtime (it outlives every test's runtime) with
/// lease `lease`; returns its addresses once it serves.
pub fn start_operator(lease: &str) -> Operator {
    start_operator_with(lease, settings(), false)
}

/// The same, with `settings`, and with mutual TLS on the Attach port if `attach_tls`.
pub fn start_operator_with(
    lease: &str,
    settings: treffpunkt_operator::reconcile::Settings,
    attach_tls: bool,
) -> Operator {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let lease = lease.to_owned();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let client = admin().await;
            ensure_namespace(&client, PLATFORM).await;
            let loopback = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let running =
                treffpunkt_operator::cluster::start(treffpunkt_operator::cluster::ClusterConfig {
                    kubeconfig: Some(testenv().kubeconfig.clone()),
                    http: loopback(0),
                    grpc: loopback(0),
                    admin: loopback(0),
                    election: treffpunkt_operator::leader::Election {
                        namespace: PLATFORM.to_owned(),
                        lease_name: lease.clone(),
                        identity: format!("{lease}-replica"),
                        duration_seconds: 15,
                    },
                    settings,
                    limits: treffpunkt_operator::gateway::Limits::default(),
                    attach_tls,
                    turn: None,
                })
                .await
                .expect("the operator starts");
            let mut leading = running.leading.clone();
            let _ = leading.wait_for(|leading| *leading).await;
            ready_tx
                .send(Operator {
                    http: running.http,
                    grpc: running.grpc,
                    admin: running.admin,
                })
                .expect("the test waits");
            std::future::pending::<()>().await;
        });
    });
    ready_rx.recv().expect("the operator thread reports")
}

/// The operator shared by the tests of one test binary.
pub fn operator() -> &'static Operator {
    static OPERATOR: OnceLock<Operator> = OnceLock::new();
    OPERATOR.get_or_init(|| start_operator("treffpunkt-tests"))
}

/// Makes namespace `name` if it does not exist.
pub async fn ensure_namespace(client: &Client, name: &str) {
    use k8s_openapi::api::core::v1::Namespace;
    let namespace = Namespace {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply("treffpunkt-tests"),
            &Patch::Apply(&namespace),
        )
        .await
        .expect("the namespace applies");
}

/// Reads the admin endpoint's metrics.
pub async fn metrics(admin: std::net::SocketAddr) -> String {
    admin_request(admin, "GET /metrics", None).await
}

/// The whole response of the admin endpoint at `admin` to `request` (method and path), with
/// `token` as the bearer token if given.
pub async fn admin_request(
    admin: std::net::SocketAddr,
    request: &str,
    token: Option<&str>,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(admin)
        .await
        .expect("the admin endpoint answers");
    let authorization = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let head = format!("{request} HTTP/1.0\r\nHost: localhost\r\n{authorization}\r\n");
    stream.write_all(head.as_bytes()).await.expect("a request");
    let mut body = String::new();
    stream.read_to_string(&mut body).await.expect("a response");
    body
}

/// The value of counter `name{labels}` in OpenMetrics `text`, 0 when absent.
pub fn counter(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

pub use nodes::NodeProcess;
pub use treffpunkt_client::loopback::free_port;

/// Sends a bodyless HTTP/1.0 request to `address` and returns the response's status code and
/// body, or `None` when nobody answers.
pub async fn http(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
) -> Option<(u16, String)> {
    http_with(address, method, path, None).await
}

/// The same, on an admin endpoint of the operators in [`PLATFORM`], with the admin token of their
/// keys' Secret.
pub async fn http_as_admin(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
) -> Option<(u16, String)> {
    use k8s_openapi::api::core::v1::Secret;
    let secret = Api::<Secret>::namespaced(admin().await, PLATFORM)
        .get_opt("treffpunkt-grant-key")
        .await
        .ok()??;
    let token = secret
        .data?
        .get(treffpunkt_operator::keys::ADMIN_TOKEN)?
        .0
        .clone();
    http_with(address, method, path, Some(&String::from_utf8(token).ok()?)).await
}

async fn http_with(
    address: std::net::SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.ok()?;
    let authorization = token
        .map(|token| format!("Authorization: Bearer {token}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\n{authorization}Content-Length: 0\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// A `treffpunkt operator` process on ports of its own.
pub struct OperatorProcess {
    /// The process.
    pub process: std::process::Child,
    /// The gateway.
    pub http: std::net::SocketAddr,
    /// The Attach endpoint.
    pub grpc: std::net::SocketAddr,
    /// /metrics, /healthz, /readyz, /nodes.
    pub admin: std::net::SocketAddr,
    identity: String,
    lease: String,
    env: Vec<(String, String)>,
}

impl OperatorProcess {
    /// Starts a replica competing for `lease`.
    pub fn start(identity: &str, lease: &str) -> Self {
        Self::start_with(identity, lease, &[])
    }

    /// The same, with `env` added to its environment.
    pub fn start_with(identity: &str, lease: &str, env: &[(&str, &str)]) -> Self {
        let loopback = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Self::start_on(
            identity,
            lease,
            env,
            [
                loopback(free_port()),
                loopback(free_port()),
                loopback(free_port()),
            ],
        )
    }

    fn start_on(
        identity: &str,
        lease: &str,
        env: Vec<(String, String)>,
        [http, grpc, admin]: [std::net::SocketAddr; 3],
    ) -> Self {
        let process = Command::new(env!("CARGO_BIN_EXE_treffpunkt"))
            .args(["operator", "--kubeconfig"])
            .arg(&testenv().kubeconfig)
            .args([
                "--namespace",
                PLATFORM,
                "--identity",
                identity,
                "--lease-name",
                lease,
            ])
            .args(["--lease-seconds", "4", "--adhoc-room-ttl", "60"])
            .args(["--http-listen", &http.to_string()])
            .args(["--grpc-listen", &grpc.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .env("RUST_LOG", logs::PROCESS_LOG_LEVEL)
            .env("NO_COLOR", "1")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(logs::process_log(&format!(
                "{identity}-{}",
                unique("operator")
            )))
            .spawn()
            .expect("the operator binary starts");
        Self {
            process,
            http,
            grpc,
            admin,
            identity: identity.to_owned(),
            lease: lease.to_owned(),
            env,
        }
    }

    /// Kills the process at once.
    pub fn kill(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }

    /// Kills the process and starts it again on the same ports.
    pub fn restart(&mut self) {
        self.kill();
        *self = Self::start_on(
            &self.identity.clone(),
            &self.lease.clone(),
            self.env.clone(),
            [self.http, self.grpc, self.admin],
        );
    }

    /// Waits until the gateway serves.
    pub async fn serving(&self) -> bool {
        eventually(Duration::from_secs(30), || async {
            http(self.http, "GET", "/healthz")
                .await
                .filter(|(status, _)| *status == 200)
        })
        .await
        .is_some()
    }

    /// The media nodes attached to this replica, as its admin endpoint lists them.
    pub async fn nodes(&self) -> Vec<serde_json::Value> {
        http_as_admin(self.admin, "GET", "/nodes")
            .await
            .and_then(|(_, body)| serde_json::from_str(&body).ok())
            .unwrap_or_default()
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The grant key the operators made, as media nodes take it.
pub async fn grant_key(client: &Client) -> String {
    use k8s_openapi::api::core::v1::Secret;
    let secrets = Api::<Secret>::namespaced(client.clone(), PLATFORM);
    let secret = eventually(Duration::from_secs(30), || async {
        secrets.get_opt("treffpunkt-grant-key").await.ok().flatten()
    })
    .await
    .expect("the operator makes the grant key");
    String::from_utf8(secret.data.expect("data")["key"].0.clone()).expect("a text key")
}

/// The certificate of the nodes of MediaPool `pool` (made here if it does not exist), as the
/// operators issued it into their keys' Secret, written into a folder as a pod mounts it; with
/// the pool's name. The Attach port of every operator binary runs mutual TLS.
pub async fn pool_credential(client: &Client, pool: &str) -> (String, PathBuf) {
    use k8s_openapi::api::core::v1::Secret;
    use treffpunkt_operator::keys;
    let pools = Api::<crd::MediaPool>::namespaced(client.clone(), PLATFORM);
    if pools.get_opt(pool).await.unwrap().is_none() {
        let spec = resources::pool_spec();
        let _ = pools
            .create(&Default::default(), &crd::MediaPool::new(pool, spec))
            .await;
    }
    let secrets = Api::<Secret>::namespaced(client.clone(), PLATFORM);
    let [cert, key, _] = keys::pool_fields(pool);
    let fields = [
        (keys::AUTHORITY_CERT, "ca.crt"),
        (&cert, "tls.crt"),
        (&key, "tls.key"),
    ];
    let texts = eventually(Duration::from_secs(30), || async {
        let data = secrets.get_opt("treffpunkt-grant-key").await.ok()??.data?;
        fields
            .iter()
            .map(|(field, _)| Some(String::from_utf8_lossy(&data.get(*field)?.0).into_owned()))
            .collect::<Option<Vec<String>>>()
    })
    .await
    .expect("the operators issue the pool's nodes a certificate");
    let dir = std::env::temp_dir().join(unique("treffpunkt-credential"));
    std::fs::create_dir_all(&dir).unwrap();
    for ((_, file), text) in fields.iter().zip(texts) {
        std::fs::write(dir.join(file), text).unwrap();
    }
    (pool.to_owned(), dir)
}

/// A benchmark's numeric argument `name` (`--name 10`), or `default`.
pub fn argument(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
