//! The promises, checked on every read against what had been
//! acknowledged before it began; the statistics against the origin calls.

use tower_response_cache::Stats;

use crate::step::{from_cache, Ack, Read};
use crate::world::{dash_max_age_ms, data_key, spec};

pub fn check_read(r: &Read, acks: &[Ack]) -> Result<(), String> {
    let who = r.who();
    if r.kind.starts_with("unknown") {
        return Err(format!(
            "{who}: a Cache-Status the layer never writes: {}",
            r.kind
        ));
    }
    // 1. Never another client's response.
    if r.stamp.user != r.user.name() || r.stamp.path != r.path {
        return Err(format!(
            "{who}: another client's response ({}): {:?}",
            r.kind, r.stamp
        ));
    }
    let key = data_key(r.path, r.user);
    for a in acks.iter().filter(|a| a.end < r.start) {
        // 2. Never older than an acknowledged write (or a finished flush)
        // that covers it.
        for (k, v) in &a.floors {
            if *k == key && r.stamp.v < *v {
                return Err(format!(
                    "{who}: answered version {} ({}), older than version {v} acknowledged \
                     at step {} before this read began: {:?}",
                    r.stamp.v, r.kind, a.step, r.stamp
                ));
            }
        }
        // 3. The race rule: an origin read made before an invalidation
        // began is never served once it has ended.
        if r.stamp.seq < a.start && a.flushes.iter().any(|f| f.covers(r.path)) {
            return Err(format!(
                "{who}: answered ({}) a read made before the invalidation of step {} \
                 ({:?}) began, after it ended: {:?}",
                r.kind, a.step, a.flushes, r.stamp
            ));
        }
    }
    // 4. Never past TTL plus grace. (A revalidated answer is the origin's
    // word in this very exchange: it answers its request however old.)
    if from_cache(&r.kind) && r.age.is_none() {
        return Err(format!("{who}: served ({}) without an Age", r.kind));
    }
    if from_cache(&r.kind) && r.kind != "revalidated" {
        let spec = spec(r.path);
        let ttl = spec.ttl_ms.unwrap_or_else(|| dash_max_age_ms(r.stamp.v));
        let bound = match r.kind.as_str() {
            "stale-while-revalidate" => ttl + spec.swr_ms,
            "stale-if-error" => ttl + spec.sie_ms,
            _ => ttl,
        };
        let age = r.now_ms.saturating_sub(r.stamp.at);
        if age >= bound {
            return Err(format!(
                "{who}: served ({}) {age} ms after its origin read, past its TTL plus grace \
                 ({bound} ms): {:?}",
                r.kind, r.stamp
            ));
        }
        if let Some(a) = r.age.filter(|a| a * 1000 >= bound) {
            return Err(format!(
                "{who}: served ({}) with Age {a}, past its TTL plus grace ({bound} ms)",
                r.kind
            ));
        }
    }
    Ok(())
}

/// The statistics agree with the origin calls: every read that reached a
/// handler was a bypass, a miss that did not take another's response, or
/// a background refresh; every write a method bypass.
pub fn check_stats(stats: &Stats, reads: u64, writes: u64) -> Result<(), String> {
    let t = &stats.totals;
    let method = t.bypasses.get("method").copied().unwrap_or(0);
    let expected = t.misses - t.collapsed + stats.refreshes + (t.bypassed() - method);
    if reads != expected || writes != method {
        return Err(format!(
            "the statistics disagree with the origin: {reads} reads and {writes} writes \
             reached the handlers, the statistics account for {expected} reads (misses {} - \
             collapsed {} + refreshes {} + bypassed reads) and {method} writes: {stats:?}",
            t.misses, t.collapsed, stats.refreshes
        ));
    }
    Ok(())
}
