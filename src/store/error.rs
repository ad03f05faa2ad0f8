//! The errors of a store: [`StoreError`] for a call that failed (the cache
//! turns it into a pass-through), [`ConfigError`] for settings a store
//! cannot be built with.

use std::borrow::Cow;
use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// What kind of failure a [`StoreError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The call took longer than its budget.
    Timeout,
    /// The store could not be reached: a refused, lost or not yet made
    /// connection, or a store skipping calls while it recovers.
    Unavailable,
    /// The store answered something the cache cannot use: an unexpected
    /// reply, an error reply.
    Protocol,
    /// Any other failure.
    Other,
}

impl StoreErrorKind {
    /// The kind as a short lower-case word (`timeout`, `unavailable`,
    /// `protocol`, `other`), as traced.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreErrorKind::Timeout => "timeout",
            StoreErrorKind::Unavailable => "unavailable",
            StoreErrorKind::Protocol => "protocol",
            StoreErrorKind::Other => "other",
        }
    }
}

impl fmt::Display for StoreErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A store call failed (a network store that is down, a timeout). The
/// cache turns this into a bypass; no client ever sees it.
///
/// It says what kind of failure it was ([`kind`](Self::kind)), what was
/// being done (its message) and, where there is one, the underlying error
/// ([`Error::source`]). Clones share the source.
///
/// ```
/// use tower_response_cache::store::{StoreError, StoreErrorKind};
///
/// let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
/// let e = StoreError::with_source(StoreErrorKind::Unavailable, "get: connection refused", io);
/// assert_eq!(e.kind(), StoreErrorKind::Unavailable);
/// assert!(std::error::Error::source(&e).is_some());
/// ```
#[derive(Debug, Clone)]
pub struct StoreError {
    kind: StoreErrorKind,
    message: Cow<'static, str>,
    source: Option<Arc<dyn Error + Send + Sync>>,
}

impl StoreError {
    /// An error of `kind`, saying what failed.
    pub fn new(kind: StoreErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An error of `kind`, saying what failed, caused by `source`.
    pub fn with_source(
        kind: StoreErrorKind,
        message: impl Into<Cow<'static, str>>,
        source: impl Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind,
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// A call that took longer than its budget.
    pub fn timeout(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(StoreErrorKind::Timeout, message)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> StoreErrorKind {
        self.kind
    }

    /// What failed, without the source's own message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cache store error ({}): {}", self.kind, self.message)
    }
}

impl Error for StoreError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

/// A store could not be built with the settings given (an invalid URL, a
/// namespace it cannot use).
#[derive(Debug, Clone)]
pub struct ConfigError {
    message: Cow<'static, str>,
    source: Option<Arc<dyn Error + Send + Sync>>,
}

impl ConfigError {
    /// A setting that cannot be used, saying which and why.
    pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// A setting that cannot be used, as `source` found.
    pub fn with_source(
        message: impl Into<Cow<'static, str>>,
        source: impl Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(Arc::new(source)),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cache store configuration error: {}", self.message)
    }
}

impl Error for ConfigError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_kind_message_and_source() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "slow");
        let e = StoreError::with_source(StoreErrorKind::Timeout, "get timed out", io);
        assert_eq!(e.kind(), StoreErrorKind::Timeout);
        assert_eq!(e.to_string(), "cache store error (timeout): get timed out");
        assert_eq!(e.source().map(|s| s.to_string()).as_deref(), Some("slow"));
        let copy = e.clone();
        assert_eq!(copy.message(), "get timed out");
        assert!(copy.source().is_some());
        assert!(StoreError::timeout("x").source().is_none());
        let c = ConfigError::new("bad url");
        assert_eq!(c.to_string(), "cache store configuration error: bad url");
    }
}
