//! The binary form of an entry in Redis.
//!
//! ```text
//! index prefix, read by the Lua scripts without decoding the rest:
//!   u8   version (VERSION)
//!   u64  born generation                      big-endian
//!   u16  n, the number of index hashes        big-endian
//!   n × u64  hashes that can cover the entry   big-endian, raw bytes
//!            (its key hash, every segment prefix of its path, its tags)
//! then, for Rust only:
//!   u64  seal: xxh3 of every other byte of the value, seeded by a hash of
//!        the Redis key it is stored under                big-endian
//! then (every integer a LEB128 varint):
//!   status, key_hash, born_ms, fresh_until_ms, swr_until_ms, grace_until_ms,
//!   stale_if_error_until_ms, flags (bit 0: lean headers),
//!   path (len, bytes), tags (count, then len + bytes each),
//!   full_key (0, or 1 then len + bytes),
//!   vary (0, or 1 then count, then len + name bytes each),
//!   headers (count, then name len + bytes, value len + bytes each, in order;
//!            a repeated name appears once per value),
//!   body: every remaining byte, raw
//! ```
//!
//! The seal makes a value that was not written here for this key useless:
//! a body cut or extended, a byte changed, a value copied from another key
//! or another namespace. Such a value fails to decode, and the store drops
//! it.
//!
//! The index hashes are the same 64-bit hashes the in-memory index keys its
//! records by, written as the raw 8 bytes that the Redis index uses as hash
//! fields, so that the lookup script compares them with no decoding.

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::invalidate::target::{for_each_prefix, tag_hash};
use crate::store::{Entry, EntryParts};

/// The encoding's version, its first byte. A value with another version is
/// treated as a miss (and deleted).
pub(crate) const VERSION: u8 = 3;

/// Bytes before the index hashes: version, born, hash count.
pub(crate) const PREFIX_LEN: usize = 1 + 8 + 2;

/// The seal's bytes, right after the index hashes.
const SEAL_LEN: usize = 8;

/// The seal of a value stored under `store_key`: a hash of every byte but
/// the seal's own.
fn seal(store_key: &str, before: &[u8], after: &[u8]) -> u64 {
    let seed = xxhash_rust::xxh3::xxh3_64(store_key.as_bytes());
    let mut h = xxhash_rust::xxh3::Xxh3::with_seed(seed);
    h.update(before);
    h.update(after);
    h.digest()
}

/// The most index hashes an entry may carry (path depth plus tags plus
/// one); a deeper entry is not stored. Keeps the lookup script's work, and
/// its Lua stack, small.
pub(crate) const MAX_HASHES: usize = 1024;

/// Why a value could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DecodeError {
    Version(u8),
    Truncated,
    Invalid(&'static str),
    /// The seal does not match: the value was changed, or not written for
    /// this key.
    Seal,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Version(v) => write!(f, "unknown encoding version {v}"),
            DecodeError::Truncated => f.write_str("truncated value"),
            DecodeError::Invalid(what) => write!(f, "invalid {what}"),
            DecodeError::Seal => f.write_str("seal does not match (changed, or not stored here)"),
        }
    }
}

/// Every hash an index record could cover the entry under: its key hash,
/// each segment prefix of its path, each tag.
pub(crate) fn index_hashes(entry: &Entry) -> Vec<u64> {
    let mut hashes =
        Vec::with_capacity(2 + entry.path().matches('/').count() + entry.tag_slice().len());
    hashes.push(entry.key_hash());
    for_each_prefix(entry.path(), |h| {
        hashes.push(h);
        true
    });
    hashes.extend(entry.tags().map(tag_hash));
    hashes
}

/// Encodes an entry for the Redis key `store_key`; `None` when it has more
/// than [`MAX_HASHES`] index hashes (a path that deep is not worth caching).
pub(crate) fn encode(entry: &Entry, store_key: &str) -> Option<Vec<u8>> {
    let hashes = index_hashes(entry);
    if hashes.len() > MAX_HASHES {
        return None;
    }
    let n = u16::try_from(hashes.len()).ok()?;
    let headers: usize = entry
        .headers()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    let mut out = Vec::with_capacity(
        PREFIX_LEN
            + hashes.len() * 8
            + 64
            + entry.path().len()
            + entry.tags().map(|t| t.len() + 2).sum::<usize>()
            + entry.full_key().map_or(0, |k| k.len() + 3)
            + headers
            + entry.body().len(),
    );
    out.push(VERSION);
    out.extend_from_slice(&entry.born().to_be_bytes());
    out.extend_from_slice(&n.to_be_bytes());
    for h in &hashes {
        out.extend_from_slice(&h.to_be_bytes());
    }
    let seal_at = out.len();
    out.extend_from_slice(&[0; SEAL_LEN]);
    put_varint(&mut out, u64::from(entry.status().as_u16()));
    put_varint(&mut out, entry.key_hash());
    put_varint(&mut out, entry.born_ms());
    put_varint(&mut out, entry.fresh_until_ms());
    put_varint(&mut out, entry.stale_while_revalidate_until_ms());
    put_varint(&mut out, entry.grace_until_ms());
    put_varint(&mut out, entry.stale_if_error_until_ms());
    put_varint(&mut out, u64::from(entry.lean_headers()));
    put_bytes(&mut out, entry.path().as_bytes());
    put_varint(&mut out, entry.tag_slice().len() as u64);
    for tag in entry.tags() {
        put_bytes(&mut out, tag.as_bytes());
    }
    match entry.full_key() {
        None => out.push(0),
        Some(key) => {
            out.push(1);
            put_bytes(&mut out, key.as_bytes());
        }
    }
    match entry.vary() {
        None => out.push(0),
        Some(names) => {
            out.push(1);
            put_varint(&mut out, names.len() as u64);
            for name in names {
                put_bytes(&mut out, name.as_str().as_bytes());
            }
        }
    }
    put_varint(&mut out, entry.header_count() as u64);
    for (name, value) in entry.headers() {
        put_bytes(&mut out, name.as_str().as_bytes());
        put_bytes(&mut out, value.as_bytes());
    }
    out.extend_from_slice(entry.body());
    let sealed = seal(store_key, &out[..seal_at], &out[seal_at + SEAL_LEN..]);
    out[seal_at..seal_at + SEAL_LEN].copy_from_slice(&sealed.to_be_bytes());
    Some(out)
}

/// Decodes a whole value (index prefix included), read from the Redis key
/// `store_key` and stored under a cache key of `key_len` bytes. The body
/// shares `value`'s buffer (no copy); everything else is copied out.
pub(crate) fn decode(value: Bytes, store_key: &str, key_len: usize) -> Result<Entry, DecodeError> {
    let mut r = Reader {
        buf: &value,
        pos: 0,
    };
    let version = r.u8()?;
    if version != VERSION {
        return Err(DecodeError::Version(version));
    }
    let born = u64::from_be_bytes(r.take(8)?.try_into().expect("8 bytes"));
    let n = u16::from_be_bytes(r.take(2)?.try_into().expect("2 bytes"));
    r.take(usize::from(n) * 8)?;
    let seal_at = r.pos;
    let sealed = u64::from_be_bytes(r.take(SEAL_LEN)?.try_into().expect("8 bytes"));
    if sealed != seal(store_key, &value[..seal_at], &value[seal_at + SEAL_LEN..]) {
        return Err(DecodeError::Seal);
    }
    let status = u16::try_from(r.varint()?).map_err(|_| DecodeError::Invalid("status"))?;
    let key_hash = r.varint()?;
    let born_ms = r.varint()?;
    let fresh_until_ms = r.varint()?;
    let stale_while_revalidate_until_ms = r.varint()?;
    let grace_until_ms = r.varint()?;
    let stale_if_error_until_ms = r.varint()?;
    let lean = match r.varint()? {
        0 => false,
        1 => true,
        _ => return Err(DecodeError::Invalid("flags")),
    };
    let path = r.string("path")?;
    let tag_count = r.count()?;
    let mut tags = Vec::with_capacity(tag_count);
    for _ in 0..tag_count {
        tags.push(r.string("tag")?);
    }
    let full_key = match r.u8()? {
        0 => None,
        1 => Some(r.string("full key")?),
        _ => return Err(DecodeError::Invalid("full key flag")),
    };
    let vary = match r.u8()? {
        0 => None,
        1 => {
            let count = r.count()?;
            let mut names = Vec::with_capacity(count);
            for _ in 0..count {
                names.push(
                    HeaderName::from_bytes(r.bytes()?)
                        .map_err(|_| DecodeError::Invalid("vary name"))?,
                );
            }
            Some(names)
        }
        _ => return Err(DecodeError::Invalid("vary flag")),
    };
    let header_count = r.count()?;
    let mut headers = Vec::with_capacity(header_count);
    for _ in 0..header_count {
        let name =
            HeaderName::from_bytes(r.bytes()?).map_err(|_| DecodeError::Invalid("header name"))?;
        let value = HeaderValue::from_bytes(r.bytes()?)
            .map_err(|_| DecodeError::Invalid("header value"))?;
        headers.push((name, value));
    }
    let body = value.slice(r.pos..);
    let parts = EntryParts {
        status,
        headers,
        body,
        born,
        key_hash,
        born_ms,
        fresh_until_ms,
        stale_while_revalidate_until_ms,
        grace_until_ms,
        stale_if_error_until_ms,
        lean,
        path,
        tags,
        full_key,
        vary,
    };
    Entry::from_parts(parts, key_len).ok_or(DecodeError::Invalid("status"))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Invalid("varint"))
    }

    /// A count of items still to read: never more than the bytes left, so a
    /// corrupt count cannot reserve a huge allocation.
    fn count(&mut self) -> Result<usize, DecodeError> {
        let n = self.varint()?;
        let left = (self.buf.len() - self.pos) as u64;
        if n > left {
            return Err(DecodeError::Truncated);
        }
        Ok(n as usize)
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| DecodeError::Truncated)?;
        self.take(n)
    }

    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Invalid(what))
    }
}

#[cfg(test)]
mod tests;
