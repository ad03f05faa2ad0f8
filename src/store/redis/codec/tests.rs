//! The codec's tests: round trips, the index prefix, and values that
//! must fail (cut, changed, moved).

use super::*;
use crate::invalidate::target::{key_hash, prefix_hash};
use crate::invalidate::Target;

fn parts() -> EntryParts {
    EntryParts {
        status: 200,
        headers: vec![
            (
                HeaderName::from_static("content-type"),
                HeaderValue::from_static("application/json"),
            ),
            (
                HeaderName::from_static("link"),
                HeaderValue::from_static("</a>; rel=next"),
            ),
            (
                HeaderName::from_static("x-n"),
                HeaderValue::from_static("1"),
            ),
            (
                HeaderName::from_static("link"),
                HeaderValue::from_static("</b>; rel=prev"),
            ),
            (
                HeaderName::from_static("etag"),
                HeaderValue::from_bytes(b"\"\xe9t\xe9\"").unwrap(),
            ),
        ],
        body: Bytes::from_static(b"{\"id\":42}"),
        born: 1 << 40,
        key_hash: key_hash("GET /products/42?a=1"),
        born_ms: 1_700_000_000_123,
        fresh_until_ms: 1_700_000_060_123,
        stale_while_revalidate_until_ms: 1_700_000_070_123,
        grace_until_ms: 1_700_000_090_123,
        stale_if_error_until_ms: 1_700_000_080_123,
        lean: true,
        path: "/products/42".into(),
        tags: vec!["products".into(), "catalogue".into()],
        full_key: None,
        vary: None,
    }
}

fn round_trip(parts: EntryParts) -> (Entry, Entry) {
    let key = "trc:e:some-key";
    let entry = Entry::from_parts(parts, key.len()).unwrap();
    let bytes = encode(&entry, key).unwrap();
    let back = decode(Bytes::from(bytes), key, key.len()).unwrap();
    (entry, back)
}

fn assert_same(a: &Entry, b: &Entry) {
    let headers = |e: &Entry| -> Vec<(HeaderName, HeaderValue)> {
        e.headers().map(|(n, v)| (n.clone(), v.clone())).collect()
    };
    assert_eq!(a.status(), b.status());
    assert_eq!(headers(a), headers(b));
    assert_eq!(a.body(), b.body());
    assert_eq!(a.born(), b.born());
    assert_eq!(a.key_hash(), b.key_hash());
    assert_eq!(a.born_ms(), b.born_ms());
    assert_eq!(a.fresh_until_ms(), b.fresh_until_ms());
    assert_eq!(
        a.stale_while_revalidate_until_ms(),
        b.stale_while_revalidate_until_ms()
    );
    assert_eq!(a.grace_until_ms(), b.grace_until_ms());
    assert_eq!(a.stale_if_error_until_ms(), b.stale_if_error_until_ms());
    assert_eq!(a.lean_headers(), b.lean_headers());
    assert_eq!(a.path(), b.path());
    assert_eq!(a.tags().collect::<Vec<_>>(), b.tags().collect::<Vec<_>>());
    assert_eq!(a.full_key(), b.full_key());
    assert_eq!(a.vary(), b.vary());
    assert_eq!(a.weight(), b.weight());
}

#[test]
fn round_trips_repeated_headers_in_order() {
    let (a, b) = round_trip(parts());
    assert_same(&a, &b);
    let links: Vec<_> = b
        .headers()
        .filter(|(n, _)| n.as_str() == "link")
        .map(|(_, v)| v.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(links, ["</a>; rel=next", "</b>; rel=prev"]);
}

#[test]
fn round_trips_an_empty_body_and_no_headers() {
    let mut p = parts();
    p.body = Bytes::new();
    p.headers.clear();
    p.tags.clear();
    p.status = 204;
    let (a, b) = round_trip(p);
    assert_same(&a, &b);
    assert!(b.body().is_empty());
}

#[test]
fn round_trips_a_vary_marker() {
    let mut p = parts();
    p.body = Bytes::new();
    p.vary = Some(vec![
        HeaderName::from_static("accept-encoding"),
        HeaderName::from_static("accept-language"),
    ]);
    let (a, b) = round_trip(p);
    assert_same(&a, &b);
    assert_eq!(b.vary().unwrap().len(), 2);
}

#[test]
fn round_trips_a_hashed_full_key_and_a_large_body() {
    let mut p = parts();
    let full_key = format!("GET /search?q={}", "x".repeat(5000));
    p.full_key = Some(full_key.clone());
    p.body = Bytes::from(vec![7u8; 1 << 20]);
    let (a, b) = round_trip(p);
    assert_same(&a, &b);
    assert_eq!(b.full_key(), Some(full_key.as_str()));
    assert_eq!(b.body().len(), 1 << 20);
}

#[test]
fn prefix_holds_born_and_every_covering_hash() {
    let entry = Entry::from_parts(parts(), 3).unwrap();
    let bytes = encode(&entry, "{trc}:e:k").unwrap();
    assert_eq!(bytes[0], VERSION);
    assert_eq!(u64::from_be_bytes(bytes[1..9].try_into().unwrap()), 1 << 40);
    let n = u16::from_be_bytes(bytes[9..11].try_into().unwrap()) as usize;
    let hashes: Vec<u64> = (0..n)
        .map(|i| {
            let at = PREFIX_LEN + i * 8;
            u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap())
        })
        .collect();
    assert_eq!(
        hashes,
        [
            entry.key_hash(),
            prefix_hash("/"),
            prefix_hash("/products"),
            prefix_hash("/products/42"),
            Target::tag("products").hash(),
            Target::tag("catalogue").hash(),
        ]
    );
    assert_eq!(hashes[2], Target::prefix("/products/").hash());
}

#[test]
fn paths_too_deep_are_not_encoded() {
    let mut p = parts();
    p.path = "/a".repeat(MAX_HASHES);
    assert!(encode(&Entry::from_parts(p, 3).unwrap(), "{trc}:e:k").is_none());
    let mut p = parts();
    p.path = "/a".repeat(MAX_HASHES - 4);
    p.tags.clear();
    assert!(encode(&Entry::from_parts(p, 3).unwrap(), "{trc}:e:k").is_some());
}

#[test]
fn corrupt_values_are_errors() {
    let entry = Entry::from_parts(parts(), 3).unwrap();
    let bytes = encode(&entry, "{trc}:e:k").unwrap();
    let mut other = bytes.clone();
    other[0] = 9;
    assert_eq!(
        decode(Bytes::from(other), "{trc}:e:k", 3).unwrap_err(),
        DecodeError::Version(9)
    );
    // Cut before the body starts: somewhere inside the headers.
    for cut in [0, 1, 5, 11, 40, 80] {
        assert!(decode(Bytes::copy_from_slice(&bytes[..cut]), "{trc}:e:k", 3).is_err());
    }
    let mut bad_status = parts();
    bad_status.status = 200;
    let e = Entry::from_parts(bad_status, 3).unwrap();
    let mut b = encode(&e, "{trc}:e:k").unwrap();
    let at = PREFIX_LEN + 6 * 8 + SEAL_LEN;
    // status 200 is the varint c8 01; make it 99 (invalid).
    assert_eq!(&b[at..at + 2], &[0xc8, 0x01]);
    b[at] = 99;
    b.remove(at + 1);
    assert!(decode(Bytes::from(b), "{trc}:e:k", 3).is_err());
    assert!(decode(Bytes::from_static(b"not an entry"), "{trc}:e:k", 3).is_err());
}

#[test]
fn a_value_changed_or_moved_fails_its_seal() {
    let entry = Entry::from_parts(parts(), 3).unwrap();
    let bytes = encode(&entry, "{trc}:e:k").unwrap();
    assert!(decode(Bytes::from(bytes.clone()), "{trc}:e:k", 3).is_ok());
    // Copied to another key, or another namespace.
    for key in ["{trc}:e:other", "{other}:e:k"] {
        let e = decode(Bytes::from(bytes.clone()), key, 3).unwrap_err();
        assert_eq!(e, DecodeError::Seal, "{key}");
    }
    // The body cut, extended, or one byte of it changed.
    let mut cut = bytes.clone();
    cut.pop();
    let mut longer = bytes.clone();
    longer.push(b'!');
    let mut changed = bytes.clone();
    *changed.last_mut().unwrap() ^= 1;
    for value in [cut, longer, changed] {
        let e = decode(Bytes::from(value), "{trc}:e:k", 3).unwrap_err();
        assert_eq!(e, DecodeError::Seal);
    }
}
