//! The certificate each MediaPool's media nodes show on the Attach port: issued by the
//! platform's authority for the pool's name, kept in the platform's keys Secret
//! (`attach-<pool>.crt`, `.key`, `.not-after`), from which the pool's pods mount it, and issued
//! anew when half its life has passed. The pods' files follow the Secret, and a node reads them
//! for each new connection, so renewal cuts no call: a connection that is up stays up.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Map, Value, json};
use tracing::info;
use treffpunkt_proto::identity;

use super::{Context, Result};
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
    let data = secret.data.unwrap_or_default();
    let current = data
        .get(&not_after)
        .and_then(|text| String::from_utf8_lossy(&text.0).trim().parse().ok());
    let present = data.contains_key(&cert) && data.contains_key(&key);
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

/// Removes `pool`'s certificate: the pool is gone.
pub async fn forget(pool: &str, ctx: &Context) -> Result<()> {
    let fields: Map<String, Value> = keys::pool_fields(pool)
        .into_iter()
        .map(|field| (field, Value::Null))
        .collect();
    let patch = json!({ "data": fields });
    let name = &ctx.settings.grant_key_secret;
    secrets(ctx)
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
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
