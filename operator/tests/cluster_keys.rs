//! The leader rotates the platform's keys in their Secret on a real API server, and the replica
//! follows: a media node that proves the new key attaches, one with the retired key does not.
//! A Secret of an earlier version is given what it lacks and keeps the keys it has.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;
use support::attach::register_as;
use support::{PLATFORM, admin, eventually, unique};
use treffpunkt_operator::keys::{self, Rotation};
use treffpunkt_proto::grant::Keyring;

/// The keys in `field` of `secret`, the signing one first.
fn keys_of(secret: &Secret, field: &str) -> Vec<String> {
    let data = secret.data.clone().unwrap_or_default();
    let text = data
        .get(field)
        .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned())
        .unwrap_or_default();
    text.split(',').map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_rotates_the_keys_in_three_steps_and_the_replica_follows() {
    let name = unique("keys");
    let mut settings = support::settings();
    settings.grant_key_secret = name.clone();
    // The first rotation 20 s after the Secret is made, its steps 2 s apart; the next 20 s
    // after the first ends.
    settings.key_rotation = Some(Rotation {
        every: Duration::from_secs(20),
        step: Duration::from_secs(2),
    });
    let operator = support::start_operator_with(&unique("keys-lease"), settings, false);
    let secrets = Api::<Secret>::namespaced(admin().await, PLATFORM);

    // Every state of the grant and ticket keys, in order, through one whole rotation.
    let mut seen: Vec<(Vec<String>, Vec<String>)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 4 && Instant::now() < deadline {
        if let Some(secret) = secrets.get_opt(&name).await.unwrap() {
            let now = (
                keys_of(&secret, keys::GRANT_KEY),
                keys_of(&secret, keys::TICKET_KEY),
            );
            if seen.last() != Some(&now) {
                seen.push(now);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        seen.len(),
        4,
        "one whole rotation within a minute: {seen:?}"
    );
    for field in [0, 1] {
        let states: Vec<&Vec<String>> = seen
            .iter()
            .map(|s| if field == 0 { &s.0 } else { &s.1 })
            .collect();
        let (old, new) = (&states[0][0], &states[1][1]);
        assert_ne!(old, new, "a new key");
        assert_eq!(states[0], &vec![old.clone()], "one key");
        assert_eq!(states[1], &vec![old.clone(), new.clone()], "announced");
        assert_eq!(states[2], &vec![new.clone(), old.clone()], "signing");
        assert_eq!(states[3], &vec![new.clone()], "the old key retired");
    }

    // The replica reads the Secret again within its interval: then the retired key no longer
    // attaches a node, and the new one does (until the next rotation retires it, 24 s after
    // this one ended).
    tokio::time::sleep(keys::FOLLOW_INTERVAL + Duration::from_secs(1)).await;
    let (old, new) = (&seen[0].0[0], &seen[3].0[0]);
    for (key, attaches, why) in [(old, false, "the retired key"), (new, true, "the new key")] {
        let key = Keyring::from_secrets(key).unwrap();
        let registration = register_as(operator.grpc, &unique("knoten"), Some(&key)).await;
        assert_eq!(registration.answer.is_ok(), attaches, "{why}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_of_an_earlier_version_gets_what_it_lacks_and_keeps_its_keys() {
    let name = unique("old-keys");
    let client = admin().await;
    // The Secret is made before any operator runs, so the platform's namespace may not be
    // there yet (on a test environment just started, this test can be the first to need it).
    support::ensure_namespace(&client, PLATFORM).await;
    let secrets = Api::<Secret>::namespaced(client, PLATFORM);
    // As the first releases made it: the keys and the admin token, no authority, no metrics
    // token.
    let made: std::collections::BTreeMap<String, ByteString> = [
        (keys::GRANT_KEY, "a grant key the media nodes hold"),
        (keys::TICKET_KEY, "a ticket key of the control plane"),
        (keys::ADMIN_TOKEN, "an admin token of the operators"),
    ]
    .map(|(field, text)| (field.to_owned(), ByteString(text.as_bytes().to_vec())))
    .into();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..ObjectMeta::default()
        },
        data: Some(made.clone()),
        ..Secret::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let mut settings = support::settings();
    settings.grant_key_secret = name.clone();
    let _operator = support::start_operator_with(&unique("old-keys-lease"), settings, false);

    let secret = eventually(Duration::from_secs(30), || async {
        let secret = secrets.get(&name).await.ok()?;
        let data = secret.data.clone()?;
        (data.contains_key(keys::METRICS_TOKEN) && data.contains_key(keys::AUTHORITY_CERT))
            .then_some(secret)
    })
    .await
    .expect("the Secret is given a metrics token and an authority");
    let data = secret.data.unwrap_or_default();
    for (field, value) in &made {
        assert_eq!(data.get(field), Some(value), "{field} is kept");
    }
    let token = String::from_utf8(data[keys::METRICS_TOKEN].0.clone()).unwrap();
    assert!(
        treffpunkt_proto::bearer::token(&token).is_some(),
        "{token:?}"
    );
    assert_ne!(data[keys::METRICS_TOKEN], made[keys::ADMIN_TOKEN]);
}
