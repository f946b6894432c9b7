//! The seed file of standalone mode: Tenant and Room manifests in exactly the YAML that kubectl
//! takes, so that what a club writes for one machine works on a cluster unchanged.
//!
//! Secrets in a tenant's namespace are read too: a room's password (`passwordSecretRef`) and the
//! tenant's signing key for invitations (`treffpunkt-signing-key`, key `key`), with `data` in
//! base64 or `stringData` as text, as kubectl takes them. Documents of other kinds (a MediaPool,
//! a Secret elsewhere) are skipped with a note: they mean something only in a cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;

use crate::crd::{self, Room, Tenant};
use crate::domain;
use crate::store::TenantSecret;

/// Why a seed file was refused.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    /// The text is not YAML.
    #[error("the manifests are not valid YAML: {0}")]
    Yaml(String),
    /// A document does not fit its kind.
    #[error("document {index} ({kind}): {reason}")]
    Invalid {
        /// The document's position, from 1.
        index: usize,
        /// Its kind.
        kind: String,
        /// What is wrong.
        reason: String,
    },
}

/// What a seed file holds.
#[derive(Debug, Default)]
pub struct Seed {
    /// The tenants.
    pub tenants: Vec<domain::Tenant>,
    /// The rooms.
    pub rooms: Vec<domain::Room>,
    /// Secrets of the tenants' namespaces.
    pub secrets: Vec<TenantSecret>,
    /// Documents that were skipped, and why.
    pub skipped: Vec<String>,
}

/// Reads Tenant and Room manifests from YAML (several documents separated by `---`).
pub fn parse(text: &str) -> Result<Seed, SeedError> {
    let documents: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).map_err(|e| SeedError::Yaml(e.to_string()))?;
    let mut seed = Seed::default();
    let mut rooms = Vec::new();
    for (position, document) in documents.into_iter().enumerate() {
        let index = position + 1;
        if document.is_null() {
            continue;
        }
        let kind = document["kind"].as_str().unwrap_or_default().to_owned();
        let api_version = document["apiVersion"].as_str().unwrap_or_default();
        let invalid = |reason: String| SeedError::Invalid {
            index,
            kind: kind.clone(),
            reason,
        };
        if kind == "Secret" && api_version == "v1" {
            let secret: Secret =
                serde_json::from_value(document).map_err(|e| invalid(e.to_string()))?;
            match tenant_secret(secret) {
                Some(secret) => seed.secrets.push(secret),
                None => seed.skipped.push(format!(
                    "document {index}: a Secret outside any tenant's namespace"
                )),
            }
            continue;
        }
        if api_version != "treffpunkt.io/v1alpha1" {
            seed.skipped.push(format!(
                "document {index}: {kind} ({api_version}) is for a cluster"
            ));
            continue;
        }
        match kind.as_str() {
            "Tenant" => {
                let tenant: Tenant =
                    serde_json::from_value(document).map_err(|e| invalid(e.to_string()))?;
                let tenant = tenant
                    .to_domain()
                    .ok_or_else(|| invalid("metadata.name is not a valid tenant name".into()))?;
                seed.tenants.push(tenant);
            }
            "Room" => {
                let room: Room =
                    serde_json::from_value(document).map_err(|e| invalid(e.to_string()))?;
                let room = room.to_domain().ok_or_else(|| {
                    invalid(format!(
                        "a room needs a valid name and metadata.namespace {}<tenant>",
                        crd::TENANT_NAMESPACE_PREFIX
                    ))
                })?;
                rooms.push((index, room));
            }
            other => seed
                .skipped
                .push(format!("document {index}: {other} is for a cluster")),
        }
    }
    for secret in &seed.secrets {
        if !seed.tenants.iter().any(|t| t.name == secret.tenant) {
            return Err(SeedError::Invalid {
                index: 0,
                kind: "Secret".into(),
                reason: format!(
                    "{}: tenant {} is not in the manifests",
                    secret.name, secret.tenant
                ),
            });
        }
    }
    for (index, room) in rooms {
        if !seed.tenants.iter().any(|t| t.name == room.key.tenant) {
            return Err(SeedError::Invalid {
                index,
                kind: "Room".into(),
                reason: format!("tenant {} is not in the manifests", room.key.tenant),
            });
        }
        seed.rooms.push(room);
    }
    Ok(seed)
}

/// A Secret of a tenant's namespace, with `stringData` merged into `data` as kubectl does.
fn tenant_secret(secret: Secret) -> Option<TenantSecret> {
    let namespace = secret.metadata.namespace.as_deref()?;
    let tenant = domain::TenantName::new(crd::namespace_tenant(namespace)?).ok()?;
    let mut data: BTreeMap<String, Vec<u8>> = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| (key, value.0))
        .collect();
    for (key, value) in secret.string_data.unwrap_or_default() {
        data.insert(key, value.into_bytes());
    }
    Some(TenantSecret {
        tenant,
        name: secret.metadata.name?,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFESTS: &str = r#"
apiVersion: treffpunkt.io/v1alpha1
kind: Tenant
metadata:
  name: skatclub
spec:
  displayName: Skatclub Mittwoch
  limits:
    rooms: 3
    participantsPerRoom: 8
---
apiVersion: treffpunkt.io/v1alpha1
kind: Room
metadata:
  name: stammtisch
  namespace: tenant-skatclub
spec:
  displayName: Stammtisch
---
apiVersion: v1
kind: Secret
metadata:
  name: stammtisch-passwort
  namespace: tenant-skatclub
stringData:
  password: Herz-Dame
---
apiVersion: v1
kind: Secret
metadata:
  name: ignored
"#;

    #[test]
    fn tenants_and_rooms_are_read_and_cluster_kinds_skipped() {
        let seed = parse(MANIFESTS).unwrap();
        assert_eq!(seed.tenants.len(), 1);
        assert_eq!(seed.tenants[0].limits.max_participants_per_room, 8);
        assert_eq!(seed.rooms.len(), 1);
        assert_eq!(seed.rooms[0].key.to_string(), "skatclub/stammtisch");
        assert_eq!(seed.rooms[0].lifetime, domain::RoomLifetime::Persistent);
        assert_eq!(seed.skipped.len(), 1, "the Secret outside any tenant");
        assert_eq!(seed.secrets.len(), 1);
        assert_eq!(seed.secrets[0].data["password"], b"Herz-Dame");
    }

    #[test]
    fn bad_manifests_are_refused_with_the_document_named() {
        let orphan = "apiVersion: treffpunkt.io/v1alpha1\nkind: Room\nmetadata:\n  name: x\n  namespace: tenant-nobody\nspec: {}\n";
        let error = parse(orphan).unwrap_err().to_string();
        assert!(
            error.contains("document 1") && error.contains("nobody"),
            "{error}"
        );
        let no_spec = "apiVersion: treffpunkt.io/v1alpha1\nkind: Tenant\nmetadata:\n  name: x\n";
        assert!(parse(no_spec).is_err());
        assert!(matches!(parse("a: [unclosed"), Err(SeedError::Yaml(_))));
    }
}
