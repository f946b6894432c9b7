//! How people get into a room, and what they bring to a protected one.

/// The Secret in a tenant's namespace that holds its own signing key (for invitations), and
/// the key within it. The operator makes it; deleting it makes the operator make a new one,
/// which revokes every invitation signed with the old.
pub const SIGNING_KEY_SECRET: &str = "treffpunkt-signing-key";
/// See [`SIGNING_KEY_SECRET`].
pub const SIGNING_KEY_FIELD: &str = "key";

/// How people get into a room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Access {
    /// Anyone with the address.
    #[default]
    Open,
    /// Anyone who knows the room's password (kept in a Secret of the tenant's namespace).
    Password,
    /// A moderator lets people in.
    Lobby,
    /// Only people with an invitation signed with the tenant's key.
    InviteOnly,
}

/// A key of a Secret in the tenant's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    /// The Secret's name.
    pub name: String,
    /// The key within it.
    pub key: String,
}

/// What a person brings to a protected room.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The password they typed.
    pub password: Option<String>,
    /// The invitation from their link.
    pub invite: Option<String>,
    /// The address they came from, to place them on a node near it; used for the join only,
    /// never stored.
    pub from: Option<std::net::IpAddr>,
}

/// Whether `typed` is the password `stored` (as a Secret holds it: a trailing line break, which
/// `kubectl create secret --from-file` keeps, does not count). Takes as long for every wrong
/// password of a length.
pub fn password_matches(stored: &[u8], typed: &str) -> bool {
    let stored = stored
        .strip_suffix(b"\n")
        .map_or(stored, |s| s.strip_suffix(b"\r").unwrap_or(s));
    let typed = typed.as_bytes();
    !stored.is_empty()
        && stored.len() == typed.len()
        && stored
            .iter()
            .zip(typed)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_matches_only_itself_with_or_without_the_files_line_break() {
        assert!(password_matches(b"Chorprobe", "Chorprobe"));
        assert!(password_matches(b"Chorprobe\n", "Chorprobe"));
        assert!(password_matches(b"Chorprobe\r\n", "Chorprobe"));
        assert!(!password_matches(b"Chorprobe", "chorprobe"));
        assert!(!password_matches(b"Chorprobe", "Chorprob"));
        assert!(!password_matches(b"Chorprobe", ""));
        assert!(!password_matches(b"", ""), "an empty Secret opens nothing");
    }
}
