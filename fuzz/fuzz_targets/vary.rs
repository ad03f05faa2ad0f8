//! `Vary` and the variant keys it makes.
//!
//! Input: three blocks separated by `--` lines: the response's headers
//! (`Vary: ...` lines among them), then two requests' headers.
//!
//! Checks: the names read are sorted, distinct, each listed, and every
//! listed name is read (or the response is refused: `*`, a name that is
//! not one, a value that is not text); they read back the same from a
//! `Vary` made of them; and two requests select the same variant exactly
//! when, for every name, both lack the header or both send the same value
//! (field lines combined with commas, as RFC 9110 allows; credentials
//! compared line by line).
#![no_main]

use http::{header, HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tower_response_cache::fuzzing::{variant_key, vary_names};
use tower_response_cache_fuzz::{blocks, header_map, values};

/// What a request's headers are, for a variant of a response varying on
/// `names` (RFC 9111, section 4.1).
fn selection(names: &[HeaderName], request: &HeaderMap) -> Vec<Option<Vec<Vec<u8>>>> {
    names
        .iter()
        .map(|name| {
            let lines = values(request, name);
            if lines.is_empty() {
                return None;
            }
            let credential = name == header::AUTHORIZATION
                || name == header::PROXY_AUTHORIZATION
                || name == header::COOKIE;
            if credential {
                Some(lines.iter().map(|l| l.to_vec()).collect())
            } else {
                Some(vec![lines.join(&b","[..])])
            }
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let parts = blocks(data);
    let response = header_map(parts.first().copied().unwrap_or_default());
    let a = header_map(parts.get(1).copied().unwrap_or_default());
    let b = header_map(parts.get(2).copied().unwrap_or_default());

    let mut listed = Vec::new();
    let mut refused = false;
    for value in response.get_all(header::VARY) {
        let Ok(text) = value.to_str() else {
            refused = true;
            continue;
        };
        for member in text.split(',').map(str::trim).filter(|m| !m.is_empty()) {
            match HeaderName::from_bytes(member.as_bytes()) {
                Ok(name) if member != "*" => listed.push(name),
                _ => refused = true,
            }
        }
    }
    let Some(names) = vary_names(&response) else {
        assert!(refused, "a Vary of only names refused: {response:?}");
        return;
    };
    assert!(!refused, "{response:?} read as {names:?}");
    assert!(
        names.windows(2).all(|w| w[0].as_str() < w[1].as_str()),
        "{names:?}"
    );
    for name in &listed {
        assert!(names.contains(name), "{name} listed, not read: {names:?}");
    }
    for name in &names {
        assert!(listed.contains(name), "{name} read, not listed");
    }
    if !names.is_empty() {
        let joined: Vec<&str> = names.iter().map(HeaderName::as_str).collect();
        let mut again = HeaderMap::new();
        again.insert(
            header::VARY,
            HeaderValue::from_str(&joined.join(", ")).expect("names are a value"),
        );
        assert_eq!(vary_names(&again).as_ref(), Some(&names));
    }

    let (ka, kb) = (variant_key(&names, &a), variant_key(&names, &b));
    let (sa, sb) = (selection(&names, &a), selection(&names, &b));
    assert_eq!(
        ka == kb,
        sa == sb,
        "{names:?}: {a:?} vs {b:?}\n{ka:?}\n{kb:?}"
    );
});
