//! The query part of a key: its pairs sorted by name (stably), empty and
//! ignored ones dropped; and the fast path's test that a query is in that
//! form already.

use super::has_byte;
use crate::policy::RoutePolicy;

/// The name of a query pair (`name=value`, or a bare `name`).
fn pair_name(pair: &str) -> &str {
    pair.split_once('=').map_or(pair, |(n, _)| n)
}

/// Whether the query's pairs are all non-empty, kept, and sorted by name
/// already. One pair with nothing to drop is the common case, answered
/// here; more pairs take [`pairs_in_order`].
#[inline(always)]
pub(crate) fn in_order(query: &str, policy: &RoutePolicy) -> bool {
    let ignoring = policy.has_ignored();
    if !ignoring && !query.is_empty() && !has_byte::<b'&'>(query.as_bytes()) {
        return true;
    }
    pairs_in_order(query, ignoring.then_some(policy))
}

/// [`in_order`] in one pass over the query's bytes (`ignoring`: the policy
/// whose ignored parameters must not be present).
fn pairs_in_order(query: &str, ignoring: Option<&RoutePolicy>) -> bool {
    let bytes = query.as_bytes();
    let mut previous: &[u8] = b"";
    let mut start = 0;
    let mut name_end = usize::MAX;
    for i in 0..=bytes.len() {
        let b = bytes.get(i).copied().unwrap_or(b'&');
        if b == b'=' && name_end == usize::MAX {
            name_end = i;
        } else if b == b'&' {
            if i == start {
                return false;
            }
            let end = name_end.min(i);
            let name = &bytes[start..end];
            if name < previous {
                return false;
            }
            // `&` and `=` are ASCII: these are character boundaries.
            if ignoring.is_some_and(|policy| policy.ignores(&query[start..end])) {
                return false;
            }
            previous = name;
            start = i + 1;
            name_end = usize::MAX;
        }
    }
    true
}

/// Queries with at most this many pairs are sorted on the stack.
const STACK_PAIRS: usize = 16;

/// Appends `?` and the query's pairs, empty and ignored ones dropped, sorted
/// by name (stably: repeated names keep their order); nothing when no pair
/// is left.
pub(super) fn push_query(out: &mut String, query: &str, policy: &RoutePolicy) {
    // Most queries are already in order with nothing to drop: copied as
    // they are.
    if in_order(query, policy) {
        out.push('?');
        out.push_str(query);
        return;
    }
    let kept = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| (pair_name(p), p))
        .filter(|(name, _)| !policy.ignores(name));
    let mut stack = [("", ""); STACK_PAIRS];
    let mut heap = Vec::new();
    let mut n = 0;
    for pair in kept {
        if n < STACK_PAIRS {
            stack[n] = pair;
        } else {
            if heap.is_empty() {
                heap.extend_from_slice(&stack);
            }
            heap.push(pair);
        }
        n += 1;
    }
    let pairs = if n <= STACK_PAIRS {
        &mut stack[..n]
    } else {
        &mut heap[..]
    };
    if pairs.is_empty() {
        return;
    }
    // A stable sort: repeated names keep their relative order.
    pairs.sort_by(|a, b| a.0.cmp(b.0));
    out.push('?');
    for (i, (_, pair)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(pair);
    }
}
