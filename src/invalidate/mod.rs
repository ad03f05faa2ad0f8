//! [`InvalidateOn`]: flush cached paths and tags when a write succeeds.
//!
//! Invalidation costs O(1) whatever the number of entries: the cache keeps
//! a logical clock, every entry remembers the clock's value when its
//! origin read began (its *born* generation), and an invalidation ticks the
//! clock and records `prefix → generation` (or `tag → generation`) in an
//! index. Nothing is scanned. A lookup checks the entry's segment prefixes
//! (`/`, `/products`, `/products/42`) and its tags against the index, and
//! drops the entry if any record is newer than its birth.
//!
//! Because the birth is taken when the read *begins*, a response whose
//! read started before an invalidation is never served after it, even when
//! it is stored after it (the race rule). And because `InvalidateOn`
//! flushes as soon as the mutation's response head arrives, before that
//! response is handed back, a client holding the 2xx of its write cannot
//! read the pre-write response again (read-your-writes).

mod body;
mod flush;
mod future;
pub(crate) mod index;
mod layer;
mod service;
pub(crate) mod target;

pub use body::FlushBody;
pub use future::ResponseFuture;
pub use layer::InvalidateOn;
pub use service::InvalidateService;
pub use target::Target;
