//! Header helpers: `Vary`, `Cache-Status` (RFC 9211), `Age` and the
//! validators the cache computes (`Cache-Control` is read in `freshness`).

use std::sync::OnceLock;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The name this cache uses in `Cache-Status` (RFC 9211, section 2).
pub(crate) const CACHE_NAME: &str = "tower-response-cache";

/// `Cache-Status`, not yet in the `http` crate's list of standard names.
pub(crate) static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

/// The header names a response's `Vary` lists, lower-cased, sorted and
/// deduplicated; `Err(())` for `Vary: *` (never storable).
pub(crate) fn vary_names(headers: &HeaderMap) -> Result<Vec<HeaderName>, ()> {
    let mut names = Vec::new();
    for value in headers.get_all(header::VARY) {
        let value = value.to_str().map_err(|_| ())?;
        for name in value.split(',') {
            let name = name.trim();
            if name.is_empty() {
                continue;
            }
            if name == "*" {
                return Err(());
            }
            names.push(HeaderName::from_bytes(name.as_bytes()).map_err(|_| ())?);
        }
    }
    names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    names.dedup();
    Ok(names)
}

/// Whether the response is a server-sent-events stream.
pub(crate) fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

/// Headers that describe one connection, not the stored response (RFC 9110,
/// section 7.6.1), plus the ones the cache writes itself.
pub(crate) fn is_unstorable_header(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::TRAILER
        || name == header::UPGRADE
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
        || name == header::SET_COOKIE
        || name == header::AGE
        || name == header::CONTENT_LENGTH
        || name == CACHE_STATUS
        || name.as_str() == "keep-alive"
}

/// A `Cache-Status` value for a response forwarded to the origin.
pub(crate) fn forwarded(
    fwd: &'static str,
    detail: Option<&'static str>,
    stored: bool,
) -> HeaderValue {
    let mut s = String::with_capacity(64);
    s.push_str(CACHE_NAME);
    s.push_str("; fwd=");
    s.push_str(fwd);
    if stored {
        s.push_str("; stored");
    }
    if let Some(detail) = detail {
        s.push_str("; detail=");
        s.push_str(detail);
    }
    HeaderValue::try_from(s).expect("Cache-Status is built from tokens")
}

/// A `Cache-Status` value for a stale entry served (a negative `ttl`).
pub(crate) fn stale(ttl_secs: i64, detail: &'static str) -> HeaderValue {
    HeaderValue::try_from(format!(
        "{CACHE_NAME}; hit; ttl={ttl_secs}; detail={detail}"
    ))
    .expect("Cache-Status is built from tokens")
}

/// The `Cache-Status` of an answer from an entry the origin has just
/// revalidated (a `304` to the cache's conditional request).
pub(crate) fn revalidated() -> HeaderValue {
    HeaderValue::from_static("tower-response-cache; fwd=stale; fwd-status=304; stored")
}

/// A `Cache-Status` value for a stale entry served in place of an origin
/// failure.
pub(crate) fn stale_if_error(fwd_status: Option<u16>) -> HeaderValue {
    let s = match fwd_status {
        Some(code) => format!("{CACHE_NAME}; fwd=stale; fwd-status={code}; detail=stale-if-error"),
        None => format!("{CACHE_NAME}; fwd=stale; detail=stale-if-error"),
    };
    HeaderValue::try_from(s).expect("Cache-Status is built from tokens")
}

/// A `Cache-Status` value for a request collapsed into another's origin
/// call and answered with its stored response.
pub(crate) fn collapsed() -> HeaderValue {
    HeaderValue::from_static("tower-response-cache; fwd=miss; collapsed")
}

/// Whether a conditional request is satisfied by an entry with these
/// headers: `If-None-Match` against its `ETag` (weak comparison), else
/// `If-Modified-Since` against its `Last-Modified`.
pub(crate) fn not_modified(
    request: &HeaderMap,
    etag: Option<&HeaderValue>,
    last_modified: Option<&HeaderValue>,
) -> bool {
    let mut inm = request.get_all(header::IF_NONE_MATCH).iter().peekable();
    if inm.peek().is_some() {
        let Some(etag) = etag else { return false };
        let mine = opaque_tag(etag.as_bytes().trim_ascii());
        return inm.any(|line| tag_list_matches(line.as_bytes(), mine));
    }
    let (Some(ims), Some(lm)) = (request.get(header::IF_MODIFIED_SINCE), last_modified) else {
        return false;
    };
    let parse = |v: &HeaderValue| {
        v.to_str()
            .ok()
            .and_then(|s| httpdate::parse_http_date(s).ok())
    };
    matches!((parse(ims), parse(lm)), (Some(ims), Some(lm)) if lm <= ims)
}

/// An entity tag without its weakness mark: `W/"x"` and `"x"` are the same
/// tag to the weak comparison `If-None-Match` uses (RFC 9110, 8.8.3.2).
fn opaque_tag(tag: &[u8]) -> &[u8] {
    tag.strip_prefix(b"W/").unwrap_or(tag)
}

/// The members of one `If-None-Match` line, in order: `*` or entity tags
/// (with their `W/`), separated by commas. Read member by member, since a
/// tag may itself hold a comma (`"a,b"`); where the line stops being such
/// a list, the members stop, so nothing after that point counts.
pub(crate) fn tag_list(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = line;
    std::iter::from_fn(move || {
        rest = rest.trim_ascii_start();
        while let [b',', tail @ ..] = rest {
            rest = tail.trim_ascii_start();
        }
        let weak = usize::from(rest.starts_with(b"W/")) * 2;
        let len = match rest.get(weak..) {
            Some([b'*', ..]) if weak == 0 => 1,
            Some([b'"', tag @ ..]) => weak + 2 + tag.iter().position(|&c| c == b'"')?,
            _ => return None,
        };
        let (member, tail) = rest.split_at(len);
        if !matches!(tail.trim_ascii_start(), [] | [b',', ..]) {
            rest = b"";
            return None;
        }
        rest = tail;
        Some(member)
    })
}

/// Whether one `If-None-Match` line holds `*` or `mine`, an opaque tag; or
/// is, whole, the tag the entry holds when that is not well formed (an
/// origin's `abc` or `W"abc"`, repeated by the client as it was given).
fn tag_list_matches(line: &[u8], mine: &[u8]) -> bool {
    tag_list(line).any(|member| member == b"*" || opaque_tag(member) == mine)
        || opaque_tag(line.trim_ascii()) == mine
}

/// Where the `ETag`s the cache gives stored responses that have none come
/// from: one per stored response, made when its head arrives (so that the
/// miss that stores it carries it, as every hit that follows does), from
/// the key's hash and a counter under a random seed.
///
/// Weak, because the cache cannot know what stands outside it: a
/// compression layer outside the cache sends other bytes under the same
/// validator, which a strong one must never do (RFC 9110, section 8.8.1).
/// A weak validator is all `If-None-Match` needs.
pub(crate) struct TagSource {
    seed: u64,
    next: std::sync::atomic::AtomicU64,
}

impl TagSource {
    /// A source of this process's own (its seed random), so that two
    /// instances sharing a store never make the same tag.
    pub(crate) fn random() -> Self {
        use std::hash::BuildHasher;
        let seed = std::collections::hash_map::RandomState::new().hash_one(0u8);
        TagSource {
            seed,
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A new tag for a response about to be stored under `key_hash`.
    pub(crate) fn next(&self, key_hash: u64) -> HeaderValue {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut input = [0; 16];
        input[..8].copy_from_slice(&key_hash.to_le_bytes());
        input[8..].copy_from_slice(&n.to_le_bytes());
        let h = xxhash_rust::xxh3::xxh3_128_with_seed(&input, self.seed);
        HeaderValue::try_from(format!("{COMPUTED_ETAG_PREFIX}{h:032x}\""))
            .expect("hex is a valid header value")
    }
}

/// How every `ETag` the cache computes begins: what tells it from one the
/// origin made, so that it is never sent upstream as the origin's.
const COMPUTED_ETAG_PREFIX: &str = "W/\"trc-";

/// Whether an entity tag is one the cache computed.
pub(crate) fn is_computed_etag(tag: &HeaderValue) -> bool {
    tag.as_bytes().starts_with(COMPUTED_ETAG_PREFIX.as_bytes())
}

/// Numbers below this get their header values (`Age` and the hit
/// `Cache-Status` by seconds, up to 68 minutes; `Content-Length` up to
/// 4 KiB) from a table filled on first use, so that a hit formats and
/// allocates nothing; larger values are formatted each time (or, for
/// `Content-Length`, taken from the entry's buffer).
const TABLED: usize = 4096;

/// One header value per number, each made once per process.
struct NumberTable([OnceLock<HeaderValue>; TABLED]);

impl NumberTable {
    const fn new() -> Self {
        Self([const { OnceLock::new() }; TABLED])
    }

    /// The value for `secs`, made by `make` the first time. A tabled value
    /// lives as long as the process (at most `TABLED` short strings per
    /// table), so that its clones share static bytes: no reference count is
    /// touched per hit.
    #[inline]
    fn get(&self, secs: u64, make: fn(u64) -> String) -> HeaderValue {
        match self.0.get(secs as usize) {
            Some(slot) => slot
                .get_or_init(|| {
                    let s: &'static str = Box::leak(make(secs).into_boxed_str());
                    HeaderValue::from_static(s)
                })
                .clone(),
            None => HeaderValue::try_from(make(secs)).expect("built from tokens and digits"),
        }
    }
}

static HIT_VALUES: NumberTable = NumberTable::new();
static NUMBER_VALUES: NumberTable = NumberTable::new();

fn hit_value(ttl_secs: u64) -> String {
    let mut buf = itoa::Buffer::new();
    let ttl = buf.format(ttl_secs);
    let mut s = String::with_capacity(CACHE_NAME.len() + 11 + ttl.len());
    s.push_str(CACHE_NAME);
    s.push_str("; hit; ttl=");
    s.push_str(ttl);
    s
}

fn age_value(n: u64) -> String {
    itoa::Buffer::new().format(n).to_owned()
}

/// A `Cache-Status` value for a response served from the store.
#[inline]
pub(crate) fn hit(ttl_secs: u64) -> HeaderValue {
    HIT_VALUES.get(ttl_secs, hit_value)
}

/// An `Age` value.
#[inline]
pub(crate) fn age(secs: u64) -> HeaderValue {
    NUMBER_VALUES.get(secs, age_value)
}

/// A number as a header value from the table, when it is small enough.
#[inline]
pub(crate) fn small_number(n: usize) -> Option<HeaderValue> {
    (n < TABLED).then(|| NUMBER_VALUES.get(n as u64, age_value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_is_read_tag_by_tag() {
        let holds =
            |line: &str, tag: &str| tag_list_matches(line.as_bytes(), opaque_tag(tag.as_bytes()));
        assert!(holds("\"a\"", "\"a\""));
        assert!(holds("W/\"a\"", "\"a\""));
        assert!(holds("\"a\"", "W/\"a\""));
        assert!(holds(" \"x\" , \"a,b\"", "\"a,b\""));
        assert!(holds(",,\"x\",\"a\",", "\"a\""));
        assert!(holds("*", "\"anything\""));
        assert!(holds(" * ", "\"anything\""));
        // A comma inside a tag does not split it.
        assert!(!holds("\"a,b\"", "\"a\""));
        assert!(!holds("\"a,b\"", "\"b\""));
        // A tag that is not well formed matches itself, whole.
        for odd in ["abc", "W\"abc\"", "w/\"abc\"", "W/\"a\\\"b\""] {
            assert!(holds(odd, odd), "{odd:?}");
            assert!(!holds(&format!("\"x\", {odd}"), odd), "{odd:?}");
        }
        // Not a list of tags: nothing past where it stops being one.
        for line in [
            "a",
            "\"a",
            "\"x\" junk, \"a\"",
            "*x",
            "W/",
            "",
            "\"x\"\"a\"",
        ] {
            assert!(!holds(line, "\"a\""), "{line:?}");
        }
        let members: Vec<&[u8]> = tag_list(b" \"a,b\" ,, W/\"c\", * ,").collect();
        assert_eq!(members, [&b"\"a,b\""[..], b"W/\"c\"", b"*"]);
        // Bytes past ASCII are opaque bytes like any other.
        let tag = b"\"\xc3\xa9\"";
        assert!(tag_list_matches(tag, tag));
    }

    #[test]
    fn vary_star_and_lists() {
        let mut h = HeaderMap::new();
        h.append(
            header::VARY,
            HeaderValue::from_static("Accept-Encoding, accept"),
        );
        h.append(header::VARY, HeaderValue::from_static("accept-encoding"));
        let names = vary_names(&h).unwrap();
        assert_eq!(names, vec![header::ACCEPT, header::ACCEPT_ENCODING]);
        h.append(header::VARY, HeaderValue::from_static("*"));
        assert!(vary_names(&h).is_err());
    }

    #[test]
    fn cache_status_values() {
        assert_eq!(hit(42), "tower-response-cache; hit; ttl=42");
        assert_eq!(hit(42), "tower-response-cache; hit; ttl=42");
        assert_eq!(hit(1 << 20), "tower-response-cache; hit; ttl=1048576");
        assert_eq!(age(0), "0");
        assert_eq!(age(4095), "4095");
        assert_eq!(age(4096), "4096");
        assert_eq!(
            forwarded("miss", None, true),
            "tower-response-cache; fwd=miss; stored"
        );
        assert_eq!(
            forwarded("bypass", Some("authorization"), false),
            "tower-response-cache; fwd=bypass; detail=authorization"
        );
    }
}
