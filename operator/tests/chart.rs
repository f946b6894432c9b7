//! The Helm chart (`charts/treffpunkt`) with a real Helm and a real API server.
//!
//! Helm is built from its Go module by `deploy/tools/build.sh helm`; the test command builds it
//! first and passes its path in `TREFFPUNKT_HELM`. The tests lint the chart, render it for the
//! value sets in `charts/treffpunkt/ci/` and have the API server accept every object with a
//! server-side dry-run, and check that wrong values are refused with a message that names them.
//! The chart's own coturn is installed and upgraded for real (its secret kept), and its
//! rendered configuration run by Debian's coturn: TURN over TLS with the gateway's credentials,
//! relaying only to the media nodes (`chart/coturn.rs`). Installing the chart for real, and
//! running the operator with its rights, is in `chart_install.rs`.

#[path = "chart/coturn.rs"]
mod coturn;
mod support;

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::{self, Scope};
use kube::{Api, Client, ResourceExt};
use support::helm::{chart, documents, example, examples, helm, helm_ok, kind, values};
use support::{admin, unique};

/// The value sets every test renders: the defaults, a city's full setup, the smallest one, and
/// one with the chart's own TURN server.
const VALUE_SETS: [&str; 4] = ["defaults", "partner", "minimal", "coturn"];

/// The objects the chart renders with value set `set` into `namespace`.
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
    let cases: [(&str, &[&str]); 13] = [
        ("operator.replicas=0", &["/operator/replicas", "minimum"]),
        (
            "operator.autoscaler.scaleInAfterSeconds=-1",
            &["/operator/autoscaler/scaleInAfterSeconds", "minimum"],
        ),
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
            &["/publicTenant/name", "value must be 'public'"],
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
        (
            "turn.urls[0]=https://turn.example.org",
            &["/turn/urls/0", "does not match pattern"],
        ),
        (
            "turn.urls[0]=turns:turn.example.org:443",
            &["turn.secretName: the Secret with the TURN server's shared secret"],
        ),
        (
            "turn.server.enabled=true",
            &[
                "/turn/server/host",
                "/turn/server/tlsSecretName",
                "/turn/server/peerAddresses",
            ],
        ),
        (
            "turn.server.peerAddresses[0]=10.0.0.0/8",
            &["/turn/server/peerAddresses/0", "does not match pattern"],
        ),
        (
            "turn.server.enabled=true,turn.server.host=turn.example.org,\
             turn.server.tlsSecretName=turn-tls,turn.server.peerAddresses[0]=10.0.0.1,\
             turn.urls[0]=turns:turn.example.org:443",
            &[
                "set turn.urls (a TURN server of yours) or turn.server.enabled (the chart's coturn), not both",
            ],
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
fn the_network_policy_opens_the_attach_port_only_to_the_peers_it_names() {
    let objects = render("partner", "treffpunkt");
    let policy = objects
        .iter()
        .find(|o| kind(o) == "NetworkPolicy")
        .expect("the partner setup has a NetworkPolicy");
    let policy: NetworkPolicy =
        serde_json::from_value(serde_json::to_value(policy).unwrap()).unwrap();
    let rules = policy.spec.unwrap().ingress.unwrap_or_default();
    let peers_of = |port: &str| -> Option<Vec<String>> {
        let rule = rules.iter().find(|rule| {
            rule.ports
                .iter()
                .flatten()
                .any(|p| p.port == Some(IntOrString::String(port.into())))
        })?;
        let peers = rule.from.as_ref()?;
        Some(
            peers
                .iter()
                .map(|peer| match (&peer.ip_block, &peer.pod_selector) {
                    (Some(block), _) => block.cidr.clone(),
                    (None, Some(_)) => "pods of the namespace".to_owned(),
                    (None, None) => "another namespace".to_owned(),
                })
                .collect(),
        )
    };
    assert_eq!(peers_of("http"), None, "the gateway is open to all");
    assert_eq!(
        peers_of("grpc"),
        Some(vec![
            "pods of the namespace".to_owned(),
            "10.20.0.0/16".to_owned(),
            "198.51.100.0/28".to_owned()
        ]),
        "the Attach port only from the media nodes' hosts and the partner's site"
    );
    assert_eq!(
        peers_of("admin"),
        Some(vec![
            "pods of the namespace".to_owned(),
            "another namespace".to_owned()
        ]),
        "the admin port from the namespace and monitoring"
    );
}

#[test]
fn the_rendered_chart_runs_unprivileged_and_read_only() {
    for set in VALUE_SETS {
        let objects = render(set, "treffpunkt");
        let deployments: Vec<&DynamicObject> =
            objects.iter().filter(|o| kind(o) == "Deployment").collect();
        assert_eq!(deployments.len(), 1 + usize::from(set == "coturn"), "{set}");
        for deployment in deployments {
            assert_runs_unprivileged(set, deployment);
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

/// Every container of `deployment` runs as a user, read-only, without capabilities, probed and
/// with resources.
fn assert_runs_unprivileged(set: &str, deployment: &DynamicObject) {
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
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ]);
        if set != "minimal" {
            kinds.extend(["PodDisruptionBudget", "MediaPool", "Tenant"]);
        }
        if set == "partner" {
            kinds.extend(["Ingress", "NetworkPolicy"]);
        }
        if set == "coturn" {
            kinds.extend(["Ingress", "Secret"]);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_examples_are_accepted_by_the_api_server_and_by_standalone_mode() {
    let client = admin().await;
    support::ensure_namespace(&client, "treffpunkt").await;
    support::ensure_namespace(&client, "tenant-sportverein").await;
    let mut all = String::new();
    for file in [
        "partner-tenant.yaml",
        "persistent-room.yaml",
        "invite-only-room.yaml",
        "partner-mediapool.yaml",
        "partner-site-pool.yaml",
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
    assert_eq!(seed.rooms.len(), 2);
    assert_eq!(seed.secrets.len(), 1, "the room's password");
}

/// Helm with the test cluster's kubeconfig; returns what it said.
fn helm_on_cluster(args: &[&str]) -> String {
    let chart = chart();
    let kubeconfig = &support::testenv().kubeconfig;
    let mut all: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    all.push(chart.as_os_str());
    all.extend(["--kubeconfig".as_ref(), kubeconfig.as_os_str()]);
    let out = helm_ok(all);
    assert!(out.contains("STATUS: deployed"), "{out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_charts_coturn_takes_the_gateways_credentials_and_relays_only_to_the_media_nodes() {
    let client = admin().await;
    let namespace = unique("coturn");
    let release = namespace.clone();
    let values = values("coturn");
    let values = values.to_str().unwrap();
    // Cluster-wide objects of another release (the public Tenant) stay out of the way.
    let own = "publicTenant.enabled=false,mediaPool.enabled=false";
    helm_on_cluster(&[
        "install",
        &release,
        "--namespace",
        &namespace,
        "--create-namespace",
        "-f",
        values,
        "--set",
        own,
    ]);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let name = format!("{release}-treffpunkt-turn");
    let field = |secret: &Secret, key: &str| {
        let bytes = &secret.data.as_ref().unwrap()[key].0;
        String::from_utf8(bytes.clone()).unwrap()
    };
    let installed = secrets.get(&name).await.expect("the chart's TURN Secret");
    // An upgrade keeps the secret (participants' credentials stay valid) and takes new values.
    helm_on_cluster(&[
        "upgrade",
        &release,
        "--namespace",
        &namespace,
        "-f",
        values,
        "--set",
        own,
        "--set",
        "turn.server.maxSessions=500",
    ]);
    let upgraded = secrets.get(&name).await.unwrap();
    let secret = field(&upgraded, "secret");
    assert_eq!(
        secret,
        field(&installed, "secret"),
        "the upgrade kept the secret"
    );
    assert!(secret.len() >= 32, "a long secret");
    let config = field(&upgraded, "turnserver.conf");
    assert!(config.contains("total-quota=500\n"), "{config}");
    assert!(config.contains(&format!("static-auth-secret={secret}\n")));

    // The control plane hands out credentials for this server, signed with this secret.
    let deployment = Api::<Deployment>::namespaced(client.clone(), &namespace)
        .get(&format!("{release}-treffpunkt"))
        .await
        .unwrap();
    let pod = deployment.spec.unwrap().template.spec.unwrap();
    let env = pod.containers[0].env.clone().unwrap();
    let var = |name: &str| env.iter().find(|var| var.name == name).cloned().unwrap();
    let url = var("TREFFPUNKT_TURN_URLS").value.unwrap();
    assert_eq!(url, "turns:turn.example.org:443?transport=tcp");
    let reference = var("TREFFPUNKT_TURN_SECRET")
        .value_from
        .unwrap()
        .secret_key_ref
        .unwrap();
    assert_eq!(
        (reference.name.as_str(), reference.key.as_str()),
        (name.as_str(), "secret")
    );

    // coturn with exactly that configuration, and the media nodes of coturn-values.yaml.
    let dir = std::env::temp_dir().join(unique("treffpunkt-coturn"));
    std::fs::create_dir_all(&dir).unwrap();
    let server = coturn::Coturn::start(&config, &dir);
    coturn::assert_takes_only_the_gateways_credentials(&server, &url, &secret);
    coturn::assert_relays_only_to(&server, &url, &secret, &["192.0.2.10", "10.20.7.1"]);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    helm_ok([
        "uninstall",
        release.as_str(),
        "--namespace",
        namespace.as_str(),
        "--kubeconfig",
        support::testenv().kubeconfig.to_str().unwrap(),
    ]);
}

#[test]
fn the_monitors_select_the_control_plane_and_the_media_nodes() {
    let objects = support::helm::render_with("monitoring.serviceMonitor.enabled=true");
    let named = |k: &str| {
        objects
            .iter()
            .find(|o| kind(o) == k)
            .unwrap_or_else(|| panic!("a {k}"))
    };
    // The ServiceMonitor finds the admin Service by its labels, and its port by name.
    let monitor = &named("ServiceMonitor").data["spec"];
    let admin = objects
        .iter()
        .find(|o| kind(o) == "Service" && o.name_any().ends_with("-admin"))
        .expect("the admin Service");
    let labels = admin.metadata.labels.clone().unwrap_or_default();
    for (key, value) in monitor["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(labels.get(key).map(String::as_str), value.as_str(), "{key}");
    }
    let port = monitor["endpoints"][0]["port"].as_str().unwrap();
    assert!(
        admin.data["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == port)
    );
    // The PodMonitor finds the pods the operator makes for a MediaPool, and their health port.
    let pods = &named("PodMonitor").data["spec"];
    let pool: treffpunkt_operator::crd::MediaPool =
        serde_json::from_value(serde_json::to_value(named("MediaPool")).unwrap()).unwrap();
    let pod_labels = treffpunkt_operator::reconcile::pod_labels(&pool.name_any());
    for (key, value) in pods["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            pod_labels.get(key).map(String::as_str),
            value.as_str(),
            "{key}"
        );
    }
    let endpoint = &pods["podMetricsEndpoints"][0];
    let port = endpoint["port"].as_str().unwrap();
    let ports = treffpunkt_operator::reconcile::node_ports(&pool.spec.network);
    assert!(ports.iter().any(|p| p.name.as_deref() == Some(port)));
    // It shows the nodes the token they ask for: the one of the keys' Secret the operator reads.
    let secret = objects
        .iter()
        .filter(|o| kind(o) == "Deployment")
        .flat_map(|o| {
            o.data["spec"]["template"]["spec"]["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|c| c["env"].as_array().cloned().unwrap_or_default())
        .find(|e| e["name"] == "TREFFPUNKT_GRANT_KEY_SECRET")
        .expect("the operator is told its keys' Secret")["value"]
        .clone();
    let authorization = &endpoint["authorization"];
    assert_eq!(authorization["type"], "Bearer");
    assert_eq!(authorization["credentials"]["name"], secret);
    assert_eq!(
        authorization["credentials"]["key"],
        treffpunkt_operator::keys::METRICS_TOKEN
    );
}

#[test]
fn every_setting_the_chart_passes_the_control_plane_is_one_it_reads() {
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_treffpunkt"))
        .args(["operator", "--help"])
        .output()
        .expect("the binary runs");
    let help = String::from_utf8_lossy(&help.stdout);
    for set in VALUE_SETS {
        let objects = render(set, "treffpunkt");
        let control_plane = objects
            .iter()
            .find(|o| kind(o) == "Deployment" && o.name_any() == "treffpunkt")
            .unwrap_or_else(|| panic!("{set}: the control plane's Deployment"));
        let container = &control_plane.data["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["args"][0], "operator", "{set}");
        let names = container["env"].as_array().unwrap().iter();
        for name in names.filter_map(|var| var["name"].as_str()) {
            // The log format is read by the logger before any flag is parsed.
            if !name.starts_with("TREFFPUNKT_") || name == "TREFFPUNKT_LOG_FORMAT" {
                continue;
            }
            assert!(
                help.contains(&format!("[env: {name}")),
                "{set}: the chart sets {name}, which `treffpunkt operator` does not read"
            );
        }
    }
    // The autoscaler's waits reach the control plane.
    let chart = chart();
    let rendered = helm_ok([
        "template".as_ref(),
        "treffpunkt".as_ref(),
        chart.as_os_str(),
        "--set".as_ref(),
        "operator.autoscaler.scaleOutAfterSeconds=30,operator.autoscaler.scaleInAfterSeconds=900"
            .as_ref(),
    ]);
    for line in [
        "name: TREFFPUNKT_SCALE_OUT_AFTER\n              value: \"30\"",
        "name: TREFFPUNKT_SCALE_IN_AFTER\n              value: \"900\"",
    ] {
        assert!(rendered.contains(line), "{line}");
    }
}
