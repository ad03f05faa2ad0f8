//! placeholder
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cache;
mod headers;
pub mod invalidate;
mod key;
pub mod layer;
mod policy;
pub mod store;

pub use cache::stats::{Counts, Stats};
pub use cache::{BuildError, Cache, CacheBuilder};
pub use invalidate::{InvalidateOn, InvalidateService, Target};
pub use layer::{CacheBody, CacheLayer, CacheService};
pub use policy::{CacheTags, CacheTtl, NoStore, RoutePolicy, DEFAULT_STATUSES};
