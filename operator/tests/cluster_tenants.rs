//! Tenants and their rooms against a real Kubernetes API server (etcd, kube-apiserver and
//! kube-controller-manager from `deploy/testenv`): a tenant's namespace, RBAC, quota, policy and
//! key; the server's own RBAC, quota and CEL rules; rooms' status and placement; a suspended
//! tenant; and the operator's metrics. (What someone else made under the names the operator
//! uses is in `cluster_ownership.rs`.)

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ResourceQuota, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use support::resources::{WAIT, create_room, ready_tenant, room_spec, tenant_spec};
use support::{admin, eventually, impersonating, operator, unique};
use treffpunkt_operator::crd::{self, Lifetime, MediaPool, Room, RoomPhase, RoomSpec, Tenant};
use treffpunkt_operator::domain::{NodeId, RoomKey, RoomName, TenantName};
use treffpunkt_operator::store::{KubeStore, Store, StoreError};
use treffpunkt_operator::watches::Watches;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_gets_its_namespace_rbac_quota_policy_and_key() {
    operator();
    let client = admin().await;
    let name = unique("verein");
    let tenant = ready_tenant(&client, &name, tenant_spec(Some("alice@example.org"), 7)).await;
    let namespace = crd::tenant_namespace(&name);
    let status = tenant.status.expect("a status");
    assert_eq!(status.namespace.as_deref(), Some(namespace.as_str()));
    assert_eq!(status.usage.map(|u| u.rooms), Some(0));

    let ns = Api::<Namespace>::all(client.clone())
        .get(&namespace)
        .await
        .unwrap();
    assert_eq!(ns.labels().get("treffpunkt.io/tenant"), Some(&name));
    let role = Api::<Role>::namespaced(client.clone(), &namespace)
        .get("treffpunkt-tenant-admin")
        .await
        .unwrap();
    assert!(
        role.rules
            .unwrap()
            .iter()
            .any(|rule| rule.resources.as_deref() == Some(&["rooms".to_owned()][..]))
    );
    let binding = Api::<RoleBinding>::namespaced(client.clone(), &namespace)
        .get("treffpunkt-tenant-admin")
        .await
        .unwrap();
    let subjects = binding.subjects.unwrap();
    assert_eq!(
        (subjects[0].kind.as_str(), subjects[0].name.as_str()),
        ("User", "alice@example.org")
    );
    let quota = Api::<ResourceQuota>::namespaced(client.clone(), &namespace)
        .get("treffpunkt")
        .await
        .unwrap();
    let hard = quota.spec.unwrap().hard.unwrap();
    assert_eq!(
        hard.get("count/rooms.treffpunkt.io").map(|q| q.0.as_str()),
        Some("7")
    );
    let policy = Api::<NetworkPolicy>::namespaced(client.clone(), &namespace)
        .get("treffpunkt-default-deny")
        .await
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(
        policy.policy_types,
        Some(vec!["Ingress".to_owned(), "Egress".to_owned()])
    );
    assert!(
        policy.ingress.is_none() && policy.egress.is_none(),
        "nothing is allowed"
    );
    let key = Api::<Secret>::namespaced(client.clone(), &namespace)
        .get("treffpunkt-signing-key")
        .await
        .unwrap();
    assert_eq!(key.data.unwrap()["key"].0.len(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_manages_rooms_of_their_tenant_and_nothing_of_another() {
    operator();
    let client = admin().await;
    let (ours, theirs) = (unique("ours"), unique("theirs"));
    ready_tenant(&client, &ours, tenant_spec(Some("alice"), 5)).await;
    ready_tenant(&client, &theirs, tenant_spec(Some("bob"), 5)).await;
    let alice = impersonating("alice", &["system:authenticated"]).await;

    let own_namespace = crd::tenant_namespace(&ours);
    let created = eventually(WAIT, || async {
        create_room(&alice, &own_namespace, "kaffeeklatsch", room_spec())
            .await
            .ok()
    })
    .await;
    assert!(
        created.is_some(),
        "Alice creates a room in her tenant's namespace"
    );

    let other_namespace = crd::tenant_namespace(&theirs);
    let forbidden = |result: Result<_, kube::Error>| matches!(result, Err(kube::Error::Api(s)) if s.code == 403);
    let other_rooms = Api::<Room>::namespaced(alice.clone(), &other_namespace);
    assert!(
        forbidden(other_rooms.list(&ListParams::default()).await.map(|_| ())),
        "she cannot list theirs"
    );
    assert!(
        forbidden(
            other_rooms
                .create(&PostParams::default(), &Room::new("x", room_spec()))
                .await
                .map(|_| ())
        ),
        "she cannot create rooms in theirs"
    );
    let other_secrets = Api::<Secret>::namespaced(alice.clone(), &other_namespace);
    assert!(
        forbidden(
            other_secrets
                .get("treffpunkt-signing-key")
                .await
                .map(|_| ())
        ),
        "she cannot read their signing key"
    );
    assert!(
        forbidden(
            Api::<Tenant>::all(alice.clone())
                .list(&ListParams::default())
                .await
                .map(|_| ())
        ),
        "she cannot list tenants"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_refuses_a_room_beyond_the_tenants_limit() {
    operator();
    let client = admin().await;
    let name = unique("klein");
    ready_tenant(&client, &name, tenant_spec(None, 2)).await;
    let namespace = crd::tenant_namespace(&name);
    for room in ["eins", "zwei"] {
        create_room(&client, &namespace, room, room_spec())
            .await
            .unwrap_or_else(|error| panic!("room {room} fits the limit: {error}"));
    }
    match create_room(&client, &namespace, "drei", room_spec()).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403);
            assert!(
                status.message.contains("exceeded quota"),
                "{}",
                status.message
            );
        }
        other => panic!("a third room must be refused, got {other:?}"),
    }
}

/// Asserts that the API server refused a create as invalid, saying `message`.
fn refused(result: Result<serde_json::Value, kube::Error>, message: &str) {
    match result {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{}", status.message);
            assert!(
                status.message.contains(message),
                "expected {message:?} in {:?}",
                status.message
            );
        }
        other => panic!("expected a refusal with {message:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_specs_are_refused_with_the_rules_message() {
    let client = admin().await;
    let tenants = Api::<Tenant>::all(client.clone());
    let mut spec = tenant_spec(None, 1);
    spec.limits.participants_per_room = 50;
    spec.limits.participants = 10;
    refused(
        tenants
            .create(&PostParams::default(), &Tenant::new(&unique("x"), spec))
            .await
            .map(|_| json!({})),
        "participantsPerRoom cannot exceed participants",
    );
    refused(
        tenants
            .create(
                &PostParams::default(),
                &Tenant::new("api", tenant_spec(None, 1)),
            )
            .await
            .map(|_| json!({})),
        "reserved",
    );
    let colourful = json!({
        "apiVersion": "treffpunkt.io/v1alpha1", "kind": "Tenant",
        "metadata": {"name": unique("bunt")},
        "spec": {"displayName": "Bunt", "branding": {"primaryColor": "red"}},
    });
    refused(
        tenants
            .create(
                &PostParams::default(),
                &serde_json::from_value(colourful).unwrap(),
            )
            .await
            .map(|_| json!({})),
        "a colour is written #rrggbb",
    );
    let rooms = Api::<Room>::namespaced(client.clone(), "default");
    let password_without_secret = json!({
        "apiVersion": "treffpunkt.io/v1alpha1", "kind": "Room",
        "metadata": {"name": "geheim"},
        "spec": {"access": "Password"},
    });
    refused(
        rooms
            .create(
                &PostParams::default(),
                &serde_json::from_value(password_without_secret).unwrap(),
            )
            .await
            .map(|_| json!({})),
        "access Password needs passwordSecretRef",
    );
    refused(
        rooms
            .create(&PostParams::default(), &Room::new("Mit.Punkt", room_spec()))
            .await
            .map(|_| json!({})),
        "a room name is a DNS label",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_media_pools_are_refused_with_the_rules_message() {
    let client = admin().await;
    let pools = Api::<MediaPool>::namespaced(client.clone(), "default");
    let upside_down = json!({
        "apiVersion": "treffpunkt.io/v1alpha1", "kind": "MediaPool",
        "metadata": {"name": "verkehrt"},
        "spec": {"replicas": {"min": 5, "max": 2}, "template": {"image": "treffpunkt/media-node:1"}},
    });
    refused(
        pools
            .create(
                &PostParams::default(),
                &serde_json::from_value(upside_down).unwrap(),
            )
            .await
            .map(|_| json!({})),
        "replicas.min cannot exceed replicas.max",
    );
    for (name, spec, message) in [
        (
            "draussen-zwei",
            json!({"external": true, "tenants": ["a", "b"]}),
            "an external pool serves exactly one tenant",
        ),
        (
            "draussen-leer",
            json!({"external": true}),
            "an external pool serves exactly one tenant",
        ),
        (
            "draussen-mit-vorlage",
            json!({"external": true, "tenants": ["a"], "template": {"image": "x"}}),
            "an external pool has none",
        ),
        ("drinnen-ohne-vorlage", json!({}), "needs a template"),
    ] {
        let pool = json!({
            "apiVersion": "treffpunkt.io/v1alpha1", "kind": "MediaPool",
            "metadata": {"name": name}, "spec": spec,
        });
        refused(
            pools
                .create(
                    &PostParams::default(),
                    &serde_json::from_value(pool).unwrap(),
                )
                .await
                .map(|_| json!({})),
            message,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_running_calls_depend_on_cannot_change_under_them() {
    let client = admin().await;
    let pools = Api::<MediaPool>::namespaced(client.clone(), "default");
    let name = unique("fest");
    let pool = json!({
        "apiVersion": "treffpunkt.io/v1alpha1", "kind": "MediaPool",
        "metadata": {"name": name},
        "spec": {"template": {"image": "treffpunkt/media-node:1"}},
    });
    pools
        .create(
            &PostParams::default(),
            &serde_json::from_value(pool).unwrap(),
        )
        .await
        .expect("a pool");
    let change = |spec: serde_json::Value| {
        let pools = pools.clone();
        let name = name.clone();
        async move {
            pools
                .patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": spec})),
                )
                .await
                .map(|_| json!({}))
        }
    };
    for network in [
        json!({"udpPort": 10001}),
        json!({"tcpPort": 10444}),
        json!({"mode": "HostNetwork"}),
        json!({"announceAddress": "192.0.2.7"}),
    ] {
        refused(
            change(json!({"network": network})).await,
            "network cannot change under running calls",
        );
    }
    refused(
        change(json!({"external": true, "template": null, "tenants": ["verein"]})).await,
        "external cannot change",
    );
    // What the autoscaler and the placement read may change.
    change(json!({"replicas": {"min": 2, "max": 4}, "tenants": ["verein"]}))
        .await
        .expect("replicas and tenants change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_lowered_below_use_is_reported_where_the_tenants_admins_read_it() {
    operator();
    let client = admin().await;
    let name = unique("eng");
    ready_tenant(&client, &name, tenant_spec(Some("vera"), 3)).await;
    let namespace = crd::tenant_namespace(&name);
    for room in ["eins", "zwei", "drei"] {
        create_room(&client, &namespace, room, room_spec())
            .await
            .unwrap();
    }
    let tenants = Api::<Tenant>::all(client.clone());
    let limits = |rooms: i32| json!({"spec": {"limits": {"rooms": rooms}}});
    let within = |expected: &'static str| {
        let tenants = tenants.clone();
        let name = name.clone();
        async move {
            let tenant = tenants.get(&name).await.ok()?;
            let status = tenant.status?;
            let condition = status
                .conditions
                .iter()
                .find(|c| c.type_ == "WithinLimits")?;
            (condition.status == expected
                && status.observed_generation == tenant.metadata.generation)
                .then(|| condition.clone())
        }
    };
    assert!(
        eventually(WAIT, || within("True")).await.is_some(),
        "within its limits"
    );
    tenants
        .patch(&name, &PatchParams::default(), &Patch::Merge(limits(2)))
        .await
        .unwrap();
    let over = eventually(WAIT, || within("False"))
        .await
        .expect("over its limits");
    assert_eq!(over.reason, "OverLimits");
    assert!(
        over.message.contains("3 rooms exist, the limit is 2"),
        "{}",
        over.message
    );
    // Nothing was removed, and the tenant is still Ready: its rooms go on.
    let rooms = Api::<Room>::namespaced(client.clone(), &namespace);
    assert_eq!(
        rooms
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        3
    );
    let tenant = tenants.get(&name).await.unwrap();
    assert!(crd::condition_is_true(
        &tenant.status.unwrap().conditions,
        "Ready"
    ));
    // The tenant's owner reads it in the tenant's namespace.
    let vera = impersonating("vera", &[]).await;
    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(vera, &namespace);
    let told = eventually(WAIT, || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("OverLimits"))
    })
    .await
    .expect("an event in the tenant's namespace that its owner may read");
    assert_eq!(told.type_.as_deref(), Some("Warning"));
    assert_eq!(told.involved_object.name.as_deref(), Some(name.as_str()));
    tenants
        .patch(&name, &PatchParams::default(), &Patch::Merge(limits(3)))
        .await
        .unwrap();
    assert!(
        eventually(WAIT, || within("True")).await.is_some(),
        "within its limits again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_tenant_removes_its_namespace_and_everything_in_it() {
    operator();
    let client = admin().await;
    let name = unique("weg");
    ready_tenant(&client, &name, tenant_spec(None, 5)).await;
    let namespace = crd::tenant_namespace(&name);
    create_room(&client, &namespace, "letzter", room_spec())
        .await
        .unwrap();
    Api::<Tenant>::all(client.clone())
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    let gone = eventually(Duration::from_secs(60), || async {
        let namespace_gone = Api::<Namespace>::all(client.clone())
            .get_opt(&namespace)
            .await
            .ok()?
            .is_none();
        let tenant_gone = Api::<Tenant>::all(client.clone())
            .get_opt(&name)
            .await
            .ok()?
            .is_none();
        (namespace_gone && tenant_gone).then_some(())
    })
    .await;
    assert!(gone.is_some(), "the namespace and the tenant are gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_report_their_tenant_join_url_and_limits() {
    operator();
    let client = admin().await;
    let name = unique("status");
    let mut spec = tenant_spec(None, 5);
    spec.limits.participants_per_room = 10;
    ready_tenant(&client, &name, spec).await;
    let namespace = crd::tenant_namespace(&name);
    create_room(&client, &namespace, "fein", room_spec())
        .await
        .unwrap();
    let too_big = RoomSpec {
        max_participants: Some(50),
        ..room_spec()
    };
    create_room(&client, &namespace, "zu-gross", too_big)
        .await
        .unwrap();
    let rooms = Api::<Room>::namespaced(client.clone(), &namespace);
    let fine = eventually(WAIT, || async { rooms.get("fein").await.ok()?.status })
        .await
        .expect("the room gets a status");
    assert_eq!(fine.phase, Some(RoomPhase::Idle));
    assert_eq!(fine.tenant.as_deref(), Some(name.as_str()));
    assert_eq!(
        fine.join_url,
        Some(format!("https://treffpunkt.test/{name}/fein"))
    );
    assert!(crd::condition_is_true(&fine.conditions, "Accepted"));
    let refused = eventually(WAIT, || async { rooms.get("zu-gross").await.ok()?.status })
        .await
        .expect("the room gets a status");
    assert_eq!(refused.phase, Some(RoomPhase::Closed));
    let accepted = refused
        .conditions
        .iter()
        .find(|c| c.type_ == "Accepted")
        .unwrap();
    assert_eq!(
        (accepted.status.as_str(), accepted.reason.as_str()),
        ("False", "ExceedsTenantLimit")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_concurrent_placements_of_one_room_converge_on_one_node() {
    operator();
    let client = admin().await;
    let name = unique("race");
    ready_tenant(&client, &name, tenant_spec(None, 20)).await;
    let namespace = crd::tenant_namespace(&name);
    // Two gateways, each with its own connection to the API server.
    let gateway = || async {
        let client = Client::try_from(support::admin_config().await).unwrap();
        let (watches, _) = Watches::start(&client).await.unwrap();
        KubeStore::new(client, &watches)
    };
    let (first, second) = (gateway().await, gateway().await);
    for round in 0..5 {
        let room_name = format!("raum-{round}");
        create_room(&client, &namespace, &room_name, room_spec())
            .await
            .unwrap();
        let key = RoomKey {
            tenant: TenantName::new(name.as_str()).unwrap(),
            name: RoomName::new(room_name.as_str()).unwrap(),
        };
        // The operator may write the room's status in between; then both lose and try again,
        // as a gateway does. Never may both win.
        let mut winner = None;
        for _ in 0..20 {
            let seen_first = first.room(&key).await.unwrap().unwrap();
            let seen_second = second.room(&key).await.unwrap().unwrap();
            let (a, b) = tokio::join!(
                first.place_room(&key, &seen_first.revision, vec![NodeId("node-a".into())]),
                second.place_room(&key, &seen_second.revision, vec![NodeId("node-b".into())]),
            );
            match (a, b) {
                (Ok(room), Err(StoreError::Conflict(_)))
                | (Err(StoreError::Conflict(_)), Ok(room)) => {
                    winner = Some(room.nodes);
                    break;
                }
                (Err(StoreError::Conflict(_)), Err(StoreError::Conflict(_))) => continue,
                other => panic!("exactly one placement may win, got {other:?}"),
            }
        }
        let winner = winner.expect("one placement wins");
        let stored = first.room(&key).await.unwrap().unwrap();
        assert_eq!(stored.nodes, winner, "both see the winner");
        assert_eq!(second.room(&key).await.unwrap().unwrap().nodes, winner);
        // The room spreads to a second node: its status names both, the first as its node.
        let spread = vec![winner[0].clone(), NodeId("node-c".into())];
        let mut placed = false;
        for _ in 0..20 {
            // The operator may write the room's status in between, as above.
            let seen = first.room(&key).await.unwrap().unwrap();
            match first.place_room(&key, &seen.revision, spread.clone()).await {
                Ok(_) => {
                    placed = true;
                    break;
                }
                Err(StoreError::Conflict(_)) => continue,
                Err(error) => panic!("placing the room on two nodes: {error}"),
            }
        }
        assert!(placed, "the room is placed on two nodes");
        let rooms: Api<Room> = Api::namespaced(client.clone(), &namespace);
        let status = rooms
            .get(&room_name)
            .await
            .unwrap()
            .status
            .unwrap_or_default();
        assert_eq!(status.nodes, vec![winner[0].0.clone(), "node-c".to_owned()]);
        assert_eq!(status.node.as_ref(), Some(&winner[0].0));
        let read_back = eventually(WAIT, || async {
            let room = second.room(&key).await.ok()??;
            (room.nodes == spread).then_some(room)
        })
        .await;
        assert!(
            read_back.is_some(),
            "the other gateway reads both nodes back"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_tenant_closes_its_rooms_and_refuses_joins() {
    use treffpunkt_client::{Participant, Publish, RoomEvent, signal_url};
    let operator = operator();
    let client = admin().await;

    let node_id = support::nodes::run_node(operator).await;

    let tenant = unique("offen");
    let mut spec = tenant_spec(None, 5);
    spec.policy.adhoc_rooms = true;
    ready_tenant(&client, &tenant, spec).await;
    let url = signal_url(operator.http, &tenant, "treff");
    let mut anna = None;
    for _ in 0..50 {
        match Participant::join(&url, "Anna", Some(Publish::default())).await {
            Ok(participant) => {
                anna = Some(participant);
                break;
            }
            // Until the node has attached, there is nowhere to place the room.
            Err(treffpunkt_client::Error::Refused { code, .. }) if code == "platform-full" => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("Anna cannot join: {error}"),
        }
    }
    let mut anna = anna.expect("Anna joins once the node is attached");

    let namespace = crd::tenant_namespace(&tenant);
    let rooms = Api::<Room>::namespaced(client.clone(), &namespace);
    let active = eventually(WAIT, || async {
        let room = rooms.get("treff").await.ok()?;
        let status = room.status?;
        (room.spec.lifetime == Lifetime::AdHoc
            && status.phase == Some(RoomPhase::Active)
            && status.participants == 1
            && status.node.as_deref() == Some(node_id.as_str()))
        .then_some(())
    })
    .await;
    assert!(
        active.is_some(),
        "opening a new name made an ad-hoc room, placed on the node and Active"
    );

    Api::<Tenant>::all(client.clone())
        .patch(
            &tenant,
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"suspended": true}})),
        )
        .await
        .unwrap();
    let closed = loop {
        match anna.next_event(Duration::from_secs(15)).await {
            Some(RoomEvent::Closed { reason }) => break Some(reason),
            Some(_) => continue,
            None => break None,
        }
    };
    assert_eq!(
        closed.as_deref(),
        Some("room-closed"),
        "Anna's meeting is closed"
    );
    match Participant::join(&url, "Ben", None).await {
        Err(treffpunkt_client::Error::Refused { code, .. }) => assert_eq!(code, "tenant-suspended"),
        Err(other) => panic!("expected tenant-suspended, got {other}"),
        Ok(_) => panic!("Ben joined a suspended tenant"),
    }
    // Empty now, the ad-hoc room goes after its time.
    let removed = eventually(Duration::from_secs(20), || async {
        rooms.get_opt("treff").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(removed.is_some(), "the empty ad-hoc room is removed");
    anna.leave().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliations_are_counted_in_the_metrics() {
    let operator = operator();
    let client = admin().await;
    ready_tenant(&client, &unique("gezaehlt"), tenant_spec(None, 1)).await;
    let text = support::metrics(operator.admin).await;
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE treffpunkt_reconciliations counter"),
        "{text}"
    );
    let tenants = support::counter(
        &text,
        "treffpunkt_reconciliations_total{controller=\"tenant\"}",
    );
    assert!(tenants > 0, "tenant reconciliations are counted: {text}");
    assert!(
        text.contains("treffpunkt_reconciliation_duration_seconds_count{controller=\"tenant\"}")
    );
}
