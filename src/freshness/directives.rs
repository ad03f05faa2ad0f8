//! Caching directives (RFC 9111, section 5.2): a response's, from
//! `Cache-Control` or a targeted field (RFC 9213), and a request's, each
//! read strictly.

use http::header::{self, HeaderMap, HeaderName};

use super::{Delta, MAX_DELTA};

/// What a response's caching directives say (RFC 9111, section 5.2.2).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ResponseDirectives {
    pub(crate) no_store: bool,
    pub(crate) private: bool,
    pub(crate) no_cache: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    pub(crate) public: bool,
    pub(crate) max_age: Option<Delta>,
    pub(crate) s_maxage: Option<Delta>,
    pub(crate) stale_while_revalidate: Option<Delta>,
    pub(crate) stale_if_error: Option<Delta>,
    /// The field could not be read at all (not visible ASCII).
    pub(crate) unreadable: bool,
}

impl ResponseDirectives {
    /// Whether no stale use is allowed (RFC 9111, section 4.2.4).
    pub(crate) fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some() || self.no_cache
    }
}

/// What a request's caching directives ask (RFC 9111, section 5.2.1).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct RequestDirectives {
    pub(crate) max_age: Option<Delta>,
    pub(crate) min_fresh: Option<Delta>,
    /// `max-stale`, with its limit (`None`: any staleness).
    pub(crate) max_stale: Option<Option<u64>>,
    pub(crate) no_cache: bool,
    pub(crate) no_store: bool,
    pub(crate) only_if_cached: bool,
}

/// One directive of a list: its name, lower-cased, and its argument
/// (a token or a quoted string, unquoted).
fn directives(value: &str) -> impl Iterator<Item = (String, Option<String>)> + '_ {
    split_list(value).filter_map(|member| {
        let (name, arg) = match member.split_once('=') {
            // No space may stand around `=` (RFC 9111, section 5.2): such
            // an argument is unreadable, and a lifetime it gives stale.
            Some((n, a)) if n.ends_with([' ', '\t']) || a.starts_with([' ', '\t']) => {
                (n.trim(), Some(""))
            }
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (member.trim(), None),
        };
        if name.is_empty() {
            return None;
        }
        let arg = arg.map(|a| match a.strip_prefix('"') {
            Some(rest) => unquote(rest),
            None => a.to_owned(),
        });
        Some((name.to_ascii_lowercase(), arg))
    })
}

/// Splits a comma-separated list, keeping commas inside quoted strings.
fn split_list(value: &str) -> impl Iterator<Item = &str> {
    let mut rest = value;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let bytes = rest.as_bytes();
        let (mut quoted, mut escaped) = (false, false);
        let mut end = bytes.len();
        for (i, &b) in bytes.iter().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                b',' if !quoted => {
                    end = i;
                    break;
                }
                _ => {}
            }
        }
        let member = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or("");
        Some(member)
    })
}

/// The text of a quoted string whose opening quote is gone.
fn unquote(rest: &str) -> String {
    let mut out = String::with_capacity(rest.len());
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            '"' => break,
            c => out.push(c),
        }
    }
    out
}

/// A delta-seconds argument (RFC 9111, section 1.2.2): digits only.
pub(super) fn delta(arg: Option<&str>) -> Delta {
    let arg = arg.ok_or(())?;
    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return Err(());
    }
    Ok(arg.parse::<u64>().map_or(MAX_DELTA, |n| n.min(MAX_DELTA)))
}

/// Sets a directive's value; a second, different value makes it invalid.
fn set(slot: &mut Option<Delta>, value: Delta) {
    *slot = match slot.take() {
        None => Some(value),
        Some(old) if old == value => Some(old),
        Some(_) => Some(Err(())),
    };
}

/// Reads a response's directives from `Cache-Control`, or from `targeted`
/// when that field is present and readable (RFC 9213: an unreadable
/// targeted field is ignored).
pub(crate) fn response_directives(
    headers: &HeaderMap,
    targeted: Option<&HeaderName>,
) -> ResponseDirectives {
    if let Some(name) = targeted {
        let mut values = headers.get_all(name).iter().peekable();
        let present = values.peek().is_some();
        if present && values.all(|v| v.to_str().is_ok_and(is_targeted_dictionary)) {
            return parse_response(headers, name);
        }
    }
    parse_response(headers, &header::CACHE_CONTROL)
}

/// Whether a targeted field's value is a Structured Fields dictionary
/// (RFC 8941) whose numeric directives are integers, as RFC 9213 asks: one
/// that is not is ignored, whole.
pub(super) fn is_targeted_dictionary(value: &str) -> bool {
    let key_ok = |k: &str| {
        let mut bytes = k.bytes();
        bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'*')
            && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-.*".contains(&b))
    };
    let integer = |v: &str| {
        let digits = v.strip_prefix('-').unwrap_or(v);
        !digits.is_empty() && digits.len() <= 15 && digits.bytes().all(|b| b.is_ascii_digit())
    };
    let item = |v: &str| {
        let bare = v.split(';').next().unwrap_or("").trim();
        integer(bare)
            || bare == "?0"
            || bare == "?1"
            || (bare.len() >= 2 && bare.starts_with('"') && bare.ends_with('"'))
            || bare
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic() || b == b'*')
    };
    split_list(value).all(|member| {
        let member = member.trim();
        let (key, arg) = match member.split_once('=') {
            Some((k, a)) => (k.split(';').next().unwrap_or(""), Some(a.trim())),
            None => (member.split(';').next().unwrap_or(""), None),
        };
        if !key_ok(key) {
            return false;
        }
        match (key, arg) {
            ("max-age" | "s-maxage" | "stale-while-revalidate" | "stale-if-error", Some(a)) => {
                integer(a.split(';').next().unwrap_or("").trim())
            }
            (_, Some(a)) => item(a),
            (_, None) => true,
        }
    })
}

fn parse_response(headers: &HeaderMap, name: &HeaderName) -> ResponseDirectives {
    let mut out = ResponseDirectives::default();
    for value in headers.get_all(name) {
        let Ok(value) = value.to_str() else {
            out.unreadable = true;
            continue;
        };
        for (name, arg) in directives(value) {
            let arg = arg.as_deref();
            match name.as_str() {
                "no-store" => out.no_store = true,
                // A qualified `private` or `no-cache` (naming fields) is
                // read as the unqualified one: the strictest reading.
                "private" => out.private = true,
                "no-cache" => out.no_cache = true,
                "must-revalidate" => out.must_revalidate = true,
                "proxy-revalidate" => out.proxy_revalidate = true,
                "public" => out.public = true,
                "max-age" => set(&mut out.max_age, delta(arg)),
                "s-maxage" => set(&mut out.s_maxage, delta(arg)),
                "stale-while-revalidate" => set(&mut out.stale_while_revalidate, delta(arg)),
                "stale-if-error" => set(&mut out.stale_if_error, delta(arg)),
                _ => {}
            }
        }
    }
    out
}

/// Reads a request's directives (`Pragma: no-cache` counts as `no-cache`
/// when the request has no `Cache-Control`).
pub(crate) fn request_directives(headers: &HeaderMap) -> RequestDirectives {
    let mut out = RequestDirectives::default();
    let mut any = false;
    for value in headers.get_all(header::CACHE_CONTROL) {
        any = true;
        let Ok(value) = value.to_str() else {
            // Unreadable: the strictest reading, go to the origin.
            out.no_cache = true;
            continue;
        };
        for (name, arg) in directives(value) {
            let arg = arg.as_deref();
            match name.as_str() {
                "max-age" => set(&mut out.max_age, delta(arg)),
                "min-fresh" => set(&mut out.min_fresh, delta(arg)),
                "max-stale" => {
                    // An unreadable limit allows no staleness.
                    out.max_stale = Some(arg.map(|a| delta(Some(a)).unwrap_or(0)))
                }
                "no-cache" => out.no_cache = true,
                "no-store" => out.no_store = true,
                "only-if-cached" => out.only_if_cached = true,
                _ => {}
            }
        }
    }
    if !any {
        out.no_cache = headers.get_all(header::PRAGMA).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| directives(v).any(|(name, _)| name == "no-cache"))
        });
    }
    out
}
