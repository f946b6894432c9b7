//! The platform's keys, in one Secret of the platform namespace: made on first start, read and
//! followed by every replica, and rotated by the leader.
//!
//! The Secret holds the grant key (`key`, which the media nodes get as a mounted file), the
//! ticket key (`ticket-key`, the control plane's alone), the admin token (`admin-token`), the
//! token that reads the media nodes' status and metrics (`metrics-token`, which the nodes get as
//! a mounted file and the chart's PodMonitor shows them), the Attach port's certificate
//! authority (`attach-ca.crt`, `attach-ca.key`) and the certificate each MediaPool's nodes show
//! there (`attach-<pool>.crt`, `.key`, `.not-after`; see `reconcile::pool`). A media node's pod
//! mounts the fields it needs and no others.
//! A key field holds keys as text, comma-separated: the first signs, all are accepted.
//!
//! # Rotation
//!
//! Every [`Rotation::every`] the leader gives both keys a successor, in three steps
//! [`Rotation::step`] apart, so that nobody ever holds a token that its checker cannot check:
//!
//! 1. *announced*: `old,new`: the new key is accepted everywhere, the old one still signs;
//! 2. *signing*: `new,old`: the new key signs, tokens signed with the old one still pass;
//! 3. *stable*: `new`: the old key is gone.
//!
//! A step must be longer than a mounted Secret takes to reach the media nodes (a minute or two)
//! plus the life of a grant and of an attach claim; the default, ten minutes, is. The phase and
//! when it began are the Secret's annotations; a change is a patch on the Secret's version, so
//! two leaders (one of them a moment out of date) cannot rotate twice. Replicas read the Secret
//! again every [`FOLLOW_INTERVAL`], the media nodes their key file every two seconds.

use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tracing::{debug, info, warn};
use treffpunkt_proto::grant::Keyring;
use treffpunkt_proto::random;

use crate::admission::Keys;
use crate::fleet::tls::Authority;
use crate::reconcile;

/// The field that holds the grant key.
pub const GRANT_KEY: &str = "key";
/// The field that holds the ticket key.
pub const TICKET_KEY: &str = "ticket-key";
/// The field that holds the admin endpoint's bearer token.
pub const ADMIN_TOKEN: &str = "admin-token";
/// The field that holds the bearer token of the media nodes' `/status` and `/metrics`.
pub const METRICS_TOKEN: &str = "metrics-token";
/// The fields of the Attach port's certificate authority: its certificate and its key.
pub const AUTHORITY_CERT: &str = "attach-ca.crt";
const AUTHORITY_KEY: &str = "attach-ca.key";

/// The fields of the certificate, its key and its expiry (seconds since the epoch) that the
/// media nodes of `pool` show on the Attach port.
pub fn pool_fields(pool: &str) -> [String; 3] {
    [
        format!("attach-{pool}.crt"),
        format!("attach-{pool}.key"),
        format!("attach-{pool}.not-after"),
    ]
}
/// The annotation with the rotation's phase.
pub const PHASE: &str = "treffpunkt.io/key-phase";
/// The annotation with when the phase began, in seconds since the Unix epoch.
pub const PHASE_SINCE: &str = "treffpunkt.io/key-phase-since";
/// How often a replica reads the Secret again.
pub const FOLLOW_INTERVAL: Duration = Duration::from_secs(10);

/// Where a rotation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// One key.
    Stable,
    /// A new key is accepted; the old one signs.
    Announced,
    /// The new key signs; the old one is accepted.
    Signing,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Self::Stable => "stable",
            Self::Announced => "announced",
            Self::Signing => "signing",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "announced" => Self::Announced,
            "signing" => Self::Signing,
            _ => Self::Stable,
        }
    }
}

/// How often the keys are rotated, and how far apart its steps are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// From one new key to the next.
    pub every: Duration,
    /// From one step of a rotation to the next.
    pub step: Duration,
}

impl Rotation {
    /// The step of ten minutes that suits a cluster.
    pub const STEP: Duration = Duration::from_secs(600);

    /// The phase that follows `phase`, begun at `since`, at `now` (seconds since the epoch),
    /// if it is time for it.
    pub fn next(&self, phase: Phase, since: u64, now: u64) -> Option<Phase> {
        let waited = Duration::from_secs(now.saturating_sub(since));
        match phase {
            Phase::Stable if waited >= self.every => Some(Phase::Announced),
            Phase::Announced if waited >= self.step => Some(Phase::Signing),
            Phase::Signing if waited >= self.step => Some(Phase::Stable),
            _ => None,
        }
    }
}

/// A key field's text in phase `to`, from its text `from` (its keys, the signing one first);
/// `fresh` makes a new key when one is announced.
pub fn rotated(from: &str, to: Phase, fresh: impl FnOnce() -> String) -> String {
    let keys: Vec<&str> = from
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .collect();
    match (to, keys.as_slice()) {
        (Phase::Announced, [signing, ..]) => format!("{signing},{}", fresh()),
        (Phase::Signing, [old, new, ..]) => format!("{new},{old}"),
        (Phase::Stable, [signing, ..]) => (*signing).to_owned(),
        // Written by hand in between: left as it is.
        _ => from.to_owned(),
    }
}

/// What a replica takes from the Secret at start.
pub struct Loaded {
    /// The keys of grants and tickets, followed from then on.
    pub keys: Keys,
    /// The admin endpoint's token, if the Secret has one.
    pub admin_token: Option<String>,
    /// The Attach port's certificate authority.
    pub authority: Authority,
}

/// Field `field` of `secret` as text, if it has it.
pub fn field_text(secret: &Secret, field: &str) -> Option<String> {
    let bytes = &secret.data.as_ref()?.get(field)?.0;
    Some(String::from_utf8_lossy(bytes).into_owned())
}

/// The authority in `secret`, if it has one.
fn authority(secret: &Secret) -> anyhow::Result<Option<Authority>> {
    let text = |field: &str| field_text(secret, field);
    match (text(AUTHORITY_CERT), text(AUTHORITY_KEY)) {
        (Some(cert), Some(key)) => Ok(Some(Authority::from_pem(&cert, &key)?)),
        _ => Ok(None),
    }
}

/// Gives Secret `name` what an earlier version did not make (a certificate authority, the
/// metrics token); returns the authority it has then.
async fn ensure_later_fields(secrets: &Api<Secret>, name: &str) -> anyhow::Result<Authority> {
    loop {
        let secret = secrets.get(name).await?;
        let has_token = field_text(&secret, METRICS_TOKEN).is_some();
        let mut fields = serde_json::Map::new();
        let authority = match authority(&secret)? {
            Some(authority) if has_token => return Ok(authority),
            Some(authority) => authority,
            None => {
                let authority = Authority::generate()?;
                fields.insert(AUTHORITY_CERT.to_owned(), authority.cert_pem().into());
                fields.insert(AUTHORITY_KEY.to_owned(), authority.key_pem().into());
                authority
            }
        };
        if !has_token {
            fields.insert(METRICS_TOKEN.to_owned(), random::hex(32).into());
        }
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": secret.metadata.resource_version},
            "stringData": fields,
        });
        match secrets
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                let made: Vec<&String> = fields.keys().collect();
                info!(%name, ?made, "gave the platform's keys what they lacked");
                return Ok(authority);
            }
            // Another replica gave it them meanwhile: take those.
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(error) => return Err(error.into()),
        }
    }
}

/// What the Secret holds.
struct Contents {
    grants: Keyring,
    tickets: Keyring,
    admin_token: Option<String>,
}

/// Reads the keys in `secret`.
fn contents(secret: &Secret) -> anyhow::Result<Contents> {
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    let text = |field: &str| field_text(secret, field);
    let keyring = |field: &str| -> anyhow::Result<Option<Keyring>> {
        text(field)
            .map(|text| Keyring::from_secrets(&text))
            .transpose()
            .with_context(|| format!("Secret {name}, key {field:?}"))
    };
    let grants =
        keyring(GRANT_KEY)?.ok_or_else(|| anyhow::anyhow!("Secret {name} has no key \"key\""))?;
    let tickets = match keyring(TICKET_KEY)? {
        Some(tickets) => tickets,
        None => {
            // A Secret made before tickets had a key of their own: derived from the grant key,
            // which the media nodes hold too.
            warn!(%name, "the Secret has no ticket key; delete it (and restart the control plane and the media nodes) to give tickets a key of their own");
            let mut derived = b"treffpunkt tickets: ".to_vec();
            derived.extend_from_slice(text(GRANT_KEY).unwrap_or_default().as_bytes());
            Keyring::from_secret(&derived)
        }
    };
    let admin_token = text(ADMIN_TOKEN)
        .and_then(|text| treffpunkt_proto::bearer::token(&text).map(str::to_owned));
    Ok(Contents {
        grants,
        tickets,
        admin_token,
    })
}

/// The keys, the admin token and the certificate authority from Secret `name` in `namespace`,
/// made first if there is none.
pub async fn load_or_create(
    client: &Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<Loaded> {
    let secrets = Api::<Secret>::namespaced(client.clone(), namespace);
    loop {
        if let Some(secret) = secrets.get_opt(name).await? {
            let contents = contents(&secret)?;
            if contents.admin_token.is_none() {
                warn!(%namespace, %name, "the Secret has no admin token (of at least 16 characters); the admin commands are off until it is made again");
            }
            return Ok(Loaded {
                keys: Keys::new(contents.grants, contents.tickets),
                admin_token: contents.admin_token,
                authority: ensure_later_fields(&secrets, name).await?,
            });
        }
        // As text, so that it can go into a file or an environment variable of the nodes.
        let field = |field: &str| (field.to_owned(), ByteString(random::hex(32).into_bytes()));
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                labels: Some(
                    [(reconcile::MANAGED_BY.0, reconcile::MANAGED_BY.1)]
                        .map(owned)
                        .into(),
                ),
                annotations: Some(
                    [
                        (PHASE, Phase::Stable.as_str()),
                        (PHASE_SINCE, &now_seconds().to_string()),
                    ]
                    .map(owned)
                    .into(),
                ),
                ..ObjectMeta::default()
            },
            data: Some(
                [
                    field(GRANT_KEY),
                    field(TICKET_KEY),
                    field(ADMIN_TOKEN),
                    field(METRICS_TOKEN),
                ]
                .into(),
            ),
            // The authority is added right after, by whichever replica reads the Secret first.
            type_: Some("Opaque".to_owned()),
            ..Secret::default()
        };
        match secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => info!(%namespace, %name, "created the platform's keys"),
            Err(kube::Error::Api(status)) if status.is_already_exists() => {}
            Err(error) => return Err(error.into()),
        }
    }
}

fn owned((key, value): (&str, &str)) -> (String, String) {
    (key.to_owned(), value.to_owned())
}

fn now_seconds() -> u64 {
    treffpunkt_proto::grant::now_unix_ms() / 1000
}

/// Reads Secret `name` every [`FOLLOW_INTERVAL`] and puts its keys into `keys` as they change.
pub async fn follow(client: Client, namespace: String, name: String, keys: Keys) {
    let secrets = Api::<Secret>::namespaced(client, &namespace);
    loop {
        tokio::time::sleep(FOLLOW_INTERVAL).await;
        let contents = match secrets.get(&name).await.map_err(anyhow::Error::from) {
            Ok(secret) => contents(&secret),
            Err(error) => Err(error),
        };
        match contents {
            Ok(contents) => {
                let ids = contents.grants.key_ids().join(",");
                let grants = keys.grants.set(contents.grants);
                if keys.tickets.set(contents.tickets) || grants {
                    info!(grant_keys = %ids, "the platform's keys changed");
                }
            }
            Err(error) => warn!(%error, "cannot read the platform's keys; keeping them"),
        }
    }
}

/// Rotates the keys of Secret `name` as `rotation` says, for as long as this replica leads.
pub async fn rotate(client: Client, namespace: String, name: String, rotation: Rotation) {
    let secrets = Api::<Secret>::namespaced(client, &namespace);
    let check = rotation.step.min(Duration::from_secs(10));
    loop {
        if let Err(error) = rotate_once(&secrets, &name, &rotation).await {
            warn!(%error, "could not rotate the platform's keys; trying again");
        }
        tokio::time::sleep(check).await;
    }
}

/// Takes the rotation one step further if it is time.
async fn rotate_once(secrets: &Api<Secret>, name: &str, rotation: &Rotation) -> anyhow::Result<()> {
    let secret = secrets.get(name).await?;
    let annotations = secret.metadata.annotations.clone().unwrap_or_default();
    let phase = Phase::parse(annotations.get(PHASE).map_or("", String::as_str));
    let since = annotations
        .get(PHASE_SINCE)
        .and_then(|since| since.parse().ok())
        .or_else(|| {
            let created = secret.metadata.creation_timestamp.as_ref()?;
            u64::try_from(created.0.as_second()).ok()
        })
        .unwrap_or(0);
    let now = now_seconds();
    let Some(to) = rotation.next(phase, since, now) else {
        return Ok(());
    };
    let data = secret.data.clone().unwrap_or_default();
    let field = |field: &str| -> String {
        let from = data
            .get(field)
            .map(|b| String::from_utf8_lossy(&b.0).into_owned());
        rotated(&from.unwrap_or_default(), to, || random::hex(32))
    };
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": secret.metadata.resource_version,
            "annotations": {PHASE: to.as_str(), PHASE_SINCE: now.to_string()},
        },
        "stringData": {GRANT_KEY: field(GRANT_KEY), TICKET_KEY: field(TICKET_KEY)},
    });
    match secrets
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => info!(phase = to.as_str(), "rotating the platform's keys"),
        // Changed in between (by another leader, or by hand): looked at again next time.
        Err(kube::Error::Api(status)) if status.code == 409 => debug!("the keys changed meanwhile"),
        Err(error) => return Err(error.into()),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_announces_then_signs_with_then_keeps_only_the_new_key() {
        let rotation = Rotation {
            every: Duration::from_secs(1000),
            step: Duration::from_secs(10),
        };
        assert_eq!(rotation.next(Phase::Stable, 0, 999), None);
        assert_eq!(
            rotation.next(Phase::Stable, 0, 1000),
            Some(Phase::Announced)
        );
        assert_eq!(rotation.next(Phase::Announced, 1000, 1009), None);
        assert_eq!(
            rotation.next(Phase::Announced, 1000, 1010),
            Some(Phase::Signing)
        );
        assert_eq!(
            rotation.next(Phase::Signing, 1010, 1020),
            Some(Phase::Stable)
        );

        let announced = rotated("old", Phase::Announced, || "new".to_owned());
        assert_eq!(announced, "old,new");
        let signing = rotated(&announced, Phase::Signing, || unreachable!());
        assert_eq!(signing, "new,old");
        assert_eq!(rotated(&signing, Phase::Stable, || unreachable!()), "new");
        // A field someone wrote by hand in between is left alone.
        assert_eq!(rotated("one", Phase::Signing, || unreachable!()), "one");
    }
}
