//! The host's normal form (`Host` header or URI authority, as keys hold
//! it).
//!
//! Input: the host, as text.
//!
//! Checks: the normal form is normal (lower case, no default or empty
//! port, no final dot) and normalising it again changes nothing; a host
//! the fast path takes as normal is its own normal form; case never
//! matters.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_response_cache::fuzzing::{is_normal_host, normal_host};

fuzz_target!(|data: &[u8]| {
    let Ok(host) = std::str::from_utf8(data) else {
        return;
    };
    let normal = normal_host(host);
    if is_normal_host(host) {
        assert_eq!(
            normal.as_deref(),
            Some(host),
            "the fast path keys {host:?} as sent"
        );
    }
    assert_eq!(
        normal_host(&host.to_ascii_uppercase()),
        normal,
        "{host:?} in upper case"
    );
    let Some(normal) = normal else {
        return;
    };
    assert!(!normal.is_empty(), "{host:?}");
    assert!(
        !normal.bytes().any(|b| b.is_ascii_uppercase()),
        "{host:?} -> {normal:?}"
    );
    for end in [":80", ":443", ":", "."] {
        assert!(!normal.ends_with(end), "{host:?} -> {normal:?}");
    }
    assert_eq!(
        normal_host(&normal).as_deref(),
        Some(normal.as_str()),
        "normalising {host:?} twice"
    );
    assert!(
        is_normal_host(&normal),
        "{host:?} -> {normal:?} is not normal"
    );
});
