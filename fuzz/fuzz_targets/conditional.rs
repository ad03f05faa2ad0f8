//! Conditional requests answered from an entry: `If-None-Match` against
//! its `ETag`, else `If-Modified-Since` against its `Last-Modified`.
//!
//! Input: header lines: the request's `If-None-Match` and
//! `If-Modified-Since`, the entry's `ETag` and `Last-Modified` (the first
//! of each).
//!
//! Checks, against a parser of entity-tag lists written from RFC 9110
//! (sections 8.8.3 and 13.1.2): a 304 only when the client named the
//! entry's tag (weak comparison) or `*`; a 304 whenever it did, for tags
//! without commas; `If-None-Match` takes precedence; no validator, no
//! 304; dates compare as dates. (Tags holding commas or bytes beyond
//! ASCII may miss a 304: a full answer, never a wrong one.)
#![no_main]

use http::{header, HeaderMap};
use libfuzzer_sys::fuzz_target;
use tower_response_cache::fuzzing::not_modified;
use tower_response_cache_fuzz::header_map;

/// An entity-tag: weak or not, and its opaque bytes (quotes excluded).
type Tag = (bool, Vec<u8>);

enum Condition {
    Any,
    Tags(Vec<Tag>),
}

fn ows(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    i
}

/// One entity-tag at `i`: the tag and where it ends.
fn entity_tag(b: &[u8], mut i: usize) -> Option<(Tag, usize)> {
    let weak = b[i..].starts_with(b"W/");
    if weak {
        i += 2;
    }
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let start = i + 1;
    let len = b[start..].iter().position(|&c| c == b'"')?;
    let opaque = &b[start..start + len];
    if !opaque
        .iter()
        .all(|&c| c == 0x21 || (0x23..=0x7e).contains(&c) || c >= 0x80)
    {
        return None;
    }
    Some(((weak, opaque.to_vec()), start + len + 1))
}

fn single_tag(b: &[u8]) -> Option<Tag> {
    let i = ows(b, 0);
    let (tag, end) = entity_tag(b, i)?;
    (ows(b, end) == b.len()).then_some(tag)
}

/// `"*"` or a list of entity-tags (empty members allowed); `None` when
/// the value is neither.
fn condition(b: &[u8]) -> Option<Condition> {
    let start = ows(b, 0);
    let mut end = b.len();
    while end > start && (b[end - 1] == b' ' || b[end - 1] == b'\t') {
        end -= 1;
    }
    if &b[start..end] == b"*" {
        return Some(Condition::Any);
    }
    let mut tags = Vec::new();
    let mut i = 0;
    loop {
        i = ows(b, i);
        while i < b.len() && b[i] == b',' {
            i = ows(b, i + 1);
        }
        if i == b.len() {
            return Some(Condition::Tags(tags));
        }
        let (tag, after) = entity_tag(b, i)?;
        tags.push(tag);
        i = ows(b, after);
        if i < b.len() && b[i] != b',' {
            return None;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let all = header_map(data);
    let etag = all.get(header::ETAG);
    let last_modified = all.get(header::LAST_MODIFIED);
    let mut request = HeaderMap::new();
    for name in [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE] {
        for v in all.get_all(&name) {
            request.append(name.clone(), v.clone());
        }
    }
    let answer = not_modified(&request, etag, last_modified);
    let inm: Vec<_> = request.get_all(header::IF_NONE_MATCH).iter().collect();

    if inm.is_empty() {
        let date = |v: Option<&http::HeaderValue>| {
            v.and_then(|v| v.to_str().ok())
                .and_then(|s| httpdate::parse_http_date(s).ok())
        };
        let want = match (
            date(request.get(header::IF_MODIFIED_SINCE)),
            date(last_modified),
        ) {
            (Some(ims), Some(lm)) => lm <= ims,
            _ => false,
        };
        assert_eq!(
            answer, want,
            "If-Modified-Since {request:?} vs {last_modified:?}"
        );
        return;
    }
    let mut without_ims = request.clone();
    without_ims.remove(header::IF_MODIFIED_SINCE);
    assert_eq!(
        not_modified(&without_ims, etag, last_modified),
        answer,
        "If-None-Match takes precedence"
    );
    let Some(etag) = etag else {
        assert!(!answer, "304 with no ETag");
        return;
    };
    let (Some(mine), [line]) = (single_tag(etag.as_bytes()), inm.as_slice()) else {
        return;
    };
    let Some(wanted) = condition(line.as_bytes()) else {
        return;
    };
    let (reference, commas) = match &wanted {
        Condition::Any => (true, false),
        Condition::Tags(tags) => (
            tags.iter().any(|(_, opaque)| *opaque == mine.1),
            tags.iter().any(|(_, opaque)| opaque.contains(&b',')),
        ),
    };
    if answer {
        assert!(reference, "304 for {line:?} against {etag:?}");
    } else if !commas && !mine.1.contains(&b',') && line.to_str().is_ok() && etag.to_str().is_ok() {
        assert!(!reference, "no 304 for {line:?} against {etag:?}");
    }
});
