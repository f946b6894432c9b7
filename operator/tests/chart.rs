//! The Helm chart (`charts/treffpunkt`) with a real Helm and a real API server.
//!
//! Helm is built from its Go module by `deploy/tools/build.sh helm`; the test command builds it
//! first and passes its path in `TREFFPUNKT_HELM`. The tests lint the chart, render it for the
//! value sets in `charts/treffpunkt/ci/` and have the API server accept every object with a
//! server-side dry-run, and check that wrong values are refused with a message that names them.
//! Then they install the chart for real. The `treffpunkt` binary runs as a local process (no
//! kubelet runs pods here) with the arguments and environment of the chart's Deployment, under
//! the identity of the chart's ServiceAccount (impersonation): it must make the public Tenant
//! and the default MediaPool Ready with the chart's RBAC, and fail, saying why, when one rule of
//! it is missing.

mod support;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use kube::api::{DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use kube::discovery::{self, Scope};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use support::{admin, counter, eventually, metrics, testenv, unique};
use treffpunkt_operator::crd::{self, MediaPool, Room, RoomSpec, Tenant, TenantSpec};

/// How long the operator gets to make something Ready (or to fail).
const WAIT: Duration = Duration::from_secs(60);

/// The value sets every test renders: the defaults, a city's full setup, the smallest one.
const VALUE_SETS: [&str; 3] = ["defaults", "partner", "minimal"];

/// The tests that run an operator run one at a time: two operators would both reconcile the
/// cluster-wide Tenants, and the machine has few cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn chart() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/treffpunkt")
}

fn values(set: &str) -> PathBuf {
    chart().join("ci").join(format!("{set}-values.yaml"))
}

/// The Helm binary: `TREFFPUNKT_HELM`, or built (and cached) by `deploy/tools/build.sh`.
fn helm_binary() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        if let Ok(path) = std::env::var("TREFFPUNKT_HELM") {
            return PathBuf::from(path);
        }
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/tools/build.sh");
        let output = Command::new("bash")
            .arg(&script)
            .arg("helm")
            .stderr(Stdio::inherit())
            .output()
            .expect("deploy/tools/build.sh runs");
        assert!(output.status.success(), "building Helm failed");
        let stdout = String::from_utf8(output.stdout).expect("a path");
        PathBuf::from(stdout.lines().last().expect("a path").trim())
    })
}

/// Runs Helm with a home of its own, so that nothing of the user's Helm setup is used or
/// changed.
fn helm<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    let home = HOME.get_or_init(|| {
        let home = std::env::temp_dir().join(format!("treffpunkt-helm-{}", std::process::id()));
        std::fs::create_dir_all(&home).expect("a Helm home");
        home
    });
    Command::new(helm_binary())
        .args(args)
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG")
        .output()
        .expect("helm runs")
}

/// Runs Helm and returns its output; fails the test with Helm's own message otherwise.
fn helm_ok<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let output = helm(args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "helm failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The objects of a multi-document YAML stream (empty documents skipped).
fn documents(yaml: &str) -> Vec<DynamicObject> {
    serde_saphyr::from_multiple::<serde_json::Value>(yaml)
        .expect("Helm renders valid YAML")
        .into_iter()
        .filter(|doc| !doc.is_null())
        .map(|doc| serde_json::from_value(doc).expect("every document is a Kubernetes object"))
        .collect()
}

fn kind(object: &DynamicObject) -> &str {
    object.types.as_ref().map_or("", |t| t.kind.as_str())
}

fn render(set: &str, namespace: &str) -> Vec<DynamicObject> {
    let chart = chart();
    let values = values(set);
    let args = [
        "template".as_ref(),
        "treffpunkt".as_ref(),
        chart.as_os_str(),
        "--namespace".as_ref(),
        namespace.as_ref(),
        "-f".as_ref(),
        values.as_os_str(),
    ];
    documents(&helm_ok(args))
}

#[test]
fn the_chart_lints_cleanly_with_the_default_and_the_partner_values() {
    for set in VALUE_SETS {
        let chart = chart();
        let values = values(set);
        let args = [
            "lint".as_ref(),
            "--strict".as_ref(),
            chart.as_os_str(),
            "-f".as_ref(),
            values.as_os_str(),
        ];
        let out = helm_ok(args);
        assert!(
            out.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{set}: {out}"
        );
    }
}

#[test]
fn wrong_values_are_refused_with_a_message_that_names_them() {
    // (value, what the message must say)
    let cases: [(&str, &[&str]); 7] = [
        ("operator.replicas=0", &["/operator/replicas", "minimum"]),
        (
            "mediaPool.network.mode=Host",
            &["/mediaPool/network/mode", "'HostPort', 'HostNetwork'"],
        ),
        (
            "mediaPool.network.udpPort=443",
            &["/mediaPool/network/udpPort", "minimum"],
        ),
        (
            "publicTenant.name=Rathaus",
            &["/publicTenant/name", "'Rathaus' does not match"],
        ),
        (
            "operator.replica=3",
            &["/operator", "additional properties 'replica' not allowed"],
        ),
        ("ingress.enabled=true", &["/ingress/host", "minLength"]),
        (
            "mediaPool.replicas.min=5,mediaPool.replicas.max=2",
            &["mediaPool.replicas.min (5) cannot exceed mediaPool.replicas.max (2)"],
        ),
    ];
    for (value, message) in cases {
        let chart = chart();
        // Helm's lint reports a template's own `fail` only as information; the schema it
        // enforces.
        let commands: &[&str] = if message[0].starts_with('/') {
            &["template", "lint"]
        } else {
            &["template"]
        };
        for &command in commands {
            let output = if command == "template" {
                helm([
                    "template".as_ref(),
                    "treffpunkt".as_ref(),
                    chart.as_os_str(),
                    "--set".as_ref(),
                    value.as_ref(),
                ])
            } else {
                helm([
                    "lint".as_ref(),
                    chart.as_os_str(),
                    "--set".as_ref(),
                    value.as_ref(),
                ])
            };
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            assert!(
                !output.status.success(),
                "{command} --set {value} is refused"
            );
            for words in message {
                assert!(said.contains(words), "{command} --set {value}: {said}");
            }
        }
    }
}

#[test]
fn the_rendered_chart_runs_unprivileged_and_read_only() {
    for set in VALUE_SETS {
        let objects = render(set, "treffpunkt");
        let deployment = objects
            .iter()
            .find(|o| kind(o) == "Deployment")
            .expect("a Deployment");
        let deployment: Deployment =
            serde_json::from_value(serde_json::to_value(deployment).unwrap()).unwrap();
        let pod = deployment.spec.unwrap().template.spec.unwrap();
        let pod_security = pod.security_context.expect("a pod securityContext");
        assert_eq!(pod_security.run_as_non_root, Some(true), "{set}");
        for container in &pod.containers {
            let security = container
                .security_context
                .clone()
                .expect("a securityContext");
            assert_eq!(security.run_as_non_root, Some(true), "{set}");
            assert_eq!(security.read_only_root_filesystem, Some(true), "{set}");
            assert_eq!(security.allow_privilege_escalation, Some(false), "{set}");
            let capabilities = security.capabilities.expect("capabilities");
            assert_eq!(capabilities.drop, Some(vec!["ALL".to_owned()]), "{set}");
            assert_eq!(capabilities.add, None, "{set}: no capability is added");
            assert!(container.liveness_probe.is_some() && container.readiness_probe.is_some());
            let resources = container.resources.clone().expect("resources");
            assert!(
                resources.requests.is_some() && resources.limits.is_some(),
                "{set}"
            );
        }
        // The media nodes bind unprivileged ports, so they need no capability either.
        if let Some(pool) = objects.iter().find(|o| kind(o) == "MediaPool") {
            for port in ["udpPort", "tcpPort"] {
                let number = pool.data["spec"]["network"][port].as_i64().unwrap();
                assert!(number >= 1024, "{set}: {port} {number}");
            }
        }
    }
}

/// Applies `object` with a server-side dry-run: the API server validates it completely
/// (schema, CEL rules, defaults, admission) and stores nothing.
async fn dry_run(client: &Client, object: &DynamicObject) -> Result<(), kube::Error> {
    let types = object.types.as_ref().expect("apiVersion and kind");
    let gvk = GroupVersionKind::try_from(types).expect("a valid apiVersion");
    let (resource, capabilities) = discovery::pinned_kind(client, &gvk).await?;
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Namespaced => {
            let namespace = object.namespace().unwrap_or_else(|| {
                panic!("{} {} names its namespace", gvk.kind, object.name_any())
            });
            Api::namespaced_with(client.clone(), &namespace, &resource)
        }
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    api.patch(
        &object.name_any(),
        &PatchParams::apply("treffpunkt-chart-tests")
            .dry_run()
            .force(),
        &Patch::Apply(object),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_accepts_every_object_the_chart_renders() {
    let client = admin().await;
    let expected = |set: &str| -> BTreeSet<&str> {
        let mut kinds = BTreeSet::from([
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment",
            "Service",
        ]);
        if set != "minimal" {
            kinds.extend(["PodDisruptionBudget", "MediaPool", "Tenant"]);
        }
        if set == "partner" {
            kinds.extend(["Ingress", "NetworkPolicy"]);
        }
        kinds
    };
    for set in VALUE_SETS {
        let namespace = unique(set);
        support::ensure_namespace(&client, &namespace).await;
        let objects = render(set, &namespace);
        let kinds: BTreeSet<&str> = objects.iter().map(kind).collect();
        assert_eq!(kinds, expected(set), "{set}: the kinds rendered");
        for object in &objects {
            if let Err(error) = dry_run(&client, object).await {
                panic!(
                    "{set}: the API server refuses {} {}: {error}",
                    kind(object),
                    object.name_any()
                );
            }
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("an address")
        .port()
}

/// Installs the chart as `release` into `namespace` (made if missing); returns what Helm said.
fn install(release: &str, namespace: &str, extra: &[&str]) -> String {
    let chart = chart();
    let kubeconfig = &testenv().kubeconfig;
    let mut args: Vec<&std::ffi::OsStr> = vec![
        "install".as_ref(),
        release.as_ref(),
        chart.as_os_str(),
        "--namespace".as_ref(),
        namespace.as_ref(),
        "--create-namespace".as_ref(),
        "--kubeconfig".as_ref(),
        kubeconfig.as_os_str(),
    ];
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    let out = helm_ok(args);
    assert!(out.contains("STATUS: deployed"), "{out}");
    out
}

/// A control-plane replica run from the chart's Deployment as a local process, under the
/// chart's ServiceAccount.
struct ChartOperator {
    process: Child,
    admin: std::net::SocketAddr,
    log: PathBuf,
}

impl ChartOperator {
    async fn start(client: &Client, namespace: &str, deployment: &str) -> Self {
        let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
            .get(deployment)
            .await
            .expect("the chart's Deployment is installed");
        let pod = deployment.spec.unwrap().template.spec.unwrap();
        let account = pod
            .service_account_name
            .expect("the pod names its ServiceAccount");
        let container = &pod.containers[0];
        let identity = format!("{}-replica-0", deployment.metadata.name.unwrap());

        // The ServiceAccount's identity, as the API server sees a pod's token.
        let mut kubeconfig = Kubeconfig::read_from(&testenv().kubeconfig).expect("a kubeconfig");
        for user in &mut kubeconfig.auth_infos {
            let auth = user.auth_info.as_mut().expect("credentials");
            auth.impersonate = Some(format!("system:serviceaccount:{namespace}:{account}"));
            auth.impersonate_groups = Some(vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".to_owned(),
            ]);
        }
        let dir = std::env::temp_dir().join(unique("treffpunkt-chart"));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig_path = dir.join("kubeconfig");
        // JSON is YAML.
        std::fs::write(&kubeconfig_path, serde_json::to_vec(&kubeconfig).unwrap()).unwrap();

        let admin_port = free_port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_treffpunkt"));
        command.args(container.args.clone().unwrap_or_default());
        command.arg("--kubeconfig").arg(&kubeconfig_path);
        for var in container.env.clone().unwrap_or_default() {
            let value = match (var.value, var.value_from.and_then(|from| from.field_ref)) {
                (Some(value), _) => value,
                (None, Some(field)) if field.field_path == "metadata.namespace" => {
                    namespace.to_owned()
                }
                (None, Some(field)) if field.field_path == "metadata.name" => identity.clone(),
                (_, field) => panic!("the test cannot give {} ({field:?})", var.name),
            };
            command.env(&var.name, value);
        }
        // The ports of a pod, on loopback.
        command
            .env(
                "TREFFPUNKT_HTTP_LISTEN",
                format!("127.0.0.1:{}", free_port()),
            )
            .env(
                "TREFFPUNKT_GRPC_LISTEN",
                format!("127.0.0.1:{}", free_port()),
            )
            .env("TREFFPUNKT_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
            .env("NO_COLOR", "1")
            .env_remove("KUBECONFIG");
        let log = dir.join("operator.log");
        let file = std::fs::File::create(&log).unwrap();
        let process = command
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("the operator binary starts");
        Self {
            process,
            admin: std::net::SocketAddr::from(([127, 0, 0, 1], admin_port)),
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Failed reconciliations of `controller` for `reason` (0 while it does not answer yet).
    async fn failures(&self, controller: &str, reason: &str) -> u64 {
        match tokio::net::TcpStream::connect(self.admin).await {
            Ok(_) => counter(
                &metrics(self.admin).await,
                &format!(
                    "treffpunkt_reconciliation_failures_total{{controller=\"{controller}\",reason=\"{reason}\"}}"
                ),
            ),
            Err(_) => 0,
        }
    }
}

impl Drop for ChartOperator {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

async fn tenant_ready(client: &Client, name: &str) -> bool {
    eventually(WAIT, || async {
        let tenant = Api::<Tenant>::all(client.clone()).get(name).await.ok()?;
        crd::condition_is_true(&tenant.status?.conditions, "Ready").then_some(())
    })
    .await
    .is_some()
}

async fn pool_ready(client: &Client, namespace: &str, name: &str, limit: Duration) -> bool {
    eventually(limit, || async {
        let pool = Api::<MediaPool>::namespaced(client.clone(), namespace)
            .get(name)
            .await
            .ok()?;
        crd::condition_is_true(&pool.status?.conditions, "Ready").then_some(())
    })
    .await
    .is_some()
}

/// No kubelet runs here: plays its part and reports the pod of a pool ready.
async fn mark_media_node_ready(client: &Client, namespace: &str, pool: &str) {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    let selector = format!("treffpunkt.io/pool={pool}");
    let pod = eventually(WAIT, || async {
        pods.list(&ListParams::default().labels(&selector))
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await
    .expect("the pool's Deployment made a pod");
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let ready = json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": now},
        {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
    ]}});
    pods.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&ready),
    )
    .await
    .expect("the pod's status is patched");
}

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples")
}

/// The objects of an example manifest file in `deploy/examples/`.
fn example(file: &str) -> Vec<DynamicObject> {
    let path = examples().join(file);
    documents(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}")))
}

/// Applies `object` as the admin would with `kubectl apply --server-side`.
async fn apply(client: &Client, object: &DynamicObject) {
    let types = object.types.as_ref().expect("apiVersion and kind");
    let gvk = GroupVersionKind::try_from(types).expect("a valid apiVersion");
    let (resource, capabilities) = discovery::pinned_kind(client, &gvk).await.unwrap();
    let api: Api<DynamicObject> = match capabilities.scope {
        Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            &object.namespace().expect("a namespace"),
            &resource,
        ),
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    api.patch(
        &object.name_any(),
        &PatchParams::apply("kubectl"),
        &Patch::Apply(object),
    )
    .await
    .unwrap_or_else(|e| panic!("{} {} applies: {e}", gvk.kind, object.name_any()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_are_accepted_by_the_api_server_and_by_standalone_mode() {
    let client = admin().await;
    support::ensure_namespace(&client, "treffpunkt").await;
    support::ensure_namespace(&client, "tenant-sportverein").await;
    let mut all = String::new();
    for file in [
        "partner-tenant.yaml",
        "persistent-room.yaml",
        "partner-mediapool.yaml",
    ] {
        for object in example(file) {
            if let Err(error) = dry_run(&client, &object).await {
                panic!(
                    "{file}: the API server refuses {} {}: {error}",
                    kind(&object),
                    object.name_any()
                );
            }
        }
        all.push_str(&std::fs::read_to_string(examples().join(file)).unwrap());
        all.push_str("\n---\n");
    }
    // One YAML format everywhere: the same files seed standalone mode.
    let seed = treffpunkt_operator::seed::parse(&all).expect("standalone mode reads the examples");
    assert_eq!(seed.tenants.len(), 1);
    assert_eq!(seed.rooms.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_charts_rights_the_operator_makes_everything_ready() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let client = admin().await;
    // As the operations guide installs it.
    let namespace = "treffpunkt";
    let said = install("treffpunkt", namespace, &[]);
    for words in [
        "kubectl -n treffpunkt port-forward service/treffpunkt 8080:80",
        "UDP 10000",
        "TCP 10443",
    ] {
        assert!(said.contains(words), "the notes say {words:?}:\n{said}");
    }
    let operator = ChartOperator::start(&client, namespace, "treffpunkt").await;

    assert!(
        tenant_ready(&client, "public").await,
        "the public Tenant becomes Ready; the operator said:\n{}",
        operator.log()
    );
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    assert!(
        secrets
            .get_opt("treffpunkt-grant-key")
            .await
            .unwrap()
            .is_some(),
        "the operator made the grant key the chart names"
    );
    let lease = Api::<Lease>::namespaced(client.clone(), namespace)
        .get("treffpunkt-operator")
        .await
        .expect("the operator holds the Lease the chart names");
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("treffpunkt-replica-0")
    );

    // The default pool: a Deployment of media nodes, Ready once its node is.
    mark_media_node_ready(&client, namespace, "default").await;
    assert!(
        pool_ready(&client, namespace, "default", WAIT).await,
        "the default MediaPool becomes Ready; the operator said:\n{}",
        operator.log()
    );
    let deployment = Api::<Deployment>::namespaced(client.clone(), namespace)
        .get("treffpunkt-media-default")
        .await
        .expect("the pool's Deployment");
    let env = deployment.spec.unwrap().template.spec.unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    let control_plane = env
        .iter()
        .find(|e| e.name == "TREFFPUNKT_CONTROL_PLANE")
        .and_then(|e| e.value.clone());
    assert_eq!(
        control_plane.as_deref(),
        Some("http://treffpunkt-attach.treffpunkt.svc:7001"),
        "media nodes dial the chart's headless attach Service"
    );

    // A partner: its tenant, a persistent room with a password from a Secret, and its own
    // media pool, exactly as the examples have them.
    for object in example("partner-tenant.yaml") {
        apply(&client, &object).await;
    }
    assert!(
        tenant_ready(&client, "sportverein").await,
        "the partner's Tenant becomes Ready; the operator said:\n{}",
        operator.log()
    );
    for object in example("persistent-room.yaml") {
        apply(&client, &object).await;
    }
    let rooms = Api::<Room>::namespaced(client.clone(), "tenant-sportverein");
    let accepted = eventually(WAIT, || async {
        let room = rooms.get("vorstand").await.ok()?;
        crd::condition_is_true(&room.status?.conditions, "Accepted").then_some(())
    })
    .await;
    assert!(
        accepted.is_some(),
        "the room and its password are accepted; the operator said:\n{}",
        operator.log()
    );
    for object in example("partner-mediapool.yaml") {
        apply(&client, &object).await;
    }
    mark_media_node_ready(&client, namespace, "sportverein").await;
    assert!(
        pool_ready(&client, namespace, "sportverein", WAIT).await,
        "the partner's MediaPool becomes Ready; the operator said:\n{}",
        operator.log()
    );

    // The partner's admins manage rooms in their namespace, and nowhere else.
    let club_admin =
        support::impersonating("jemand", &["sportverein-admins", "system:authenticated"]).await;
    let spec: RoomSpec = serde_json::from_value(json!({"lifetime": "Persistent"})).unwrap();
    Api::<Room>::namespaced(club_admin.clone(), "tenant-sportverein")
        .create(&PostParams::default(), &Room::new("training", spec.clone()))
        .await
        .expect("the club's admins may make rooms in their tenant's namespace");
    let elsewhere = Api::<Room>::namespaced(club_admin, "tenant-public")
        .create(&PostParams::default(), &Room::new("training", spec))
        .await;
    assert!(
        matches!(&elsewhere, Err(kube::Error::Api(s)) if s.code == 403),
        "but not in another tenant's: {elsewhere:?}"
    );

    // Its events reached the API server too.
    let events = Api::<Event>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        events
            .items
            .iter()
            .any(
                |e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("public")
                    && e.reason.as_deref() == Some("Ready")
            ),
        "the operator recorded the public Tenant's Ready event"
    );
    for controller in ["tenant", "room", "mediapool"] {
        assert_eq!(
            operator.failures(controller, "forbidden").await,
            0,
            "{controller}: nothing was forbidden; the operator said:\n{}",
            operator.log()
        );
    }

    // An upgrade with a changed value reaches the objects the operator works on, and they stay
    // Ready: Helm and the operator do not fight over them.
    let chart = chart();
    let kubeconfig = &testenv().kubeconfig;
    let out = helm_ok([
        "upgrade".as_ref(),
        "treffpunkt".as_ref(),
        chart.as_os_str(),
        "--namespace".as_ref(),
        namespace.as_ref(),
        "--kubeconfig".as_ref(),
        kubeconfig.as_os_str(),
        "--set".as_ref(),
        "publicTenant.displayName=Treffpunkt Musterstadt,mediaPool.maxParticipants=300".as_ref(),
    ]);
    assert!(out.contains("STATUS: deployed"), "{out}");
    let renamed = eventually(WAIT, || async {
        let tenant = Api::<Tenant>::all(client.clone())
            .get("public")
            .await
            .ok()?;
        let status = tenant.status?;
        (tenant.spec.display_name == "Treffpunkt Musterstadt"
            && status.observed_generation == tenant.metadata.generation
            && crd::condition_is_true(&status.conditions, "Ready"))
        .then_some(())
    })
    .await;
    assert!(
        renamed.is_some(),
        "the upgraded Tenant is reconciled; the operator said:\n{}",
        operator.log()
    );
    let pool = Api::<MediaPool>::namespaced(client.clone(), namespace)
        .get("default")
        .await
        .unwrap();
    assert_eq!(pool.spec.template.max_participants, 300);
}

/// Removes the rules that mention `resource` from `rules`; returns how many went.
fn remove_rules(rules: &mut Option<Vec<PolicyRule>>, resource: &str) -> usize {
    let rules = rules.as_mut().expect("rules");
    let before = rules.len();
    rules.retain(|rule| {
        !rule
            .resources
            .as_ref()
            .is_some_and(|r| r.iter().any(|r| r == resource))
    });
    before - rules.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_one_rule_of_the_chart_the_operator_fails_and_says_why() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let client = admin().await;

    // The Role without its Deployments rule: the pool cannot get its media nodes.
    let namespace = unique("no-deployments");
    let release = "treffpunkt-no-deployments";
    install(
        release,
        &namespace,
        &["--set", "publicTenant.enabled=false"],
    );
    let roles = Api::<Role>::namespaced(client.clone(), &namespace);
    let name = format!("{release}-operator");
    let mut role = roles.get(&name).await.expect("the chart's Role");
    assert_eq!(remove_rules(&mut role.rules, "deployments"), 1);
    roles
        .replace(&name, &PostParams::default(), &role)
        .await
        .unwrap();
    let operator = ChartOperator::start(&client, &namespace, release).await;
    let failed = eventually(WAIT, || async {
        (operator.failures("mediapool", "forbidden").await > 0).then_some(())
    })
    .await;
    let log = operator.log();
    assert!(
        failed.is_some(),
        "the pool's reconciliation fails as forbidden:\n{log}"
    );
    let user = format!("system:serviceaccount:{namespace}:{release}");
    let why = log.lines().find(|line| {
        line.contains("reconciliation failed")
            && line.contains("forbidden")
            && line.contains(&user)
            && line.contains("deployments")
    });
    eprintln!("without the Deployments rule the operator says: {why:?}");
    assert!(why.is_some(), "the log says who may not do what:\n{log}");
    assert!(
        !pool_ready(&client, &namespace, "default", Duration::from_secs(2)).await,
        "the pool is not Ready"
    );
    drop(operator);

    // The ClusterRole without its Namespaces rule: a tenant cannot get its namespace.
    let namespace = unique("no-namespaces");
    let release = "treffpunkt-no-namespaces";
    install(
        release,
        &namespace,
        &[
            "--set",
            "publicTenant.enabled=false",
            "--set",
            "mediaPool.enabled=false",
        ],
    );
    let cluster_roles = Api::<ClusterRole>::all(client.clone());
    let name = format!("{release}-operator");
    let mut cluster_role = cluster_roles
        .get(&name)
        .await
        .expect("the chart's ClusterRole");
    assert_eq!(remove_rules(&mut cluster_role.rules, "namespaces"), 1);
    cluster_roles
        .replace(&name, &PostParams::default(), &cluster_role)
        .await
        .unwrap();
    let tenant = unique("verein");
    let spec: TenantSpec = serde_json::from_value(json!({"displayName": "Verein"})).unwrap();
    Api::<Tenant>::all(client.clone())
        .create(&PostParams::default(), &Tenant::new(&tenant, spec))
        .await
        .unwrap();
    let operator = ChartOperator::start(&client, &namespace, release).await;
    let failed = eventually(WAIT, || async {
        (operator.failures("tenant", "forbidden").await > 0).then_some(())
    })
    .await;
    let log = operator.log();
    assert!(
        failed.is_some(),
        "the tenant's reconciliation fails as forbidden:\n{log}"
    );
    let user = format!("system:serviceaccount:{namespace}:{release}");
    let why = log.lines().find(|line| {
        line.contains("reconciliation failed")
            && line.contains("forbidden")
            && line.contains(&user)
            && line.contains("namespaces")
    });
    eprintln!("without the Namespaces rule the operator says: {why:?}");
    assert!(why.is_some(), "the log says who may not do what:\n{log}");
    let status = Api::<Tenant>::all(client.clone())
        .get(&tenant)
        .await
        .unwrap()
        .status;
    assert!(
        !status.is_some_and(|s| crd::condition_is_true(&s.conditions, "Ready")),
        "the tenant is not Ready"
    );
}
