//! Protected rooms on a real API server: a Password room opens with the password in the Secret
//! its Room names, and an InviteOnly room with a link that `treffpunkt invite` makes with the
//! tenant's own key, read with a kubeconfig. Deleting the tenant's key (the operator makes a new
//! one) revokes every link made before.

mod support;

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use support::resources::{create_room, ready_tenant, room_spec, tenant_spec};
use support::{admin, eventually, operator, testenv, unique};
use treffpunkt_client::{Error, JoinOptions, Participant, signal_url};
use treffpunkt_operator::crd::{self, Room, RoomAccess, SecretKeyRef};
use treffpunkt_operator::domain::SIGNING_KEY_SECRET;

/// Joins `room` of `tenant` as `name` with `options`, waiting while no node can take it yet;
/// returns the refusal's code, or "admitted".
async fn join(tenant: &str, room: &str, name: &str, options: JoinOptions) -> String {
    let url = signal_url(operator().http, tenant, room);
    for _ in 0..100 {
        match Participant::join_with(&url, name, options.clone()).await {
            Ok(participant) => {
                participant.leave().await;
                return "admitted".to_owned();
            }
            Err(Error::Refused { code, .. }) if code == "platform-full" => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(Error::Refused { code, .. }) => return code,
            Err(error) => panic!("{name} cannot join: {error}"),
        }
    }
    panic!("no node took the room");
}

/// The invitation of the link `treffpunkt invite` prints for `room` of `tenant`, as a tenant
/// admin with kubectl access runs it.
fn invitation(tenant: &str, room: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_treffpunkt"))
        .args(["invite", tenant, room, "--kubeconfig"])
        .arg(&testenv().kubeconfig)
        .output()
        .expect("treffpunkt invite runs");
    assert!(output.status.success(), "{output:?}");
    let link = String::from_utf8(output.stdout).unwrap();
    let (url, token) = link.trim().split_once("#invite=").expect("a link");
    assert_eq!(
        url,
        format!("https://treffpunkt.test/{tenant}/{room}"),
        "the room's join URL"
    );
    token.to_owned()
}

/// The tenant's signing key as it stands.
async fn signing_key(client: &Client, namespace: &str) -> Option<Vec<u8>> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get_opt(SIGNING_KEY_SECRET)
        .await
        .ok()??;
    Some(secret.data?.get("key")?.0.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_rooms_open_with_the_secrets_password_and_the_tenants_invitations() {
    let client = admin().await;
    support::nodes::run_node(operator()).await;
    let tenant = unique("verein");
    ready_tenant(&client, &tenant, tenant_spec(None, 5)).await;
    let namespace = crd::tenant_namespace(&tenant);
    let password = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("training-passwort".into()),
            ..Default::default()
        },
        string_data: Some([("password".to_owned(), "Aufschlag".to_owned())].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &password)
        .await
        .unwrap();
    let mut training = room_spec();
    training.access = Some(RoomAccess::Password);
    training.password_secret_ref = Some(SecretKeyRef {
        name: "training-passwort".into(),
        key: "password".into(),
    });
    create_room(&client, &namespace, "training", training)
        .await
        .unwrap();
    let mut vorstand = room_spec();
    vorstand.access = Some(RoomAccess::InviteOnly);
    create_room(&client, &namespace, "vorstand", vorstand)
        .await
        .unwrap();

    let with_password = |password: &str| JoinOptions {
        password: Some(password.to_owned()),
        ..JoinOptions::default()
    };
    assert_eq!(
        join(&tenant, "training", "Anna", JoinOptions::default()).await,
        "password-required"
    );
    assert_eq!(
        join(&tenant, "training", "Anna", with_password("Netz")).await,
        "password-wrong"
    );
    assert_eq!(
        join(&tenant, "training", "Anna", with_password("Aufschlag")).await,
        "admitted"
    );

    // The room's join URL comes with its status.
    let rooms = Api::<Room>::namespaced(client.clone(), &namespace);
    let published = eventually(Duration::from_secs(30), || async {
        rooms.get("vorstand").await.ok()?.status?.join_url
    })
    .await;
    assert!(published.is_some(), "the operator publishes the join URL");
    let with_invite = |invite: &str| JoinOptions {
        invite: Some(invite.to_owned()),
        ..JoinOptions::default()
    };
    assert_eq!(
        join(&tenant, "vorstand", "Ben", JoinOptions::default()).await,
        "invite-required"
    );
    let old = invitation(&tenant, "vorstand");
    assert_eq!(
        join(&tenant, "vorstand", "Ben", with_invite(&old)).await,
        "admitted"
    );

    // The tenant's admins revoke every link as the guide says: they delete the key and touch
    // one of their rooms (both in their namespace, where their Role lets them), and the
    // operator makes another at once.
    let before = signing_key(&client, &namespace)
        .await
        .expect("the tenant's key");
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .delete(SIGNING_KEY_SECRET, &DeleteParams::default())
        .await
        .unwrap();
    let touch = json!({"metadata": {"annotations": {"treffpunkt.io/keys-revoked": "1"}}});
    rooms
        .patch("vorstand", &PatchParams::default(), &Patch::Merge(&touch))
        .await
        .unwrap();
    let renewed = eventually(Duration::from_secs(30), || async {
        signing_key(&client, &namespace)
            .await
            .filter(|key| *key != before)
    })
    .await;
    assert!(renewed.is_some(), "the operator makes a new key");
    assert_eq!(
        join(&tenant, "vorstand", "Ben", with_invite(&old)).await,
        "invite-invalid",
        "the old link no longer opens the room"
    );
    let new = invitation(&tenant, "vorstand");
    assert_eq!(
        join(&tenant, "vorstand", "Ben", with_invite(&new)).await,
        "admitted"
    );
}
