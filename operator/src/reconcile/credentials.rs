//! The certificate each MediaPool's media nodes show on the Attach port: issued by the
//! platform's authority for the pool's name, kept in the platform's keys Secret
//! (`attach-<pool>.crt`, `.key`, `.not-after`), from which the pool's pods mount it, and issued
//! anew when half its life has passed. The pods' files follow the Secret, and a node reads them
//! for each new connection, so renewal cuts no call: a connection that is up stays up.
//!
//! An external pool's nodes run at a partner's site: their credential goes into the Secret
//! [`PARTNER_SECRET`] of the partner's tenant namespace, for its admins to fetch: the
//! authority's certificate (`ca.crt`), the pool's certificate and key (`<pool>.crt`,
//! `<pool>.key`, `<pool>.not-after`) and the grant key (`grant-key`), which follows the
//! rotation of the platform's.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Map, Value, json};
use tracing::info;
use treffpunkt_proto::identity;

use super::{Context, MANAGED_BY, Result};
use crate::crd::MediaPool;
use crate::fleet::tls::Authority;
use crate::keys;

/// How long a pool's certificate lasts; it is renewed after half of that.
pub const LIFETIME: Duration = Duration::from_secs(24 * 3600);

fn now_unix() -> u64 {
    treffpunkt_proto::grant::now_unix_ms() / 1000
}

fn secrets(ctx: &Context) -> Api<Secret> {
    Api::namespaced(ctx.client.clone(), &ctx.settings.platform_namespace)
}

/// Whether a certificate that expires at `not_after` is due for renewal at `now`.
pub fn due(not_after: Option<u64>, now: u64) -> bool {
    not_after.is_none_or(|not_after| now + LIFETIME.as_secs() / 2 >= not_after)
}

/// Issues `pool`'s nodes a certificate of `authority`, unless theirs is good for a while yet.
pub async fn ensure(pool: &str, ctx: &Context, authority: &Authority) -> Result<()> {
    let name = &ctx.settings.grant_key_secret;
    let secret = secrets(ctx).get(name).await?;
    let [cert, key, not_after] = keys::pool_fields(pool);
    let current = text(&secret, &not_after).and_then(|text| text.parse().ok());
    let present = text(&secret, &cert).is_some() && text(&secret, &key).is_some();
    if present && !due(current, now_unix()) {
        return Ok(());
    }
    let credential = authority.issue(&identity::pool(pool), LIFETIME, false)?;
    let patch = json!({
        "stringData": {
            cert: credential.cert_pem,
            key: credential.key_pem,
            not_after: credential.not_after.to_string(),
        },
    });
    secrets(ctx)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    info!(%pool, "issued the pool's nodes a certificate for the Attach port");
    Ok(())
}

/// The Secret in a partner's tenant namespace with its external pools' credentials.
pub const PARTNER_SECRET: &str = "treffpunkt-partner-nodes";

/// The fields of an external pool's credential in [`PARTNER_SECRET`].
fn partner_fields(pool: &str) -> [String; 3] {
    [
        format!("{pool}.crt"),
        format!("{pool}.key"),
        format!("{pool}.not-after"),
    ]
}

fn text(secret: &Secret, field: &str) -> Option<String> {
    keys::field_text(secret, field).map(|text| text.trim().to_owned())
}

/// Writes external `pool`'s credential into the namespace of `tenant`: a new certificate when
/// its own is due, and the platform's grant key as it is now.
pub async fn ensure_partner(
    pool: &str,
    tenant: &str,
    ctx: &Context,
    authority: &Authority,
) -> Result<()> {
    let namespace = crate::crd::tenant_namespace(tenant);
    let partner = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    let keys_secret = secrets(ctx).get(&ctx.settings.grant_key_secret).await?;
    let grant_key = text(&keys_secret, keys::GRANT_KEY).unwrap_or_default();
    let current = match partner.get_opt(PARTNER_SECRET).await? {
        Some(secret) => secret,
        None => {
            let secret = Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(PARTNER_SECRET.to_owned()),
                    labels: Some([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())].into()),
                    ..Default::default()
                },
                type_: Some("Opaque".to_owned()),
                ..Secret::default()
            };
            partner.create(&PostParams::default(), &secret).await?
        }
    };
    let [cert, key, not_after] = partner_fields(pool);
    let expires = text(&current, &not_after).and_then(|t| t.parse().ok());
    let mut fields = Map::new();
    if text(&current, &cert).is_none() || due(expires, now_unix()) {
        let credential = authority.issue(&identity::pool(pool), LIFETIME, false)?;
        fields.insert(cert, credential.cert_pem.into());
        fields.insert(key, credential.key_pem.into());
        fields.insert(not_after, credential.not_after.to_string().into());
        info!(%pool, %tenant, "issued the partner's nodes a certificate for the Attach port");
    }
    if text(&current, "ca.crt").as_deref() != Some(authority.cert_pem().trim()) {
        fields.insert("ca.crt".to_owned(), authority.cert_pem().into());
    }
    if text(&current, "grant-key") != Some(grant_key.clone()) {
        fields.insert("grant-key".to_owned(), grant_key.into());
    }
    if !fields.is_empty() {
        let patch = json!({ "stringData": fields });
        partner
            .patch(
                PARTNER_SECRET,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
    }
    Ok(())
}

/// Removes `pool`'s certificate: the pool is gone.
pub async fn forget(pool: &MediaPool, ctx: &Context) -> Result<()> {
    let name = pool.name_any();
    let nulls = |fields: [String; 3]| -> Map<String, Value> {
        fields
            .into_iter()
            .map(|field| (field, Value::Null))
            .collect()
    };
    let (api, secret, fields) = match (pool.spec.external, pool.spec.tenants.as_slice()) {
        (true, [tenant]) => (
            Api::namespaced(ctx.client.clone(), &crate::crd::tenant_namespace(tenant)),
            PARTNER_SECRET.to_owned(),
            partner_fields(&name),
        ),
        _ => (
            secrets(ctx),
            ctx.settings.grant_key_secret.clone(),
            keys::pool_fields(&name),
        ),
    };
    let patch = json!({ "data": nulls(fields) });
    match api
        .patch(&secret, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        // The partner's namespace, and so its Secret, may be gone first.
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_is_renewed_after_half_its_life() {
        let start = 1_000_000;
        let not_after = start + LIFETIME.as_secs();
        assert!(due(None, start), "none yet");
        assert!(!due(Some(not_after), start));
        assert!(!due(Some(not_after), start + LIFETIME.as_secs() / 2 - 1));
        assert!(due(Some(not_after), start + LIFETIME.as_secs() / 2));
    }
}
