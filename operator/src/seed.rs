//! The seed file of standalone mode: Tenant and Room manifests in exactly the YAML that kubectl
//! takes, so that what a club writes for one machine works on a cluster unchanged.
//!
//! Documents of other kinds (a Secret, a MediaPool) are skipped with a note: they mean something
//! only in a cluster.

use crate::crd::{self, Room, Tenant};
use crate::domain;

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
        assert_eq!(seed.skipped.len(), 1);
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
