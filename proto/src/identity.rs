//! Who is who on the Attach port, when it runs mutual TLS: the names that the platform's
//! certificate authority writes into the certificates it issues, and that each side checks.

/// The name in every control-plane replica's certificate; a media node checks it.
pub const CONTROL_PLANE: &str = "control-plane.attach.treffpunkt.internal";

/// The name in the certificate of the media nodes of MediaPool `pool`: the control plane lets a
/// node register only for the pool its certificate names.
pub fn pool(pool: &str) -> String {
    format!("{pool}.pool.attach.treffpunkt.internal")
}

/// What separates a node's pool from its own name in its id. Kubernetes names (of pools and of
/// pods) never contain it, so an id names its pool without doubt.
const POOL_SEPARATOR: char = ':';

/// The id under which a node named `name` registers for `pool` when the Attach port runs mutual
/// TLS: `<pool>:<name>`. The control plane takes an id with certificates only in this form and
/// only for the pool the certificate names, so a node of one pool (a partner's) can never
/// register under the id of a node of another (the city's). A `name` already in that form is
/// kept.
pub fn node_id(pool: &str, name: &str) -> String {
    if name_in_pool(name, pool).is_some() {
        name.to_owned()
    } else {
        format!("{pool}{POOL_SEPARATOR}{name}")
    }
}

/// The node's own name in `node_id`, if the id is `pool`'s (`<pool>:<name>`, the name not
/// empty).
pub fn name_in_pool<'a>(node_id: &'a str, pool: &str) -> Option<&'a str> {
    node_id
        .strip_prefix(pool)?
        .strip_prefix(POOL_SEPARATOR)
        .filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_id_names_its_pool_without_doubt() {
        assert_eq!(node_id("city", "media-7f-x2"), "city:media-7f-x2");
        assert_eq!(node_id("city", "city:media-7f-x2"), "city:media-7f-x2");
        assert_eq!(
            name_in_pool("city:media-7f-x2", "city"),
            Some("media-7f-x2")
        );
        // A pool whose name begins like another's does not own that one's ids, nor the
        // other way round.
        assert_eq!(name_in_pool("city-b:media-1", "city"), None);
        assert_eq!(name_in_pool("city:b:media-1", "city-b"), None);
        assert_eq!(name_in_pool("city:", "city"), None);
        assert_eq!(name_in_pool("media-7f-x2", "city"), None);
    }
}
