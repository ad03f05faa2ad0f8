//! The host a request names, in the one form keys hold it: ASCII lower
//! case, without a default port (`:80`, `:443`), an empty port or a final
//! dot. `ACME.example:80` and `acme.example` are one origin's entries.

use crate::key::KeyError;

/// The bytes a host (a name, an IP literal, a port) may hold.
#[inline]
const fn host_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b':' | b'[' | b']' | b'_')
}

/// A host's name and its port (`None`: no `:`): the port is what follows
/// the first `:` after the name (after an IP literal's `]`), and must be
/// digits; `None` when it is not, so that `a:80.` or `a:80:80` is refused
/// rather than kept in a form that is not normal.
#[inline]
fn split_port(host: &str) -> Option<(&str, Option<&str>)> {
    let after = host.rfind(']').map_or(0, |i| i + 1);
    match host[after..].find(':') {
        None => Some((host, None)),
        Some(i) => {
            let (name, port) = (&host[..after + i], &host[after + i + 1..]);
            port.bytes()
                .all(|b| b.is_ascii_digit())
                .then_some((name, Some(port)))
        }
    }
}

/// The bytes of a host as keys hold it: [`host_byte`]s but upper case.
static NORMAL_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = host_byte(b) && !b.is_ascii_uppercase();
        c += 1;
    }
    table
};

/// Whether a host is as keys hold it already: lower-case, without a
/// default port or a trailing dot, of the bytes a host may hold. One pass
/// over the bytes (this runs on every hit of a layer that keys hosts),
/// with the port found as [`split_port`] finds it: after the first `:`
/// that follows the last `]`.
#[inline]
pub(crate) fn is_normal_host(host: &str) -> bool {
    let bytes = host.as_bytes();
    let mut colon = None;
    for (i, &c) in bytes.iter().enumerate() {
        if !NORMAL_BYTE[usize::from(c)] {
            return false;
        }
        match c {
            b']' => colon = None,
            b':' if colon.is_none() => colon = Some(i),
            _ => {}
        }
    }
    let (name, port) = match colon {
        None => (bytes, None),
        Some(i) => (&bytes[..i], Some(&bytes[i + 1..])),
    };
    let port_ok =
        port.is_none_or(|p| p.iter().all(u8::is_ascii_digit) && !matches!(p, b"" | b"80" | b"443"));
    port_ok && !name.is_empty() && name.last() != Some(&b'.')
}

/// A host as keys hold it: ASCII lower-case, without a default port
/// (`:80`, `:443`), an empty port or a trailing dot. `Err` when it holds
/// bytes no host may, or a port that is not digits.
pub(crate) fn normal_host(host: &str) -> Result<String, KeyError> {
    let h = host.trim().to_ascii_lowercase();
    if !h.bytes().all(host_byte) {
        return Err(KeyError::Malformed);
    }
    let (name, port) = split_port(&h).ok_or(KeyError::Malformed)?;
    let name = name.trim_end_matches('.');
    if name.is_empty() {
        return Err(KeyError::Malformed);
    }
    let mut out = String::with_capacity(h.len());
    out.push_str(name);
    if let Some(port) = port.filter(|p| !matches!(*p, "" | "80" | "443")) {
        out.push(':');
        out.push_str(port);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every string of up to five bytes from the bytes that matter: the
    /// one-pass check says a host is normal exactly when normalising it
    /// gives it back.
    #[test]
    fn a_host_is_normal_exactly_when_normalising_keeps_it() {
        let alphabet = b"aZ.:[]8043- \x80";
        let mut host = Vec::new();
        fn each(host: &mut Vec<u8>, alphabet: &[u8], left: usize) {
            let text = String::from_utf8_lossy(host);
            let normal = normal_host(&text).is_ok_and(|n| n == text);
            assert_eq!(is_normal_host(&text), normal, "{text:?}");
            if left > 0 {
                for &c in alphabet {
                    host.push(c);
                    each(host, alphabet, left - 1);
                    host.pop();
                }
            }
        }
        each(&mut host, alphabet, 5);
    }

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
        for bad in [
            "",
            "a b",
            "acme/x",
            "a\"b",
            ":80",
            "acme.example:80.",
            "a:80:80",
            "a:x",
        ] {
            assert!(normal_host(bad).is_err(), "{bad:?}");
            assert!(!is_normal_host(bad), "{bad:?}");
        }
    }
}
