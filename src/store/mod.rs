//! Where entries live: the [`Store`] trait, the in-memory [`MemoryStore`]
//! (the default) and, with the `redis` feature, `RedisStore`, given to
//! [`CacheBuilder::store`](crate::CacheBuilder::store).
//!
//! A store keeps entries by key and owns the invalidation index, so that a
//! store shared by several processes (Redis) can make an invalidation on
//! one of them hold on all of them.

mod entry;
mod error;
mod memory;
#[cfg(feature = "redis")]
pub(crate) mod redis;

use std::future::Future;
use std::sync::Arc;

pub use entry::{Entry, EntryBuilder};
pub(crate) use entry::{EntryParts, ResponseHead, Shape};
pub use error::{ConfigError, StoreError, StoreErrorKind};
pub use memory::MemoryStore;
#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use redis::{RedisStore, RedisStoreBuilder};

pub use crate::invalidate::Target;

/// What a store found for a key.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// Nothing stored.
    Miss,
    /// An entry no invalidation covers (it may still be past its TTL; the
    /// cache judges freshness).
    Found(Arc<Entry>),
    /// An entry an invalidation covers; the store has dropped it.
    Invalidated,
}

/// A place to keep entries and the invalidation index.
///
/// Every method takes `&self`; a store is shared by every clone of a
/// [`Cache`](crate::Cache). The in-memory [`MemoryStore`] answers at once;
/// a network store answers asynchronously and may fail, which the cache
/// treats as a bypass.
pub trait Store: Send + Sync + 'static {
    /// Looks a key up and checks the entry against the invalidation index
    /// (entries found invalidated are removed).
    fn get(&self, key: &str) -> impl Future<Output = Result<Lookup, StoreError>> + Send;

    /// Stores an entry under a key, replacing any other.
    fn put(
        &self,
        key: &str,
        entry: Arc<Entry>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes a key.
    fn remove(&self, key: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Reads the logical clock, as an origin read begins.
    fn generation(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Records an invalidation of every target at a new generation, which
    /// it returns. Must cost O(number of targets), whatever the number of
    /// entries.
    fn invalidate(
        &self,
        targets: &[Target],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}
