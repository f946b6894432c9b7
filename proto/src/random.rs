//! Random bytes and ids from the operating system's CSPRNG, for every part of Treffpunkt.
//!
//! Participant and session ids, resume tickets' session ids, signing keys, ICE credentials,
//! SSRCs and first sequence numbers all come from here, so that there is one source of
//! randomness to audit and none of them is guessable from another.
//!
//! The functions panic if the operating system cannot produce random bytes (`getrandom`
//! failing). That is not something input can cause: it means the process runs on a system
//! without a working random source, where no key or id it made would be safe, so stopping is
//! the only correct answer.

use ring::rand::{SecureRandom, SystemRandom};

/// Fills `buffer` with random bytes.
pub fn fill(buffer: &mut [u8]) {
    SystemRandom::new()
        .fill(buffer)
        .expect("the operating system's random source is available");
}

/// `N` random bytes.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut buffer = [0u8; N];
    fill(&mut buffer);
    buffer
}

/// `n_bytes` random bytes as lower-case hex (twice as many characters).
pub fn hex(n_bytes: usize) -> String {
    let mut buffer = vec![0u8; n_bytes];
    fill(&mut buffer);
    to_hex(&buffer)
}

/// `bytes` as lower-case hex.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random `u32`.
pub fn u32() -> u32 {
    u32::from_le_bytes(bytes())
}

/// A random `u64`.
pub fn u64() -> u64 {
    u64::from_le_bytes(bytes())
}

/// `len` random characters drawn from `alphabet` (ASCII; taking a byte modulo the alphabet's
/// length is slightly uneven, which does not matter for credentials this long).
pub fn text(len: usize, alphabet: &[u8]) -> String {
    let mut buffer = vec![0u8; len];
    fill(&mut buffer);
    buffer
        .iter()
        .map(|b| char::from(alphabet[usize::from(*b) % alphabet.len()]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids_have_the_asked_length_and_differ() {
        let first = hex(16);
        assert_eq!(first.len(), 32);
        assert!(
            first
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_ne!(first, hex(16), "two 128-bit ids do not collide");
        assert_eq!(hex(0), "");
        let word = text(16, b"ab");
        assert_eq!(word.len(), 16);
        assert!(word.chars().all(|c| c == 'a' || c == 'b'));
    }

    #[test]
    fn fixed_size_draws_are_not_constant() {
        assert_ne!(bytes::<32>(), [0u8; 32]);
        let draws: Vec<u64> = (0..4).map(|_| u64()).collect();
        assert!(draws.windows(2).any(|pair| pair[0] != pair[1]));
    }
}
