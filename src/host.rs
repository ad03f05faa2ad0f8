//! The host a request names, in the one form keys hold it: ASCII lower
//! case, without a default port (`:80`, `:443`), an empty port or a final
//! dot. `ACME.example:80` and `acme.example` are one origin's entries.

use crate::key::KeyError;

/// The bytes a host (a name, an IP literal, a port) may hold.
#[inline]
fn host_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b':' | b'[' | b']' | b'_')
}

/// Whether a host is as keys hold it already: lower-case, without a
/// default port or a trailing dot, of the bytes a host may hold.
#[inline]
pub(crate) fn is_normal_host(host: &str) -> bool {
    let b = host.as_bytes();
    !b.is_empty()
        && b.iter().all(|&c| host_byte(c) && !c.is_ascii_uppercase())
        && !b.ends_with(b":80")
        && !b.ends_with(b":443")
        && !b.ends_with(b".")
        && !b.ends_with(b":")
}

/// A host as keys hold it: ASCII lower-case, without a default port
/// (`:80`, `:443`), an empty port or a trailing dot. `Err` when it holds
/// bytes no host may.
pub(crate) fn normal_host(host: &str) -> Result<String, KeyError> {
    let mut h = host.trim().to_ascii_lowercase();
    if h.is_empty() || !h.bytes().all(host_byte) {
        return Err(KeyError::Malformed);
    }
    for port in [":80", ":443", ":"] {
        if let Some(rest) = h.strip_suffix(port) {
            h.truncate(rest.len());
            break;
        }
    }
    while h.ends_with('.') {
        h.pop();
    }
    if h.is_empty() {
        return Err(KeyError::Malformed);
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_keyed_in_one_form() {
        for (raw, normal) in [
            ("acme.example", "acme.example"),
            ("ACME.Example", "acme.example"),
            ("acme.example:80", "acme.example"),
            ("acme.example:443", "acme.example"),
            ("acme.example.", "acme.example"),
            ("acme.example:8080", "acme.example:8080"),
            ("[::1]:3000", "[::1]:3000"),
        ] {
            assert_eq!(normal_host(raw).unwrap(), normal, "{raw}");
            assert_eq!(is_normal_host(raw), raw == normal, "{raw}");
            assert!(is_normal_host(normal), "{normal}");
        }
        for bad in ["", "a b", "acme/x", "a\"b", ":80"] {
            assert!(normal_host(bad).is_err(), "{bad:?}");
            assert!(!is_normal_host(bad), "{bad:?}");
        }
    }
}
