//! A route's scope value (what tells users apart, often the credential
//! itself) as it appears in keys: an HMAC-SHA-256 of it under the cache's
//! secret, cut to 128 bits. Keys, the admin listing and traces hold that,
//! never the raw value; a shared store sees the same value from every
//! instance given the same secret.

use std::fmt;
use std::hash::{BuildHasher, Hasher};

use sha2::{Digest, Sha256};

/// The SHA-256 block size, the HMAC key's size.
const BLOCK: usize = 64;

/// The keyed hash of scope values: the inner and outer SHA-256 states of
/// an HMAC, absorbed once from the secret.
#[derive(Clone)]
pub(crate) struct ScopeHasher {
    inner: Sha256,
    outer: Sha256,
}

impl fmt::Debug for ScopeHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ScopeHasher(..)")
    }
}

impl ScopeHasher {
    /// The hasher for `secret` (any length; RFC 2104 hashes a longer one).
    pub(crate) fn new(secret: &[u8]) -> Self {
        let mut key = [0u8; BLOCK];
        if secret.len() > BLOCK {
            key[..32].copy_from_slice(&Sha256::digest(secret));
        } else {
            key[..secret.len()].copy_from_slice(secret);
        }
        let pad = |byte: u8| {
            let mut state = Sha256::new();
            state.update(key.map(|k| k ^ byte));
            state
        };
        Self {
            inner: pad(0x36),
            outer: pad(0x5c),
        }
    }

    /// A hasher with a secret of this process's own: random, so that no
    /// one who reads keys can test guesses of a scope value against them.
    pub(crate) fn random() -> Self {
        let mut secret = [0u8; 32];
        for chunk in secret.chunks_mut(8) {
            // SipHash under keys std draws from the system's randomness.
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(0x7363_6f70_6500_0000);
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
        Self::new(&secret)
    }

    /// The value keys hold for a scope (or a credential header's bytes,
    /// as they are): 32 hex digits (128 bits) of its HMAC.
    pub(crate) fn hash(&self, scope: impl AsRef<[u8]>) -> String {
        let mut inner = self.inner.clone();
        inner.update(scope.as_ref());
        let mut outer = self.outer.clone();
        outer.update(inner.finalize());
        let mac = outer.finalize();
        let mut out = String::with_capacity(32);
        for byte in &mac[..16] {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        out
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_is_hmac_sha256() {
        // RFC 4231, test case 2.
        let h = ScopeHasher::new(b"Jefe");
        assert_eq!(
            h.hash("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c7"
        );
        // A key longer than a block is hashed first (test case 6).
        let h = ScopeHasher::new(&[0xaa; 131]);
        assert_eq!(
            h.hash("Test Using Larger Than Block-Size Key - Hash Key First"),
            "60e431591ee0b67f0d8a26aacbf5b77f"
        );
    }

    #[test]
    fn random_secrets_differ_and_a_secret_is_stable() {
        let (a, b) = (ScopeHasher::random(), ScopeHasher::random());
        assert_ne!(a.hash("alice"), b.hash("alice"));
        assert_eq!(a.hash("alice"), a.clone().hash("alice"));
        assert_ne!(a.hash("alice"), a.hash("bob"));
        let shared = |s: &str| ScopeHasher::new(b"fleet secret").hash(s);
        assert_eq!(shared("alice"), shared("alice"));
    }
}
