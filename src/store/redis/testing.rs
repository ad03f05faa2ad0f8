//! Entries built by hand, for the store-level integration tests (which
//! cannot reach the crate's internals). Not part of the API.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::invalidate::index::key_hash;
use crate::store::{Entry, EntryParts};

/// What an entry is made of; [`build`](Self::build) stamps its times from
/// now.
#[derive(Debug, Clone)]
pub struct EntrySpec {
    /// Response status.
    pub status: u16,
    /// Headers, in order (repeated names allowed).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Body.
    pub body: Bytes,
    /// The generation at which the origin read began.
    pub born: u64,
    /// The request key (its hash is what an exact-request flush records).
    pub key: String,
    /// The request path.
    pub path: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Freshness.
    pub ttl: Duration,
    /// Grace past freshness.
    pub grace: Duration,
    /// Kept when the key was hashed.
    pub full_key: Option<String>,
    /// `Some` for a Vary marker.
    pub vary: Option<Vec<HeaderName>>,
}

impl EntrySpec {
    /// A 200 with an empty body, fresh for a minute.
    pub fn new(key: impl Into<String>, path: impl Into<String>, born: u64) -> Self {
        Self {
            status: 200,
            headers: Vec::new(),
            body: Bytes::new(),
            born,
            key: key.into(),
            path: path.into(),
            tags: Vec::new(),
            ttl: Duration::from_secs(60),
            grace: Duration::ZERO,
            full_key: None,
            vary: None,
        }
    }

    /// The entry, born now (wall clock).
    pub fn build(self) -> Arc<Entry> {
        let born_ms = super::now_ms();
        let fresh_until_ms = born_ms + self.ttl.as_millis() as u64;
        let grace_until_ms = fresh_until_ms + self.grace.as_millis() as u64;
        let parts = EntryParts {
            status: self.status,
            headers: self.headers,
            body: self.body,
            born: self.born,
            key_hash: key_hash(&self.key),
            born_ms,
            fresh_until_ms,
            stale_while_revalidate_until_ms: grace_until_ms,
            grace_until_ms,
            path: self.path,
            tags: self.tags,
            full_key: self.full_key,
            vary: self.vary,
        };
        Arc::new(Entry::from_parts(parts, self.key.len()).expect("a valid status"))
    }
}
