//! Who is who on the Attach port, when it runs mutual TLS: the names that the platform's
//! certificate authority writes into the certificates it issues, and that each side checks.

/// The name in every control-plane replica's certificate; a media node checks it.
pub const CONTROL_PLANE: &str = "control-plane.attach.treffpunkt.internal";

/// The name in the certificate of the media nodes of MediaPool `pool`: the control plane lets a
/// node register only for the pool its certificate names.
pub fn pool(pool: &str) -> String {
    format!("{pool}.pool.attach.treffpunkt.internal")
}
