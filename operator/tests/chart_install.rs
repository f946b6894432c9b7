//! The Helm chart (`charts/treffpunkt`) installed for real, with a real Helm and a real API
//! server. The `treffpunkt` binary runs as a local process (no kubelet runs pods here) with the
//! arguments and environment of the chart's Deployment, under the identity of the chart's
//! ServiceAccount (impersonation): it must make the public Tenant and the default MediaPool
//! Ready with the chart's RBAC, and fail, saying why, when one rule of it is missing.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams};
use kube::config::Kubeconfig;
use kube::discovery::{self, Scope};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use support::helm::{chart, example, helm_ok};
use support::resources::mark_media_node_ready;
use support::{admin, admin_request, counter, eventually, free_port, metrics, testenv, unique};
use treffpunkt_operator::crd::{self, MediaPool, Room, RoomSpec, Tenant, TenantSpec};

/// How long the operator gets to make something Ready (or to fail).
const WAIT: Duration = Duration::from_secs(60);

/// The tests that run an operator run one at a time: two operators would both reconcile the
/// cluster-wide Tenants, and the machine has few cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
                (None, Some(field)) if field.field_path == "spec.serviceAccountName" => {
                    account.clone()
                }
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

/// Whether tenant `name` becomes Ready in time.
async fn tenant_ready(client: &Client, name: &str) -> bool {
    eventually(WAIT, || async {
        let tenant = Api::<Tenant>::all(client.clone()).get(name).await.ok()?;
        crd::condition_is_true(&tenant.status?.conditions, "Ready").then_some(())
    })
    .await
    .is_some()
}

/// Whether MediaPool `name` becomes Ready within `limit`.
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

/// The public Tenant is Ready, and the operator made the grant key, holds the Lease the chart
/// names and renews its replica's Lease.
async fn assert_the_platform_is_ready(client: &Client, namespace: &str, operator: &ChartOperator) {
    assert!(
        tenant_ready(client, "public").await,
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
    // The replica's own Lease, by which media nodes behind one shared address learn of it.
    let own = eventually(WAIT, || async {
        Api::<Lease>::namespaced(client.clone(), namespace)
            .get_opt("treffpunkt-operator-treffpunkt-replica-0")
            .await
            .ok()?
    })
    .await
    .expect("the replica renews a Lease of its own");
    assert_eq!(
        own.spec.and_then(|spec| spec.holder_identity).as_deref(),
        Some("treffpunkt-replica-0"),
        "the operator said:\n{}",
        operator.log()
    );
}

/// The admin commands answer only with the admin token of the keys' Secret; probes and metrics
/// answer anyone who reaches the port.
async fn assert_the_admin_commands_need_the_token(
    client: &Client,
    namespace: &str,
    operator: &ChartOperator,
) {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get("treffpunkt-grant-key")
        .await
        .unwrap();
    let token = secret.data.unwrap_or_default()[treffpunkt_operator::keys::ADMIN_TOKEN].clone();
    let token = String::from_utf8(token.0).unwrap();
    let status = |response: String| response.lines().next().unwrap_or_default().to_owned();
    for request in ["GET /nodes", "POST /nodes/nobody/drain"] {
        for wrong in [None, Some("0123456789abcdef0123456789abcdef"), Some("")] {
            let response = admin_request(operator.admin, request, wrong).await;
            assert!(
                status(response.clone()).contains("401"),
                "{request} with {wrong:?}: {response}"
            );
        }
    }
    let nodes = admin_request(operator.admin, "GET /nodes", Some(&token)).await;
    assert!(status(nodes.clone()).contains("200"), "{nodes}");
    let drain = admin_request(operator.admin, "POST /nodes/nobody/drain", Some(&token)).await;
    assert!(
        status(drain.clone()).contains("404"),
        "no such node: {drain}"
    );
    let healthz = admin_request(operator.admin, "GET /healthz", None).await;
    assert!(status(healthz.clone()).contains("200"), "{healthz}");
    // Ready: it reaches the API server (with the chart's rights on its replica Lease).
    let readyz = admin_request(operator.admin, "GET /readyz", None).await;
    assert!(status(readyz.clone()).contains("200"), "{readyz}");
}

/// The operator's account grants nothing outside the tenant namespaces it manages: the chart's
/// admission policies refuse a RoleBinding in kube-system and a change to that namespace,
/// though its RBAC alone would let it bind the tenant-secrets ClusterRole anywhere.
async fn assert_the_operator_grants_nothing_outside_its_namespaces(namespace: &str) {
    let operator = support::impersonating(
        &format!("system:serviceaccount:{namespace}:treffpunkt"),
        &["system:serviceaccounts", "system:authenticated"],
    )
    .await;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "treffpunkt-operator-secrets", "namespace": "kube-system"},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "treffpunkt-tenant-secrets",
        },
        "subjects": [{"kind": "ServiceAccount", "name": "treffpunkt", "namespace": namespace}],
    }))
    .unwrap();
    let refused = Api::<RoleBinding>::namespaced(operator.clone(), "kube-system")
        .create(&PostParams::default(), &binding)
        .await
        .expect_err("a binding in kube-system is refused");
    assert!(
        refused
            .to_string()
            .contains("only in the tenant namespaces it manages"),
        "{refused}"
    );
    let label =
        json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": "treffpunkt-operator"}}});
    let refused = Api::<Namespace>::all(operator)
        .patch(
            "kube-system",
            &PatchParams::default(),
            &Patch::Merge(&label),
        )
        .await
        .expect_err("labelling kube-system is refused");
    assert!(
        refused
            .to_string()
            .contains("only namespaces named tenant-"),
        "{refused}"
    );
}

/// The leader rotates the keys with the chart's rights: told that the keys are old, it takes
/// the first step of a rotation at once.
async fn assert_the_leader_rotates_the_keys(client: &Client, namespace: &str) {
    use treffpunkt_operator::keys;
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    let old = json!({"metadata": {"annotations": {keys::PHASE_SINCE: "0"}}});
    secrets
        .patch(
            "treffpunkt-grant-key",
            &PatchParams::default(),
            &Patch::Merge(&old),
        )
        .await
        .expect("the keys' Secret takes the annotation");
    let announced = eventually(Duration::from_secs(30), || async {
        let secret = secrets.get("treffpunkt-grant-key").await.ok()?;
        let phase = secret.metadata.annotations?.get(keys::PHASE)?.clone();
        let key = secret.data?.get(keys::GRANT_KEY)?.0.clone();
        (phase == "announced" && key.contains(&b',')).then_some(())
    })
    .await;
    assert!(announced.is_some(), "a new key was announced");
}

/// The default pool is a Deployment of media nodes, Ready once its node is, whose nodes dial
/// the chart's attach Service.
async fn assert_the_default_pool_is_ready(
    client: &Client,
    namespace: &str,
    operator: &ChartOperator,
) {
    mark_media_node_ready(client, namespace, "default", WAIT).await;
    assert!(
        pool_ready(client, namespace, "default", WAIT).await,
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
    let var = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    };
    assert_eq!(
        var("TREFFPUNKT_CONTROL_PLANE").as_deref(),
        Some("http://treffpunkt-attach.treffpunkt.svc:7001"),
        "media nodes dial the chart's headless attach Service"
    );
    assert_eq!(
        var("RUST_LOG").as_deref(),
        Some("info"),
        "media nodes log as the chart's operator.logLevel says"
    );
}

/// A partner, exactly as the examples have it: its tenant, a persistent room with a password
/// from a Secret, and its own media pool, each Ready or accepted.
async fn add_the_partner_from_the_examples(
    client: &Client,
    namespace: &str,
    operator: &ChartOperator,
) {
    for object in example("partner-tenant.yaml") {
        apply(client, &object).await;
    }
    assert!(
        tenant_ready(client, "sportverein").await,
        "the partner's Tenant becomes Ready; the operator said:\n{}",
        operator.log()
    );
    for object in example("persistent-room.yaml") {
        apply(client, &object).await;
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
        apply(client, &object).await;
    }
    mark_media_node_ready(client, namespace, "sportverein", WAIT).await;
    assert!(
        pool_ready(client, namespace, "sportverein", WAIT).await,
        "the partner's MediaPool becomes Ready; the operator said:\n{}",
        operator.log()
    );
}

/// Whether `result` is the API server's refusal for lack of a right.
fn forbidden<T>(result: &Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(status)) if status.code == 403)
}

/// The operator reaches Secrets only where it works, the platform's grant key and the Secrets
/// of the tenant namespaces it made, and never those of the cluster itself or Helm's record of
/// the release; its ClusterRole holds no right on Secrets at all.
async fn assert_the_operator_reads_secrets_only_where_it_works(client: &Client, namespace: &str) {
    let cluster_role = Api::<ClusterRole>::all(client.clone())
        .get("treffpunkt-operator")
        .await
        .unwrap();
    let on_secrets = cluster_role
        .rules
        .unwrap_or_default()
        .into_iter()
        .find(|rule| {
            rule.resources
                .iter()
                .flatten()
                .any(|r| r == "secrets" || r == "*")
        });
    assert_eq!(on_secrets, None, "no cluster-wide right on Secrets");

    // The cluster's own credentials.
    let system = Api::<Secret>::namespaced(client.clone(), "kube-system");
    let credentials = Secret {
        metadata: ObjectMeta {
            name: Some("cloud-credentials".to_owned()),
            ..ObjectMeta::default()
        },
        string_data: Some([("token".to_owned(), "geheim".to_owned())].into()),
        ..Secret::default()
    };
    system
        .patch(
            "cloud-credentials",
            &PatchParams::apply("treffpunkt-tests"),
            &Patch::Apply(&credentials),
        )
        .await
        .unwrap();
    let helm_record = Api::<Secret>::namespaced(client.clone(), namespace)
        .list_metadata(&ListParams::default().labels("owner=helm,name=treffpunkt"))
        .await
        .unwrap()
        .items
        .first()
        .expect("Helm keeps its record of the release in a Secret")
        .name_any();

    let account = format!("system:serviceaccount:{namespace}:treffpunkt");
    let groups = format!("system:serviceaccounts:{namespace}");
    let operator = support::impersonating(
        &account,
        &["system:serviceaccounts", &groups, "system:authenticated"],
    )
    .await;
    let secrets = |namespace: &str| Api::<Secret>::namespaced(operator.clone(), namespace);
    let read = secrets("kube-system").get("cloud-credentials").await;
    assert!(
        forbidden(&read),
        "it cannot read kube-system's Secrets: {read:?}"
    );
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let made = secrets("kube-system").create(&dry_run, &credentials).await;
    assert!(forbidden(&made), "nor make one there: {made:?}");
    let record = secrets(namespace).get(&helm_record).await;
    assert!(forbidden(&record), "nor read Helm's record: {record:?}");
    let listed = secrets("tenant-sportverein")
        .list_metadata(&ListParams::default())
        .await;
    assert!(
        forbidden(&listed),
        "nor list a tenant's Secrets: {listed:?}"
    );

    secrets("tenant-sportverein")
        .get("vorstand-passwort")
        .await
        .expect("it reads a room's password in a tenant namespace it made");
    secrets(namespace)
        .get("treffpunkt-grant-key")
        .await
        .expect("it reads its grant key");
}

/// The partner's admins manage rooms in their namespace, and nowhere else.
async fn assert_the_partners_admins_keep_to_their_namespace() {
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
}

/// The operator's events reached the API server, and none of its reconciliations was
/// forbidden.
async fn assert_the_operator_had_every_right_it_needed(client: &Client, operator: &ChartOperator) {
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
}

/// An upgrade with a changed value reaches the objects the operator works on, and they stay
/// Ready: Helm and the operator do not fight over them.
async fn assert_an_upgrade_reaches_the_operators_objects(
    client: &Client,
    namespace: &str,
    operator: &ChartOperator,
) {
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
    assert_eq!(pool.spec.template.unwrap().max_participants, 300);
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

    assert_the_platform_is_ready(&client, namespace, &operator).await;
    assert_the_admin_commands_need_the_token(&client, namespace, &operator).await;
    assert_the_leader_rotates_the_keys(&client, namespace).await;
    assert_the_default_pool_is_ready(&client, namespace, &operator).await;
    add_the_partner_from_the_examples(&client, namespace, &operator).await;
    assert_the_partners_admins_keep_to_their_namespace().await;
    assert_the_operator_reads_secrets_only_where_it_works(&client, namespace).await;
    assert_the_operator_grants_nothing_outside_its_namespaces(namespace).await;
    assert_the_operator_had_every_right_it_needed(&client, &operator).await;
    assert_an_upgrade_reaches_the_operators_objects(&client, namespace, &operator).await;
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

/// Waits until the operator's reconciliations of `controller` fail as forbidden, and returns the
/// log line that says who may not do what (naming `what`), or fails the test.
async fn fails_as_forbidden(
    operator: &ChartOperator,
    controller: &str,
    user: &str,
    what: &str,
) -> String {
    let failed = eventually(WAIT, || async {
        (operator.failures(controller, "forbidden").await > 0).then_some(())
    })
    .await;
    let log = operator.log();
    assert!(
        failed.is_some(),
        "the {controller}'s reconciliation fails as forbidden:\n{log}"
    );
    let why = log.lines().find(|line| {
        line.contains("reconciliation failed")
            && line.contains("forbidden")
            && line.contains(user)
            && line.contains(what)
    });
    assert!(why.is_some(), "the log says who may not do what:\n{log}");
    why.unwrap_or_default().to_owned()
}

/// The Role without its Deployments rule: the pool cannot get its media nodes.
async fn without_the_deployments_rule(client: &Client) {
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
    let operator = ChartOperator::start(client, &namespace, release).await;
    let user = format!("system:serviceaccount:{namespace}:{release}");
    let why = fails_as_forbidden(&operator, "mediapool", &user, "deployments").await;
    eprintln!("without the Deployments rule the operator says: {why}");
    assert!(
        !pool_ready(client, &namespace, "default", Duration::from_secs(2)).await,
        "the pool is not Ready"
    );
}

/// Installs `release` without a public Tenant or a pool, takes the rules that mention
/// `resource` out of its ClusterRole, makes a Tenant and starts the operator; returns the
/// operator, its ServiceAccount's user name and the Tenant's name.
async fn without_a_cluster_rule(
    client: &Client,
    release: &str,
    resource: &str,
) -> (ChartOperator, String, String) {
    let namespace = unique(release);
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
    assert_eq!(remove_rules(&mut cluster_role.rules, resource), 1);
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
    let operator = ChartOperator::start(client, &namespace, release).await;
    let user = format!("system:serviceaccount:{namespace}:{release}");
    (operator, user, tenant)
}

/// Whether Tenant `name` is Ready now.
async fn is_ready(client: &Client, name: &str) -> bool {
    let status = Api::<Tenant>::all(client.clone())
        .get(name)
        .await
        .unwrap()
        .status;
    status.is_some_and(|s| crd::condition_is_true(&s.conditions, "Ready"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_one_rule_of_the_chart_the_operator_fails_and_says_why() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let client = admin().await;
    without_the_deployments_rule(&client).await;

    // The ClusterRole without its Namespaces rule: a tenant cannot get its namespace.
    let (operator, user, tenant) =
        without_a_cluster_rule(&client, "treffpunkt-no-namespaces", "namespaces").await;
    let why = fails_as_forbidden(&operator, "tenant", &user, "namespaces").await;
    eprintln!("without the Namespaces rule the operator says: {why}");
    assert!(!is_ready(&client, &tenant).await, "the tenant is not Ready");
    drop(operator);

    // The ClusterRole without the right to bind the tenant-secrets ClusterRole: the operator,
    // holding no right on Secrets of its own, cannot give itself those of the tenant's
    // namespace, and the tenant gets no signing key.
    let (operator, user, tenant) =
        without_a_cluster_rule(&client, "treffpunkt-no-bind", "clusterroles").await;
    let why = fails_as_forbidden(&operator, "tenant", &user, "secrets").await;
    eprintln!("without binding its rights on Secrets the operator says: {why}");
    assert!(!is_ready(&client, &tenant).await, "the tenant is not Ready");
    let key = Api::<Secret>::namespaced(client.clone(), &crd::tenant_namespace(&tenant))
        .get_opt("treffpunkt-signing-key")
        .await
        .unwrap();
    assert!(key.is_none(), "the tenant has no signing key");
}
