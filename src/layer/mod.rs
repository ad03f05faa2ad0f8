//! [`CacheLayer`]: the response cache middleware.
//!
//! `CacheLayer` makes [`CacheService`], whose [`ResponseFuture`] either
//! answers from the store without calling the inner service (a hit) or
//! forwards the request and, when the response may be stored, copies its
//! body as it streams to the client ([`CacheBody`]).

mod body;
mod future;
#[allow(clippy::module_inception)]
mod layer;
mod service;

pub use body::CacheBody;
pub use future::ResponseFuture;
pub use layer::CacheLayer;
pub use service::CacheService;
