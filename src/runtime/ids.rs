//! Identifiers and secrets: random runtime ids and session keys from the OS CSPRNG, and
//! DNS-safe names derived from arbitrary session ids (which may be mixed-case base62).

use sha2::{Digest, Sha256};

/// 128 random bits, lower-case hex: safe as a DNS label, a label value, and a path segment.
pub fn new_runtime_id() -> String {
    random_hex::<16>()
}

/// 256 random bits for the sandbox's `SESSION_API_KEY`.
pub fn new_session_key() -> String {
    random_hex::<32>()
}

fn random_hex<const N: usize>() -> String {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the OS random number generator is unavailable");
    hex::encode(buf)
}

/// A stable, case-sensitive digest of a session id: `Abc` and `abc` get different hashes, so they
/// stay different sessions once lower-cased DNS names are derived from them. 40 hex chars (160 bits)
/// fit in a label value and leave room for prefixes in a 63-char name.
pub fn session_hash(session_id: &str) -> String {
    let digest = Sha256::digest(session_id.as_bytes());
    hex::encode(&digest[..20])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_and_unique() {
        let a = new_runtime_id();
        let b = new_runtime_id();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
        assert_eq!(new_session_key().len(), 64);
    }

    #[test]
    fn session_hash_is_case_sensitive_and_stable() {
        assert_eq!(session_hash("AbC"), session_hash("AbC"));
        assert_ne!(session_hash("AbC"), session_hash("abc"));
        assert_eq!(session_hash("x").len(), 40);
    }
}
