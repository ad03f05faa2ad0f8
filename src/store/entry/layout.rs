//! How an entry lays out its bytes: the body, the `Content-Length` digits,
//! the path, the key and the header values in one buffer; common header
//! sets as statics; and the weight of all of it as allocated.

use std::sync::OnceLock;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::{digits, Entry, EntryParts, Rare};

/// Bytes a stored item costs the memory store beyond the entry itself: its
/// slot (the `u64` key, the `Arc` pointer, eviction state and links) and its
/// share of the hash table, about 45 bytes, times the room the store's
/// tables keep for growth (they double: 1.4 times on average), as measured
/// with a counting allocator.
pub(crate) const STORE_SLOT: usize = 64;

/// Bytes the `bytes` crate allocates to share a buffer (its reference count).
const SHARED_BUFFER: usize = 24;

/// A header name the entry owns, and the heap bytes it holds. A standard
/// name is static and holds none. A name made at run time holds a buffer
/// of its own (`http` keeps it in `Bytes`): it is copied into one of
/// exactly its length, whatever the one it came in (a static, or a buffer
/// shared with the response sent), and shared at once, so that the first
/// hit's clone does not allocate the reference count later. It weighs its
/// length plus that count.
fn own_name(name: &HeaderName) -> (HeaderName, usize) {
    let copy = HeaderName::from_bytes(name.as_str().as_bytes()).expect("a valid name stays valid");
    // Standard names are the same static text, whichever way they are made.
    if copy.as_str().as_ptr() == name.as_str().as_ptr() {
        return (copy, 0);
    }
    drop(copy.clone());
    let heap = copy.as_str().len() + SHARED_BUFFER;
    (copy, heap)
}

/// Header values common enough that an entry refers to a static copy rather
/// than keeping its own bytes (no memory, and no reference count per hit).
pub(super) static COMMON_VALUES: [HeaderValue; 8] = [
    HeaderValue::from_static("application/json"),
    HeaderValue::from_static("application/json; charset=utf-8"),
    HeaderValue::from_static("text/plain; charset=utf-8"),
    HeaderValue::from_static("text/html; charset=utf-8"),
    HeaderValue::from_static("text/plain"),
    HeaderValue::from_static("text/html"),
    HeaderValue::from_static("application/octet-stream"),
    HeaderValue::from_static("gzip"),
];

pub(super) fn common_value(value: &HeaderValue) -> Option<usize> {
    if value.is_sensitive() {
        return None;
    }
    COMMON_VALUES
        .iter()
        .position(|c| c.as_bytes() == value.as_bytes())
}

/// The most common set of stored headers, a `Content-Type` alone (an ETag
/// aside), for each common value: an entry with such headers keeps no
/// header slice of its own.
pub(super) static COMMON_HEADERS: [[(HeaderName, HeaderValue); 1]; COMMON_VALUES.len()] = {
    const fn one(value: &'static str) -> [(HeaderName, HeaderValue); 1] {
        [(header::CONTENT_TYPE, HeaderValue::from_static(value))]
    }
    [
        one("application/json"),
        one("application/json; charset=utf-8"),
        one("text/plain; charset=utf-8"),
        one("text/html; charset=utf-8"),
        one("text/plain"),
        one("text/html"),
        one("application/octet-stream"),
        one("gzip"),
    ]
};

/// A response's head: its status, version, headers and extensions.
pub(crate) type ResponseHead = http::response::Parts;

/// `ETag`, as a static the entry's headers can borrow.
pub(super) static ETAG: HeaderName = header::ETAG;

/// For each common `Content-Type` and each [`Shape`], the head of the
/// usual hit, made once: a response head whose headers are that
/// `Content-Type`, then those the shape adds, then `Content-Length`, with
/// empty values to be set by position. The length is in the head so that
/// nothing outside (axum's router, which sets it from the body's size)
/// adds a header to the copy: the copy has room for its own headers only,
/// and a sixth makes it grow. Cloning it copies the names and their hashes rather than
/// hashing each name into a new map, and gives the response its head in
/// one piece.
static READY_HEADS: [[OnceLock<ResponseHead>; COMMON_VALUES.len()]; 3] =
    [const { [const { OnceLock::new() }; COMMON_VALUES.len()] }; 3];

/// Which headers a ready head has after its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// `ETag`, `Age`, `Cache-Status`: the default profile.
    Full = 0,
    /// `ETag`, `Age`: the lean profile, the origin having sent an `ETag`.
    LeanTagged = 1,
    /// `Age` alone: the lean profile, no `ETag`.
    Lean = 2,
}

/// A ready head and the values an answer sets in it.
pub(crate) struct Ready<'a> {
    pub(crate) head: &'static ResponseHead,
    /// The entry's `ETag`, when the shape has one.
    pub(crate) etag: Option<&'a HeaderValue>,
    pub(crate) shape: Shape,
}

impl Entry {
    /// Lays the parts out: one buffer for the body, the `Content-Length`
    /// digits, the path, the key and the header values that are not common;
    /// with the heap bytes of the header names made at run time (see
    /// [`own_name`]), for [`compute_weight`](Self::compute_weight).
    pub(super) fn lay_out(parts: EntryParts, key: Option<&str>) -> Option<(Self, usize)> {
        let status = StatusCode::from_u16(parts.status).ok()?;
        let hashed = match key {
            Some(k) => k.len() > crate::key::HASH_ABOVE,
            None => parts.full_key.is_some(),
        };
        let key = key.or(parts.full_key.as_deref());
        let body_len = parts.body.len();
        let path = parts.path.as_str();
        // The key usually starts with the path: then only its rest is kept.
        let key_rest = key.map(|k| k.strip_prefix(path).map_or((false, k), |r| (true, r)));
        let mut headers = parts.headers;
        // What describes one connection, or what the cache writes itself, is
        // never stored (a hit appends those without looking for them).
        headers.retain(|(name, _)| !crate::headers::is_unstorable_header(name));
        let etag = match headers.last() {
            Some((name, _)) if name == header::ETAG => headers.pop().map(|(_, v)| v),
            _ => None,
        };
        let common_headers = match headers.as_slice() {
            [(name, value)] if name == header::CONTENT_TYPE => common_value(value),
            _ => None,
        };
        if common_headers.is_some() {
            headers.clear();
        }
        let values = || headers.iter().map(|(_, v)| v).chain(etag.as_ref());
        let owned_values: usize = values()
            .filter(|v| common_value(v).is_none())
            .map(HeaderValue::len)
            .sum();
        let cl = digits(body_len);
        let tail_len = cl + path.len() + key_rest.map_or(0, |(_, r)| r.len()) + owned_values;
        let mut buf = Vec::with_capacity(body_len + tail_len);
        buf.extend_from_slice(&parts.body);
        buf.extend_from_slice(itoa::Buffer::new().format(body_len).as_bytes());
        buf.extend_from_slice(path.as_bytes());
        let (key_at, key_len) = match key_rest {
            Some((true, rest)) => {
                buf.extend_from_slice(rest.as_bytes());
                (cl, path.len() + rest.len())
            }
            Some((false, whole)) => {
                buf.extend_from_slice(whole.as_bytes());
                (cl + path.len(), whole.len())
            }
            None => (cl, 0),
        };
        let mut at = buf.len();
        for v in values() {
            if common_value(v).is_none() {
                buf.extend_from_slice(v.as_bytes());
            }
        }
        let buf = Bytes::from(buf);
        // Each value a slice of the buffer, in the order copied above.
        let mut own = |v: &HeaderValue| match common_value(v) {
            Some(i) => COMMON_VALUES[i].clone(),
            None => {
                let mut copy = HeaderValue::from_maybe_shared(buf.slice(at..at + v.len()))
                    .expect("a valid value stays valid");
                copy.set_sensitive(v.is_sensitive());
                at += v.len();
                copy
            }
        };
        let mut names_heap = 0;
        let mut keep_name = |n: &HeaderName| {
            let (name, heap) = own_name(n);
            names_heap += heap;
            name
        };
        let headers: Box<[(HeaderName, HeaderValue)]> = headers
            .iter()
            .map(|(n, v)| (keep_name(n), own(v)))
            .collect();
        let etag = etag.as_ref().map(own);
        let offset = |until: u64| {
            until
                .checked_sub(parts.born_ms)
                .and_then(|d| u32::try_from(d).ok())
                .filter(|&d| d != u32::MAX)
        };
        let offsets = (
            offset(parts.fresh_until_ms),
            offset(parts.stale_while_revalidate_until_ms),
            offset(parts.grace_until_ms),
            offset(parts.stale_if_error_until_ms),
        );
        let (times, until_ms) = match offsets {
            (Some(f), Some(s), Some(g), Some(e)) => ((f, s, g, e), None),
            _ => (
                (u32::MAX, u32::MAX, u32::MAX, u32::MAX),
                Some([
                    parts.fresh_until_ms,
                    parts.stale_while_revalidate_until_ms,
                    parts.grace_until_ms,
                    parts.stale_if_error_until_ms,
                ]),
            ),
        };
        let rare = Rare {
            tags: parts.tags.into_iter().map(String::into_boxed_str).collect(),
            vary: parts
                .vary
                .map(|names| names.iter().map(&mut keep_name).collect()),
            until_ms,
        };
        let u32_of = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let entry = Entry {
            own_headers: headers,
            etag,
            body: buf.slice(..body_len),
            tail: buf.slice(body_len..),
            born: parts.born,
            key_hash: parts.key_hash,
            born_ms: parts.born_ms,
            fresh_for_ms: times.0,
            stale_while_revalidate_for_ms: times.1,
            grace_for_ms: times.2,
            error_for_ms: times.3,
            path_len: u32_of(path.len()),
            key_at: u32_of(key_at),
            key_len: u32_of(key_len),
            weight: 0,
            status,
            common_headers: common_headers.map_or(0, |i| i as u8 + 1),
            hashed,
            lean: parts.lean,
            rare: (!rare.is_empty()).then(|| Box::new(rare)),
        };
        Some((entry, names_heap))
    }

    /// Weighs the entry as allocated: the entry in its `Arc`, the header
    /// slice, the shared buffer, the header names made at run time
    /// (`names_heap` bytes, from [`lay_out`](Self::lay_out)), the rare
    /// fields, the store's slot, and a store key of `key_len` bytes kept
    /// outside the entry.
    pub(crate) fn compute_weight(&mut self, key_len: usize, names_heap: usize) {
        const HEADER: usize = std::mem::size_of::<(HeaderName, HeaderValue)>();
        let buffer = self.body.len() + self.tail.len();
        let rare = self.rare.as_ref().map_or(0, |r| {
            std::mem::size_of::<Rare>()
                + r.tags.iter().map(|t| 16 + t.len()).sum::<usize>()
                + r.vary.as_ref().map_or(0, |v| v.len() * 32)
        });
        let w = 16
            + std::mem::size_of::<Entry>()
            + self.own_headers.len() * HEADER
            + buffer
            + if buffer > 0 { SHARED_BUFFER } else { 0 }
            + names_heap
            + rare
            + STORE_SLOT
            + key_len;
        self.weight = u32::try_from(w).unwrap_or(u32::MAX);
    }

    /// The head of a full response from this entry, ready to clone, with
    /// the values its [`Shape`] adds to be set by position: for the usual
    /// entry, a common `Content-Type` and (in the default profile) an
    /// `ETag`; `None` for any other.
    #[inline]
    pub(crate) fn ready_head(&self) -> Option<Ready<'_>> {
        let i = usize::from(self.common_headers).checked_sub(1)?;
        if self.status == http::StatusCode::NO_CONTENT {
            // No `Content-Length` (RFC 9110, section 8.6).
            return None;
        }
        let etag = self.etag.as_ref();
        let shape = match (self.lean, etag) {
            (false, Some(_)) => Shape::Full,
            (false, None) => return None,
            (true, Some(_)) => Shape::LeanTagged,
            (true, None) => Shape::Lean,
        };
        let head = READY_HEADS[shape as usize][i].get_or_init(|| {
            let empty = HeaderValue::from_static("");
            let mut head = HeaderMap::with_capacity(5);
            head.append(header::CONTENT_TYPE, COMMON_VALUES[i].clone());
            if shape != Shape::Lean {
                head.append(header::ETAG, empty.clone());
            }
            head.append(header::AGE, empty.clone());
            if shape == Shape::Full {
                head.append(crate::headers::CACHE_STATUS.clone(), empty.clone());
            }
            head.append(header::CONTENT_LENGTH, empty);
            let (mut parts, ()) = http::Response::new(()).into_parts();
            parts.headers = head;
            parts
        });
        Some(Ready { head, etag, shape })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts() -> EntryParts {
        EntryParts {
            status: 200,
            headers: vec![
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                ),
                (header::ETAG, HeaderValue::from_static("\"abc\"")),
            ],
            body: Bytes::from_static(b"hello"),
            born: 7,
            key_hash: 42,
            born_ms: 1_000,
            fresh_until_ms: 61_000,
            stale_while_revalidate_until_ms: 71_000,
            grace_until_ms: 81_000,
            stale_if_error_until_ms: 76_000,
            lean: false,
            path: "/items/1".into(),
            tags: vec!["t".into()],
            full_key: None,
            vary: None,
        }
    }

    fn headers(e: &Entry) -> Vec<(String, String)> {
        e.headers()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
            .collect()
    }

    #[test]
    fn digits_counts_decimal_digits() {
        for (n, d) in [
            (0, 1),
            (9, 1),
            (10, 2),
            (99, 2),
            (100, 3),
            (1024, 4),
            (usize::MAX, 20),
        ] {
            assert_eq!(digits(n), d, "{n}");
            assert_eq!(digits(n), n.to_string().len(), "{n}");
        }
    }

    #[test]
    fn parts_round_trip() {
        let e = Entry::from_parts(parts(), 10).unwrap();
        assert_eq!(e.status(), StatusCode::OK);
        assert_eq!(
            headers(&e),
            [("content-type", "application/json"), ("etag", "\"abc\"")]
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
        assert_eq!(e.body(), "hello");
        assert_eq!(e.content_length(), "5");
        assert_eq!(e.path(), "/items/1");
        assert_eq!(e.tags().collect::<Vec<_>>(), ["t"]);
        assert_eq!((e.born(), e.key_hash(), e.born_ms()), (7, 42, 1_000));
        assert_eq!(e.fresh_until_ms(), 61_000);
        assert_eq!(e.stale_while_revalidate_until_ms(), 71_000);
        assert_eq!(e.grace_until_ms(), 81_000);
        assert_eq!(e.stale_if_error_until_ms(), 76_000);
        assert_eq!((e.full_key(), e.key(), e.vary()), (None, None, None));
        assert!(e.key_is("anything"), "an entry without its key matches any");
    }

    #[test]
    fn keys_far_times_and_unusual_headers() {
        let mut p = parts();
        p.fresh_until_ms = u64::MAX;
        p.stale_while_revalidate_until_ms = u64::MAX;
        p.grace_until_ms = u64::MAX;
        p.headers
            .insert(0, (header::VARY, HeaderValue::from_static("accept")));
        let mut secret = HeaderValue::from_static("s");
        secret.set_sensitive(true);
        p.headers
            .push((HeaderName::from_static("x-secret"), secret));
        let e = Entry::keyed(p, "/items/1?a=1").unwrap();
        assert_eq!(e.fresh_until_ms(), u64::MAX);
        assert_eq!(e.grace_until_ms(), u64::MAX);
        assert_eq!(e.key(), Some("/items/1?a=1"));
        assert_eq!(e.path(), "/items/1");
        assert_eq!(e.full_key(), None);
        assert!(e.key_is("/items/1?a=1") && !e.key_is("/items/1?a=2"));
        let names: Vec<_> = e.headers().map(|(n, _)| n.as_str().to_owned()).collect();
        assert_eq!(names, ["vary", "content-type", "etag", "x-secret"]);
        assert!(e.headers().last().unwrap().1.is_sensitive());

        // A long key is the full key; one that does not start with the path
        // is kept whole.
        let long = format!("/other?{}", "x".repeat(300));
        let e = Entry::keyed(parts(), &long).unwrap();
        assert_eq!(e.full_key(), Some(long.as_str()));
        assert_eq!(e.path(), "/items/1");
        let hashed = format!("#{:032x}", xxhash_rust::xxh3::xxh3_128(long.as_bytes()));
        assert!(e.stored_under(&hashed) && !e.stored_under(&long));
        assert!(Entry::keyed(parts(), "/items/1")
            .unwrap()
            .stored_under("/items/1"));
        let mut p = parts();
        p.full_key = Some(long.clone());
        p.vary = Some(vec![header::ACCEPT]);
        let e = Entry::from_parts(p, 33).unwrap();
        assert_eq!(e.full_key(), Some(long.as_str()));
        assert_eq!(e.vary(), Some(&[header::ACCEPT][..]));
    }

    #[test]
    fn weight_counts_what_is_allocated() {
        let small = Entry::keyed(parts(), "/items/1").unwrap();
        let mut p = parts();
        p.body = Bytes::from(vec![b'x'; 1000]);
        let big = Entry::keyed(p, "/items/1").unwrap();
        assert_eq!(big.weight() - small.weight(), 995 + 3);
        assert!(Entry::from_parts(parts(), 100).unwrap().weight() > small.weight());
        let mut p = parts();
        p.status = 1000;
        assert!(Entry::from_parts(p, 0).is_none());
    }

    #[test]
    fn header_names_made_at_run_time_are_weighed() {
        let weight = |name: HeaderName| {
            let mut p = parts();
            p.headers.insert(0, (name, HeaderValue::from_static("1")));
            let e = Entry::keyed(p, "/items/1").unwrap();
            assert_eq!(e.headers().next().unwrap().0.as_str().len(), 12);
            e.weight()
        };
        let standard = weight(HeaderName::from_static("content-type"));
        // Static or not where it came from, the entry keeps its own copy.
        for name in [
            HeaderName::from_static("x-twelve-byt"),
            HeaderName::from_bytes(b"X-Twelve-Byt").unwrap(),
        ] {
            assert_eq!(weight(name) - standard, 12 + SHARED_BUFFER as u64);
        }
    }
}
