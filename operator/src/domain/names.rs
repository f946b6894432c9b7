//! Validated names: what a tenant, a room and a person may be called.
//!
//! Tenant and room names end up in URLs and, in a cluster, as Kubernetes object names, so they
//! follow the DNS label rules (RFC 1123). Display names are what people type; they are trimmed
//! and bounded, and control characters are refused so that nothing can forge a line in a log or
//! hide in another participant's tile.

use std::fmt;

use super::DomainError;

/// The longest DNS label, and so the longest tenant or room name.
pub const MAX_NAME_LEN: usize = 63;
/// The longest display name, in characters.
pub const MAX_DISPLAY_NAME_CHARS: usize = 64;

/// Names that no tenant may have, because the gateway uses them as the first path segment
/// itself. The one list: the Tenant CRD's validation rule is generated from it, and the
/// gateway serves no room page under these names.
pub const RESERVED_TENANT_NAMES: &[&str] = &["api", "assets", "healthz", "readyz", "metrics"];

fn check_dns_label(kind: &'static str, value: &str) -> Result<(), DomainError> {
    let invalid = |why: &'static str| DomainError::InvalidName {
        kind,
        value: value.chars().take(MAX_NAME_LEN + 1).collect(),
        why,
    };
    if value.is_empty() {
        return Err(invalid("it is empty"));
    }
    if value.len() > MAX_NAME_LEN {
        return Err(invalid("it is longer than 63 characters"));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(invalid("only a-z, 0-9 and '-' are allowed"));
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err(invalid("it must start and end with a letter or digit"));
    }
    Ok(())
}

macro_rules! dns_label_name {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Validates `value` as a DNS label.
            pub fn new(value: impl Into<String>) -> Result<Self, DomainError> {
                let value = value.into();
                check_dns_label($kind, &value)?;
                Ok(Self(value))
            }

            /// The name as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }
    };
}

dns_label_name!(
    /// The name of a tenant: a partner organisation or the city's public space.
    TenantName,
    "tenant"
);
dns_label_name!(
    /// The name of a room within its tenant.
    RoomName,
    "room"
);

/// What a participant is called in a meeting: trimmed, 1 to 64 characters, printable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisplayName(String);

impl DisplayName {
    /// Validates what a person typed as their name.
    pub fn new(value: &str) -> Result<Self, DomainError> {
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(DomainError::DisplayNameEmpty);
        }
        if trimmed.chars().count() > MAX_DISPLAY_NAME_CHARS {
            return Err(DomainError::DisplayNameTooLong {
                max: MAX_DISPLAY_NAME_CHARS,
            });
        }
        if trimmed.chars().any(char::is_control) {
            return Err(DomainError::DisplayNameInvalid);
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_follow_dns_labels() {
        assert!(RoomName::new("skat-club-2").is_ok());
        for bad in ["", "-a", "a-", "Upper", "a_b", "ä", &"x".repeat(64)] {
            assert!(RoomName::new(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(RoomName::new("x".repeat(63)).is_ok());
    }

    #[test]
    fn display_names_are_trimmed_and_bounded() {
        assert_eq!(DisplayName::new("  Anna  ").unwrap().as_str(), "Anna");
        assert_eq!(
            DisplayName::new("   "),
            Err(DomainError::DisplayNameEmpty),
            "blank names are refused"
        );
        assert!(
            DisplayName::new(&"ü".repeat(64)).is_ok(),
            "64 characters, not bytes"
        );
        assert_eq!(
            DisplayName::new(&"a".repeat(10_000)),
            Err(DomainError::DisplayNameTooLong { max: 64 })
        );
        assert_eq!(
            DisplayName::new("Eve\nadmin joined"),
            Err(DomainError::DisplayNameInvalid)
        );
    }
}
