//! The Redis entry codec (`src/store/redis/codec.rs`), decoding values it
//! did not write.
//!
//! Input: a first byte choosing the mode, then
//! - 0: a value, decoded as it is;
//! - 1: a value, first given the version byte and the seal it needs, so
//!   that decoding goes past the seal into the fields;
//! - 2: an entry's parts (read with `arbitrary`), built, encoded and
//!   decoded.
//!
//! Checks: decoding never yields an entry whose seal (recomputed here from
//! the format's description) does not match; whatever decodes encodes and
//! decodes again to the same entry; an encoded entry decodes to itself,
//! every field read back, never heavier, and its encoding a fixed point;
//! a value cut, changed in any byte, or read under another key is
//! refused.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use tower_response_cache::fuzzing::codec::{decode, encode, VERSION};
use tower_response_cache::store::Entry;

const KEY: &str = "trc:e:/products?page=2";
const OTHER_KEY: &str = "trc:e:/products?page=3";

/// Where the seal sits: after the version, born, the hash count and the
/// hashes.
fn seal_at(value: &[u8]) -> Option<usize> {
    let n = u16::from_be_bytes(value.get(9..11)?.try_into().ok()?);
    let at = 11 + usize::from(n) * 8;
    (value.len() >= at + 8).then_some(at)
}

/// The seal a value needs under `key`: xxh3 of every byte but the seal's,
/// seeded by the xxh3 of the key.
fn seal(value: &[u8], at: usize, key: &str) -> u64 {
    let seed = xxhash_rust::xxh3::xxh3_64(key.as_bytes());
    let mut rest = value[..at].to_vec();
    rest.extend_from_slice(&value[at + 8..]);
    xxhash_rust::xxh3::xxh3_64_with_seed(&rest, seed)
}

fn fields(e: &Entry) -> impl PartialEq + std::fmt::Debug + '_ {
    (
        (
            e.status(),
            e.headers().collect::<Vec<_>>(),
            e.body(),
            e.born(),
            e.key_hash(),
        ),
        (
            e.born_ms(),
            e.fresh_until_ms(),
            e.stale_while_revalidate_until_ms(),
            e.grace_until_ms(),
            e.stale_if_error_until_ms(),
        ),
        (
            e.path(),
            e.tags().collect::<Vec<_>>(),
            e.full_key(),
            e.vary(),
            e.lean_headers(),
        ),
    )
}

/// Encodes an entry, decodes it, and checks what must be refused.
fn round_trip(entry: &Entry, flip: usize) {
    assert!(entry.stale_if_error_until_ms() <= entry.grace_until_ms());
    let Some(bytes) = encode(entry, KEY) else {
        // Too many index hashes: a path that deep is not stored.
        return;
    };
    assert_eq!(bytes[0], VERSION);
    assert_eq!(&bytes[1..9], &entry.born().to_be_bytes());
    let at = seal_at(&bytes).expect("an encoded value holds its seal");
    assert_eq!(&bytes[at..at + 8], &seal(&bytes, at, KEY).to_be_bytes());
    let back = decode(Bytes::from(bytes.clone()), KEY)
        .unwrap_or_else(|e| panic!("{entry:?} does not decode: {e}"));
    assert_eq!(fields(&back), fields(entry));
    // What decodes is the entry in its plainest form (a stale-if-error end
    // past the grace end, which reads as the grace end, needs no room of
    // its own): never heavier, and a fixed point of the codec.
    assert!(
        back.weight() <= entry.weight(),
        "{back:?} heavier than {entry:?}"
    );
    let again = encode(&back, KEY).expect("what decoded encodes");
    assert_eq!(again, bytes, "a second round trip changes the value");
    let back_again = decode(Bytes::from(again), KEY).expect("and decodes");
    assert_eq!(back_again.weight(), back.weight());

    assert!(
        decode(Bytes::from(bytes.clone()), OTHER_KEY).is_err(),
        "read under another key"
    );
    let cut = flip % bytes.len();
    assert!(
        decode(Bytes::copy_from_slice(&bytes[..cut]), KEY).is_err(),
        "cut at {cut}"
    );
    let mut changed = bytes;
    changed[cut] ^= 1 << (flip % 8);
    assert!(
        decode(Bytes::from(changed), KEY).is_err(),
        "byte {cut} changed"
    );
}

#[derive(Arbitrary, Debug)]
struct Parts {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    born: u64,
    key_hash: u64,
    times: [u64; 5],
    path: String,
    tags: Vec<String>,
    full_key: Option<String>,
    vary: Option<Vec<String>>,
    lean: bool,
    flip: usize,
}

fn build(p: &Parts) -> Option<Entry> {
    let status = StatusCode::from_u16(p.status).ok()?;
    let headers = p.headers.iter().filter_map(|(n, v)| {
        Some((
            HeaderName::from_bytes(n.as_bytes()).ok()?,
            HeaderValue::from_bytes(v).ok()?,
        ))
    });
    let [born_ms, fresh, swr, grace, sie] = p.times;
    let mut b = Entry::builder()
        .status(status)
        .headers(headers)
        .body(p.body.clone())
        .born(p.born)
        .key_hash(p.key_hash)
        .store_key_len(KEY.len())
        .born_ms(born_ms)
        .fresh_until_ms(fresh)
        .stale_while_revalidate_until_ms(swr)
        .grace_until_ms(grace)
        .stale_if_error_until_ms(sie)
        .path(p.path.clone())
        .tags(p.tags.iter().cloned())
        .full_key(p.full_key.clone())
        .lean_headers(p.lean);
    if let Some(names) = &p.vary {
        b = b.vary(
            names
                .iter()
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok()),
        );
    }
    Some(b.build())
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    match mode % 3 {
        0 => {
            if decode(Bytes::copy_from_slice(rest), KEY).is_ok() {
                let at = seal_at(rest).expect("a decoded value holds a seal");
                assert_eq!(rest[0], VERSION);
                assert_eq!(&rest[at..at + 8], &seal(rest, at, KEY).to_be_bytes());
            }
        }
        1 => {
            let mut value = rest.to_vec();
            let Some(at) = seal_at(&value) else {
                return;
            };
            value[0] = VERSION;
            let sealed = seal(&value, at, KEY);
            value[at..at + 8].copy_from_slice(&sealed.to_be_bytes());
            if let Ok(entry) = decode(Bytes::from(value), KEY) {
                round_trip(&entry, rest.len());
            }
        }
        _ => {
            let Ok(parts) = Parts::arbitrary_take_rest(Unstructured::new(rest)) else {
                return;
            };
            if let Some(entry) = build(&parts) {
                round_trip(&entry, parts.flip);
            }
        }
    }
});
