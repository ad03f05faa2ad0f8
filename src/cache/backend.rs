//! A store other than the embedded one, behind an object-safe wrapper: the
//! request path awaits it, under a timeout, and turns every failure into a
//! pass-through.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::invalidate::Target;
use crate::store::{Entry, Lookup, MemoryStore, Store, StoreError};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// [`Store`] with its futures boxed, so that the cache can hold any store.
trait DynStore: Send + Sync + 'static {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Lookup, StoreError>>;
    fn put<'a>(&'a self, key: &'a str, entry: Arc<Entry>) -> BoxFuture<'a, Result<(), StoreError>>;
    fn generation(&self) -> BoxFuture<'_, Result<u64, StoreError>>;
    fn invalidate<'a>(&'a self, targets: &'a [Target]) -> BoxFuture<'a, Result<u64, StoreError>>;
}

impl<T: Store> DynStore for T {
    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Lookup, StoreError>> {
        Box::pin(Store::get(self, key))
    }

    fn put<'a>(&'a self, key: &'a str, entry: Arc<Entry>) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(Store::put(self, key, entry))
    }

    fn generation(&self) -> BoxFuture<'_, Result<u64, StoreError>> {
        Box::pin(Store::generation(self))
    }

    fn invalidate<'a>(&'a self, targets: &'a [Target]) -> BoxFuture<'a, Result<u64, StoreError>> {
        Box::pin(Store::invalidate(self, targets))
    }
}

/// A network store (Redis, or any [`Store`] given to
/// [`CacheBuilder::store`](crate::CacheBuilder::store)), every call bounded
/// by `timeout`.
#[derive(Clone)]
pub(crate) struct Remote {
    store: Arc<dyn DynStore>,
    timeout: Duration,
    name: &'static str,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("store", &self.name)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Remote {
    pub(crate) fn new<S: Store>(store: S, timeout: Duration) -> Self {
        Self {
            store: Arc::new(store),
            timeout,
            name: std::any::type_name::<S>(),
        }
    }

    pub(crate) fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    async fn bounded<T>(
        &self,
        what: &'static str,
        future: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, future).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::timeout(format!(
                "{what} timed out after {:?}",
                self.timeout
            ))),
        }
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Lookup, StoreError> {
        self.bounded("get", self.store.get(key)).await
    }

    pub(crate) async fn put(&self, key: &str, entry: Arc<Entry>) -> Result<(), StoreError> {
        self.bounded("put", self.store.put(key, entry)).await
    }

    pub(crate) async fn generation(&self) -> Result<u64, StoreError> {
        self.bounded("generation", self.store.generation()).await
    }

    pub(crate) async fn invalidate(&self, targets: &[Target]) -> Result<u64, StoreError> {
        self.bounded("invalidate", self.store.invalidate(targets))
            .await
    }
}

/// Where a cache keeps its entries and its invalidation index: in this
/// process (answered at once, on the request path) or in a network store
/// (awaited, bounded, every failure a pass-through).
pub(crate) enum Backend {
    Memory(MemoryStore),
    Remote(Remote),
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::Memory(memory) => memory.fmt(f),
            Backend::Remote(remote) => remote.fmt(f),
        }
    }
}

impl Backend {
    /// The in-process store, when that is where entries live.
    #[inline]
    pub(crate) fn memory(&self) -> Option<&MemoryStore> {
        match self {
            Backend::Memory(memory) => Some(memory),
            Backend::Remote(_) => None,
        }
    }

    /// Looks a key up, checked against the invalidation index.
    pub(crate) async fn get(&self, key: &str) -> Result<Lookup, StoreError> {
        match self {
            Backend::Memory(memory) => Ok(memory.lookup_now(key)),
            Backend::Remote(remote) => remote.get(key).await,
        }
    }

    /// The generation an origin read begins at.
    pub(crate) async fn generation(&self) -> Result<u64, StoreError> {
        match self {
            Backend::Memory(memory) => Ok(memory.index.generation()),
            Backend::Remote(remote) => remote.generation().await,
        }
    }

    /// Records an invalidation of every target and returns its generation.
    pub(crate) async fn invalidate(&self, targets: &[Target]) -> Result<u64, StoreError> {
        match self {
            Backend::Memory(memory) => Ok(memory.invalidate_now(targets)),
            Backend::Remote(remote) => remote.invalidate(targets).await,
        }
    }
}
