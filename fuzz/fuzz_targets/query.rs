//! Query normalisation, through the key builder.
//!
//! Input: a first line of ignored parameter names (comma-separated, a
//! final `*` makes a prefix), then the query.
//!
//! Checks: the builder refuses exactly the queries with bad
//! percent-encoding; the normal form is the model's (empty and ignored
//! pairs dropped, the rest sorted by name, stably); normalising it again
//! changes nothing, and the fast path takes it as it stands; whatever the
//! fast path takes as it stands is already normal.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_response_cache::fuzzing::{normalise_query, query_in_order, well_formed};
use tower_response_cache::RoutePolicy;

fn model(query: &str, exact: &[&str], prefixes: &[&str]) -> String {
    let ignored =
        |name: &str| exact.contains(&name) || prefixes.iter().any(|p| name.starts_with(p));
    let mut pairs: Vec<(&str, &str)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| (p.split('=').next().unwrap_or(p), p))
        .filter(|(name, _)| !ignored(name))
        .collect();
    // `sort_by_key` is stable: repeated names keep their order.
    pairs.sort_by_key(|&(name, _)| name);
    if pairs.is_empty() {
        return String::new();
    }
    let joined: Vec<&str> = pairs.iter().map(|&(_, p)| p).collect();
    format!("?{}", joined.join("&"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (ignore, query) = text.split_once('\n').unwrap_or(("", text));
    let names: Vec<&str> = ignore.split(',').filter(|n| !n.is_empty()).collect();
    let exact: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| !n.ends_with('*'))
        .collect();
    let prefixes: Vec<&str> = names.iter().filter_map(|n| n.strip_suffix('*')).collect();
    let policy = RoutePolicy::ttl(std::time::Duration::from_secs(1)).ignore_query_params(names);

    let normal = match normalise_query(query, &policy) {
        Ok(normal) => normal,
        Err(reason) => {
            assert_eq!(reason, "uri-malformed", "{query:?}");
            assert!(!well_formed(query), "{query:?} refused as {reason}");
            return;
        }
    };
    assert!(well_formed(query), "{query:?} keyed though malformed");
    assert_eq!(normal, model(query, &exact, &prefixes), "{query:?}");

    if let Some(pairs) = normal.strip_prefix('?') {
        assert_eq!(
            normalise_query(pairs, &policy).as_deref(),
            Ok(normal.as_str()),
            "normalising {query:?} twice"
        );
        assert!(
            query_in_order(pairs, &policy),
            "the fast path refuses the normal form {pairs:?} of {query:?}"
        );
    } else {
        assert!(normal.is_empty(), "{normal:?}");
    }
    if !query.is_empty() && query_in_order(query, &policy) {
        assert_eq!(
            normal,
            format!("?{query}"),
            "the fast path keys {query:?} as sent"
        );
    }
});
