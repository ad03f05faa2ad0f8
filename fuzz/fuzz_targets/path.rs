//! The canonical form of a path (what is keyed, and what a flush names).
//!
//! Input: the path, as text.
//!
//! Checks, against a model written from RFC 3986 (section 6.2.2): the
//! crate's test of canonical form is the model's; the canonical form of a
//! well-formed path is canonical, re-canonicalises to itself and means
//! what the path meant (the same bytes once decoded, dot segments
//! resolved and empty ones dropped); a canonical path is its own form.
//! (A path with a stray `%` is never keyed, and its form is not judged:
//! `/%6%61` becomes `/%6a`, which is not canonical.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_response_cache::fuzzing::{canonical_path, is_canonical_path, well_formed};

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~".contains(&b)
}

/// Canonical: every escape two upper-case hex digits of a byte that is
/// neither unreserved, nor `/`, nor NUL; no `.` or `..` segment; no empty
/// segment but a final one.
fn model_is_canonical(path: &str) -> bool {
    let b = path.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (Some(&h), Some(&l)) = (b.get(i + 1), b.get(i + 2)) else {
                return false;
            };
            let (Some(hv), Some(lv)) = (hex(h), hex(l)) else {
                return false;
            };
            let byte = hv * 16 + lv;
            if h.is_ascii_lowercase() || l.is_ascii_lowercase() {
                return false;
            }
            if unreserved(byte) || byte == b'/' || byte == 0 {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    // Called for paths that begin with `/` only.
    let rest = &path[1..];
    let segments: Vec<&str> = rest.split('/').collect();
    let (last, inner) = segments.split_last().expect("split yields one at least");
    !inner
        .iter()
        .any(|s| s.is_empty() || *s == "." || *s == "..")
        && *last != "."
        && *last != ".."
}

/// Every escape decoded.
fn decode(path: &str) -> Vec<u8> {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Decoded bytes, dot segments resolved and empty segments dropped.
fn meaning(path: &str) -> Vec<u8> {
    let decoded = decode(path);
    let mut kept: Vec<&[u8]> = Vec::new();
    for segment in decoded.split(|&b| b == b'/') {
        match segment {
            b"" | b"." => {}
            b".." => {
                kept.pop();
            }
            s => kept.push(s),
        }
    }
    let mut out = Vec::new();
    for s in kept {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let canonical = is_canonical_path(path);
    let form = canonical_path(path);
    // A request's path begins with `/` (or is `*`): only those are judged.
    if !path.starts_with('/') {
        return;
    }
    assert_eq!(canonical, model_is_canonical(path), "{path:?}");
    assert!(form.starts_with('/'), "{path:?} -> {form:?}");
    if canonical {
        assert_eq!(form, path, "a canonical path is its own form");
    }
    if well_formed(path) {
        assert_eq!(canonical_path(&form), form, "canonicalising {path:?} twice");
        assert!(
            is_canonical_path(&form),
            "{path:?} -> {form:?} is not canonical"
        );
        assert_eq!(
            meaning(&form),
            meaning(path),
            "{path:?} -> {form:?} means another path"
        );
    }
});
