//! The bearer tokens of the HTTP endpoints that only the platform's own may read: the control
//! plane's admin commands, a media node's status and metrics. One check for both sides.

/// The fewest characters a token must have to be taken: shorter ones are refused as if unset.
pub const MIN_CHARS: usize = 16;

/// The token in `text` (a file's or a Secret field's contents), if it is long enough.
pub fn token(text: &str) -> Option<&str> {
    let token = text.trim();
    (token.len() >= MIN_CHARS).then_some(token)
}

/// Whether the `Authorization` header's value `authorization` carries `token` as a bearer
/// token, compared in a time that does not depend on where they differ.
pub fn carries(authorization: Option<&str>, token: &str) -> bool {
    let given = authorization
        .and_then(|value| value.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim();
    same(given.as_bytes(), token.as_bytes())
}

fn same(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_whole_token_passes() {
        let token = "0123456789abcdef";
        assert!(carries(Some("Bearer 0123456789abcdef"), token));
        assert!(carries(Some("Bearer 0123456789abcdef "), token));
        for other in [
            None,
            Some(""),
            Some("0123456789abcdef"),
            Some("Basic 0123456789abcdef"),
            Some("Bearer 0123456789abcde"),
            Some("Bearer 0123456789abcdef0"),
            Some("Bearer 1123456789abcdef"),
            Some("Bearer "),
        ] {
            assert!(!carries(other, token), "{other:?}");
        }
    }

    #[test]
    fn a_short_token_is_none() {
        assert_eq!(token(" 0123456789abcdef\n"), Some("0123456789abcdef"));
        assert_eq!(token("0123456789abcde"), None);
        assert_eq!(token("  \n"), None);
    }
}
