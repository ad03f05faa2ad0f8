//! Invalidation: the generation index and [`Target`]s.

pub(crate) mod index;

pub use index::Target;
