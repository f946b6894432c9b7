//! Validated names: what a tenant, a room and a person may be called.
//!
//! Tenant and room names end up in URLs and, in a cluster, as Kubernetes object names, so they
//! follow the DNS label rules (RFC 1123). Display names are what people type; they are trimmed
//! and bounded, and control characters are refused so that nothing can forge a line in a log or
//! hide in another participant's tile. So are names that show nothing (only zero-width spaces,
//! joiners, format characters, combining marks or blank fillers: a participant nobody can see
//! in the list) and names with bidirectional controls (overrides, embeddings, isolates and
//! marks), which reorder the text around them: "Anna\u{202E}nimdA" shows as "AnnaAdmin".

use std::fmt;

use unicode_width::UnicodeWidthChar;

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

/// Whether `value` can name a Kubernetes object such as a pod (an RFC 1123 subdomain: at most
/// 253 of a-z, 0-9, '-' and '.', beginning and ending with a letter or digit). Checked before a
/// name from outside goes into a path of the API server.
pub fn is_object_name(value: &str) -> bool {
    let alphanumeric = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (1..=253).contains(&value.len())
        && value
            .bytes()
            .all(|b| alphanumeric(b) || b == b'-' || b == b'.')
        && value.bytes().next().is_some_and(alphanumeric)
        && value.bytes().last().is_some_and(alphanumeric)
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
        if trimmed
            .chars()
            .any(|c| c.is_control() || is_bidi_control(c))
        {
            return Err(DomainError::DisplayNameInvalid);
        }
        if trimmed.chars().all(is_invisible) {
            return Err(DomainError::DisplayNameInvalid);
        }
        Ok(Self(trimmed.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether `c` changes the direction of the text around it: the Arabic letter mark, the
/// left-to-right and right-to-left marks, embeddings and overrides (U+202A-U+202E) and isolates
/// (U+2066-U+2069).
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Whether `c` shows nothing on its own: white space, a character of zero width (Unicode's
/// default-ignorable code points, such as zero-width spaces, joiners, format characters and
/// variation selectors, and the marks that extend a grapheme, such as combining accents), and
/// the blank fillers that have a width but no ink.
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || c.width() == Some(0)
        // HANGUL CHOSEONG FILLER is wide but empty; BRAILLE PATTERN BLANK is an empty cell.
        || matches!(c, '\u{115F}' | '\u{2800}')
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
    fn only_what_can_name_a_pod_goes_to_the_api_server() {
        for name in ["treffpunkt-media-default-6c9f7d8b5-x2l4q", "a", "node.b-1"] {
            assert!(is_object_name(name), "{name}");
        }
        let long = "a".repeat(254);
        for name in [
            "",
            "../secrets/keys",
            "a/b",
            "Node",
            "-a",
            "a.",
            "a?watch=1",
            &long,
        ] {
            assert!(!is_object_name(name), "{name}");
        }
    }

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

    #[test]
    fn names_that_show_nothing_are_refused() {
        for invisible in [
            "\u{200B}",                   // zero-width space
            "\u{200B}\u{200C}\u{200D}",   // zero-width space, non-joiner, joiner
            "\u{2060}\u{FEFF}",           // word joiner, zero-width no-break space
            "\u{00AD}",                   // soft hyphen
            "\u{034F}\u{FE0F}",           // combining grapheme joiner, variation selector
            "\u{0301}\u{0308}\u{20DD}",   // combining marks with nothing to combine with
            "\u{3164}\u{3164}",           // Hangul fillers
            "\u{115F}\u{1160}",           // Hangul choseong and jungseong fillers
            "\u{2800}",                   // braille pattern blank
            "\u{E0041}\u{E0064}",         // tag characters
            "\u{200B} \u{3000} \u{200B}", // invisible characters between spaces
        ] {
            assert_eq!(
                DisplayName::new(invisible),
                Err(DomainError::DisplayNameInvalid),
                "{invisible:?} must be refused"
            );
        }
    }

    #[test]
    fn names_with_bidirectional_controls_are_refused() {
        for reordering in [
            "Anna\u{202E}nimdA",   // right-to-left override
            "\u{202A}Ben\u{202C}", // left-to-right embedding and pop
            "\u{202B}Cem",         // right-to-left embedding
            "\u{202D}Dora",        // left-to-right override
            "\u{2066}Eva\u{2069}", // left-to-right isolate and pop
            "\u{2067}Fritz",       // right-to-left isolate
            "\u{2068}Gül\u{2069}", // first-strong isolate
            "Hanna\u{200F}",       // right-to-left mark
            "\u{200E}Ida",         // left-to-right mark
            "\u{061C}Jana",        // Arabic letter mark
        ] {
            assert_eq!(
                DisplayName::new(reordering),
                Err(DomainError::DisplayNameInvalid),
                "{reordering:?} must be refused"
            );
        }
    }

    #[test]
    fn real_names_in_any_script_with_marks_and_joiners_are_kept() {
        for name in [
            "Zoë",
            "Jose\u{0301}", // a base letter with a combining accent
            "محمد",
            "שרה",
            "李小龍",
            "Ψάπφω",
            "देवनागरी",           // Devanagari with its vowel signs
            "Anna 👩\u{200D}💻", // an emoji joined with a zero-width joiner
            "Ali \u{3164}",      // a visible name beside a filler
        ] {
            assert!(DisplayName::new(name).is_ok(), "{name:?} must be kept");
        }
    }
}
