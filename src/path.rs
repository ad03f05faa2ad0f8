//! One canonical form of a path, so that no spelling of a path escapes a
//! flush.
//!
//! A router that decodes (axum does, for its parameters) serves
//! `/products/caf%C3%A9` and `/products/caf%c3%a9` alike, and so are a
//! needlessly encoded unreserved character (`%61` for `a`), dot segments
//! (`/files/d1/./readme`) and, on catch-all routes, empty ones
//! (`/files/d2//readme`). The cache cannot know which of these its origin
//! treats alike, and storing one spelling's answer under another's key would
//! let a client choose what others are served. So:
//!
//! - only a path already in canonical form is keyed; any other spelling is
//!   served by the origin, uncached ([`is_canonical`]);
//! - a flush takes the canonical form of the path it names
//!   ([`canonical`]): whichever spelling a write used, the entries stored
//!   under the canonical spelling go.
//!
//! Canonical means (RFC 3986, section 6.2.2): percent-encodings in upper
//! case, no encoded unreserved character, no encoded `/`, no `.` or `..`
//! segment and no empty segment but a trailing one.

use std::borrow::Cow;

/// Whether a byte is unreserved (RFC 3986, section 2.3): never encoded in
/// canonical form.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Whether `path` may need a closer look: it holds a `%`, a `.` or `//`.
/// Eight bytes at a time, inline (the fast path asks it of every hit); a
/// `true` may be a false alarm, a `false` never is.
#[inline(always)]
fn might_not_be_canonical(b: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGHS: u64 = ONES << 7;
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut slash_before = false;
    let mut words = b.chunks_exact(8);
    for word in words.by_ref() {
        let x = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        if zero(x ^ (ONES * u64::from(b'%'))) | zero(x ^ (ONES * u64::from(b'.'))) != 0 {
            return true;
        }
        let slashes = zero(x ^ (ONES * u64::from(b'/')));
        if slashes & (slashes << 8) != 0 || (slash_before && slashes & 0x80 != 0) {
            return true;
        }
        slash_before = slashes >> 63 != 0;
    }
    for &c in words.remainder() {
        if c == b'%' || c == b'.' || (slash_before && c == b'/') {
            return true;
        }
        slash_before = c == b'/';
    }
    false
}

/// Whether a path is in canonical form (see the module docs).
#[inline]
pub(crate) fn is_canonical(path: &str) -> bool {
    let b = path.as_bytes();
    !might_not_be_canonical(b) || looks_canonical(b)
}

/// The full check, for paths with a `%`, a `.` or `//`.
#[inline(never)]
fn looks_canonical(b: &[u8]) -> bool {
    let dot_segment = |s: &[u8]| s == b"." || s == b"..";
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let (Some(&h), Some(&l)) = (b.get(i + 1), b.get(i + 2)) else {
                    return false;
                };
                let (Some(hv), Some(lv)) = (hex(h), hex(l)) else {
                    return false;
                };
                let byte = hv << 4 | lv;
                let never = unreserved(byte) || byte == b'/' || byte == 0;
                if h.is_ascii_lowercase() || l.is_ascii_lowercase() || never {
                    return false;
                }
                i += 3;
                continue;
            }
            b'/' => {
                let segment = &b[start..i];
                if i > 0 && (segment.is_empty() || dot_segment(segment)) {
                    return false;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    !dot_segment(&b[start..])
}

/// The canonical form of a path a flush names: percent-encodings upper
/// case, unreserved characters and `/` decoded, dot segments resolved,
/// empty segments dropped. A path already canonical is returned as it is.
pub(crate) fn canonical(path: &str) -> Cow<'_, str> {
    if is_canonical(path) && !path.ends_with("//") {
        return Cow::Borrowed(path);
    }
    // Percent-encodings first: `%2E%2E` is a dot segment too.
    let b = path.as_bytes();
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let (Some(hv), Some(lv)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                let byte = hv << 4 | lv;
                if unreserved(byte) || byte == b'/' {
                    decoded.push(byte);
                } else {
                    decoded.push(b'%');
                    decoded
                        .extend_from_slice(&[b[i + 1], b[i + 2]].map(|c| c.to_ascii_uppercase()));
                }
                i += 3;
                continue;
            }
        }
        decoded.push(b[i]);
        i += 1;
    }
    // Every byte pushed is ASCII or came from valid UTF-8 unchanged.
    let decoded = String::from_utf8_lossy(&decoded);
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &segments {
        out.push('/');
        out.push_str(segment);
    }
    if out.is_empty() {
        out.push('/');
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_paths_are_keyed_and_others_are_not() {
        for path in [
            "/",
            "/products",
            "/products/",
            "/products/caf%C3%A9",
            "/files/a%20b",
            "/p%3Fq",
            "/a-b_c~d",
            "/file.txt",
            "/v1.2/items",
            "/a/..b/c.",
            "/aaaaaaaa/bbbbbbb/cccccccc",
        ] {
            assert!(is_canonical(path), "{path}");
            assert_eq!(canonical(path), path, "{path}");
        }
        for path in [
            "/products/caf%c3%a9",
            "/products/%61",
            "/products/%2E",
            "/files/a%2Fb",
            "/files/d1/./readme",
            "/files/d1/../readme",
            "/files/d2//readme",
            "//",
            "/a/.",
            "/a/..",
            "/aaaaaaa//bbbbbbb",
            "/aaaaaaaa//bbbbbbb",
            "/%",
            "/%zz",
        ] {
            assert!(!is_canonical(path), "{path}");
        }
    }

    #[test]
    fn every_spelling_flushes_one_form() {
        for (spelling, form) in [
            ("/products/caf%c3%a9", "/products/caf%C3%A9"),
            ("/products/caf%C3%A9", "/products/caf%C3%A9"),
            ("/products/%61pple", "/products/apple"),
            ("/files/d1/./readme", "/files/d1/readme"),
            ("/files/d1/x/../readme", "/files/d1/readme"),
            ("/files/d2//readme", "/files/d2/readme"),
            ("/files/a%2Fb", "/files/a/b"),
            ("/files/%2E%2E/etc", "/etc"),
            ("/../..", "/"),
            ("//", "/"),
        ] {
            assert_eq!(canonical(spelling), form, "{spelling}");
            assert!(is_canonical(&canonical(spelling)), "{spelling}");
        }
    }
}
