//! Tracing helpers: the request's `http_cache` span, made only when a
//! subscriber may want it, so that a request nobody traces costs no key
//! formatting.

use crate::policy::CompiledRoute;

/// Whether any subscriber may want debug spans: the global level check that
/// `tracing`'s own macros make first, without the fallback to `log` records
/// that a disabled span otherwise costs on every request.
#[inline]
pub(crate) fn debug_wanted() -> bool {
    use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
    STATIC_MAX_LEVEL >= LevelFilter::DEBUG && LevelFilter::current() >= LevelFilter::DEBUG
}

/// The request's `http_cache` span, made only when a subscriber may want
/// debug spans (so the key is formatted only then); `Span::none()` otherwise.
#[inline]
pub(crate) fn request_span(key: &str, route: &CompiledRoute) -> tracing::Span {
    if !debug_wanted() {
        return tracing::Span::none();
    }
    tracing::debug_span!(
        "http_cache",
        key,
        route = %route.pattern,
        outcome = tracing::field::Empty,
        reason = tracing::field::Empty,
        stored_bytes = tracing::field::Empty,
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use http::HeaderMap;

    use super::*;

    #[test]
    fn the_request_span_is_made_when_a_subscriber_wants_debug() {
        let policy = crate::policy::RoutePolicy::ttl(std::time::Duration::from_secs(1));
        let headers = HeaderMap::new();
        let request = crate::key::KeyRequest {
            path: "/p",
            query: Some("a=1"),
            host: None,
            headers: &headers,
            scope: None,
        };
        let hasher = crate::scope::ScopeHasher::new(b"t");
        let key = crate::key::build(request, &policy, 8192, &hasher).unwrap();
        let route = CompiledRoute {
            pattern: "/p".into(),
            policy,
            stats: Arc::default(),
        };
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_test_writer()
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = request_span(&key.full, &route);
            assert!(!span.is_disabled());
            assert_eq!(span.metadata().map(|m| m.name()), Some("http_cache"));
        });
    }
}
