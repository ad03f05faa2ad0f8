//! Counters and gauges through the `metrics` facade (feature `metrics`);
//! the crate docs list every metric and label.

use crate::cache::stats::Event;

pub(crate) fn record(route: &str, event: Event) {
    let route = if route.is_empty() { "(none)" } else { route }.to_owned();
    if let Some(outcome) = event.outcome() {
        metrics::counter!("http_cache_requests_total", "outcome" => outcome, "route" => route.clone()).increment(1);
    }
    match event {
        Event::Reason(r) if r.is_bypass() => {
            metrics::counter!("http_cache_bypasses_total", "reason" => r.as_str(), "route" => route).increment(1);
        }
        Event::Reason(r) => {
            metrics::counter!("http_cache_not_stored_total", "reason" => r.as_str(), "route" => route).increment(1);
        }
        Event::Store => metrics::counter!("http_cache_stores_total", "route" => route).increment(1),
        Event::StaleDropped => {
            metrics::counter!("http_cache_stale_dropped_total", "route" => route).increment(1)
        }
        Event::NotModified => {
            metrics::counter!("http_cache_not_modified_total", "route" => route).increment(1)
        }
        Event::Collapsed => {
            metrics::counter!("http_cache_collapsed_total", "route" => route).increment(1)
        }
        Event::Rejected | Event::Hit | Event::Stale | Event::Miss | Event::Coalesced => {}
    }
}

pub(crate) fn gauges(entries: u64, bytes: u64) {
    metrics::gauge!("http_cache_entries").set(entries as f64);
    metrics::gauge!("http_cache_bytes").set(bytes as f64);
}

pub(crate) fn invalidation(kind: &'static str) {
    metrics::counter!("http_cache_invalidations_total", "kind" => kind).increment(1);
}
