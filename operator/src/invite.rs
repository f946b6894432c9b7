//! Invitation links, made by a tenant's admins with `treffpunkt invite`: into an invite-only
//! room, or (`--moderator`) into any room as its moderator. An [`Invitation`] for one room with
//! an expiry, signed with the tenant's own key (the Secret
//! [`SIGNING_KEY_SECRET`] in its namespace, read with the admin's own kubeconfig; in standalone
//! mode, from the manifests file). The link carries it in its fragment (`#invite=...`), which a
//! browser never sends to a server, so it stays out of every log. Replacing the tenant's key
//! (deleting the Secret; the operator makes a new one) revokes every link made with the old.

use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use treffpunkt_proto::grant::{Keyring, now_unix_ms};
use treffpunkt_proto::v1::{Invitation, RoomRef};

use crate::crd::{self, Room};
use crate::domain::{RoomKey, SIGNING_KEY_FIELD, SIGNING_KEY_SECRET};
use crate::seed;

/// The longest an invitation may be valid.
pub const MAX_VALIDITY: Duration = Duration::from_secs(366 * 86_400);

/// What a link lets its holder do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Link {
    /// How long it is valid.
    pub valid: Duration,
    /// Whoever comes in with it moderates.
    pub moderator: bool,
}

/// The link into `room` at `room_url` (the room's address) for whoever holds it, as `link`
/// says from `now_unix_ms` on, signed with `signing_key`.
pub fn link(
    room_url: &str,
    room: &RoomKey,
    signing_key: &[u8],
    link: Link,
    now_unix_ms: u64,
) -> String {
    let (token, _) = token(room, signing_key, link, now_unix_ms);
    format!("{}#invite={token}", room_url.trim_end_matches('/'))
}

/// The signed invitation into `room` as `link` says from `now_unix_ms` on, and when it
/// expires (Unix milliseconds).
pub fn token(room: &RoomKey, signing_key: &[u8], link: Link, now_unix_ms: u64) -> (String, u64) {
    let expires_at_unix_ms = now_unix_ms + link.valid.min(MAX_VALIDITY).as_millis() as u64;
    let invitation = Invitation {
        room: Some(RoomRef {
            tenant: room.tenant.as_str().to_owned(),
            name: room.name.as_str().to_owned(),
        }),
        expires_at_unix_ms,
        moderator: link.moderator,
    };
    let token = Keyring::from_secret(signing_key).seal_invitation(&invitation);
    (token, expires_at_unix_ms)
}

/// The tenant's signing key from the cluster, and the room's address there (its status'
/// join URL) if it has one yet.
pub async fn from_cluster(
    client: Client,
    room: &RoomKey,
) -> anyhow::Result<(Vec<u8>, Option<String>)> {
    let namespace = crd::tenant_namespace(room.tenant.as_str());
    let secret = Api::<Secret>::namespaced(client.clone(), &namespace)
        .get_opt(SIGNING_KEY_SECRET)
        .await
        .with_context(|| format!("reading Secret {SIGNING_KEY_SECRET} in {namespace}"))?
        .with_context(|| {
            format!("{namespace} has no Secret {SIGNING_KEY_SECRET}: is the tenant Ready?")
        })?;
    let key = secret
        .data
        .and_then(|mut data| data.remove(SIGNING_KEY_FIELD))
        .map(|value| value.0)
        .filter(|key| !key.is_empty())
        .with_context(|| format!("Secret {SIGNING_KEY_SECRET} has no key {SIGNING_KEY_FIELD:?}"))?;
    let url = Api::<Room>::namespaced(client, &namespace)
        .get_opt(room.name.as_str())
        .await
        .ok()
        .flatten()
        .and_then(|room| room.status?.join_url);
    Ok((key, url))
}

/// The tenant's signing key from a standalone manifests file.
pub fn from_manifests(text: &str, room: &RoomKey) -> anyhow::Result<Vec<u8>> {
    let seed = seed::parse(text)?;
    let Some(secret) = seed
        .secrets
        .into_iter()
        .find(|s| s.tenant == room.tenant && s.name == SIGNING_KEY_SECRET)
    else {
        bail!(
            "the manifests have no Secret {SIGNING_KEY_SECRET} in namespace {}",
            crd::tenant_namespace(room.tenant.as_str())
        );
    };
    secret
        .data
        .get(SIGNING_KEY_FIELD)
        .filter(|key| key.len() >= treffpunkt_proto::grant::MIN_SECRET_BYTES)
        .cloned()
        .with_context(|| {
            format!(
                "Secret {SIGNING_KEY_SECRET} needs a key {SIGNING_KEY_FIELD:?} of at least {} bytes",
                treffpunkt_proto::grant::MIN_SECRET_BYTES
            )
        })
}

/// Now, for links made from the command line.
pub fn now() -> u64 {
    now_unix_ms()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{RoomName, TenantName};

    #[test]
    fn a_link_names_its_room_and_carries_an_invitation_for_it_alone() {
        let room = RoomKey {
            tenant: TenantName::new("verein").unwrap(),
            name: RoomName::new("vorstand").unwrap(),
        };
        let key = b"the tenant's own key, long enough";
        let link = link(
            "https://treffen.example/verein/vorstand/",
            &room,
            key,
            Link {
                valid: Duration::from_secs(3600),
                moderator: true,
            },
            1_000,
        );
        let (url, token) = link.split_once("#invite=").unwrap();
        assert_eq!(url, "https://treffen.example/verein/vorstand");
        let reference = RoomRef {
            tenant: "verein".into(),
            name: "vorstand".into(),
        };
        let opened = Keyring::from_secret(key)
            .open_invitation(token, &reference, 2_000)
            .unwrap();
        assert_eq!(opened.expires_at_unix_ms, 1_000 + 3_600_000);
        assert!(opened.moderator);
    }

    #[test]
    fn the_key_comes_from_the_manifests_of_the_tenant() {
        let manifests = r#"
apiVersion: treffpunkt.io/v1alpha1
kind: Tenant
metadata:
  name: verein
spec:
  displayName: Verein
---
apiVersion: v1
kind: Secret
metadata:
  name: treffpunkt-signing-key
  namespace: tenant-verein
stringData:
  key: a signing key that is long enough
"#;
        let room = RoomKey {
            tenant: TenantName::new("verein").unwrap(),
            name: RoomName::new("vorstand").unwrap(),
        };
        assert_eq!(
            from_manifests(manifests, &room).unwrap(),
            b"a signing key that is long enough"
        );
        let other = RoomKey {
            tenant: TenantName::new("public").unwrap(),
            ..room
        };
        assert!(from_manifests(manifests, &other).is_err());
    }
}
