//! The world the programs run in: users, paths, routes, and what covers
//! what (the rules' targets, the data a write changes).

use std::fmt;

use http::{header, HeaderMap};

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum User {
    Anon,
    Alice,
    Bob,
}

impl User {
    pub const ALL: [User; 3] = [User::Anon, User::Alice, User::Bob];

    pub fn name(self) -> &'static str {
        match self {
            User::Anon => "anon",
            User::Alice => "alice",
            User::Bob => "bob",
        }
    }

    /// Who the origin sees: the `x-user` header, else nobody.
    pub fn of(headers: &HeaderMap) -> User {
        match headers.get("x-user").and_then(|v| v.to_str().ok()) {
            Some("alice") => User::Alice,
            Some("bob") => User::Bob,
            _ => User::Anon,
        }
    }

    /// A signed-in user sends credentials and names itself.
    pub fn sign(self, req: http::request::Builder) -> http::request::Builder {
        match self {
            User::Anon => req,
            user => req
                .header(
                    header::AUTHORIZATION,
                    format!("Bearer {}-token", user.name()),
                )
                .header("x-user", user.name()),
        }
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The paths programs read and write: overlapping on segments.
pub const PATHS: [&str; 5] = [
    "/items",
    "/items/1",
    "/items/2",
    "/items/1/reviews",
    "/dash",
];
/// What programmatic flushes name: the paths, the root, and prefixes that
/// cover nothing (not on a segment boundary, or below every path).
pub const PREFIXES: [&str; 9] = [
    "/",
    "/items",
    "/items/1",
    "/items/2",
    "/items/1/reviews",
    "/dash",
    "/item",
    "/items/12",
    "/dash/x",
];
pub const TAGS: [&str; 5] = ["list", "dash", "item:1", "item:2", "nope"];

pub const REVIEWS: &str = "/items/1/reviews";
pub const DASH: &str = "/dash";

/// `/items`: a fixed TTL, tagged `list`.
pub const LIST_TTL: u64 = 4_000;
/// `/items/{id}`: a fixed TTL and stale-while-revalidate; the handler tags
/// its answers `item:{id}`. Its origin is never slow (`Op::Slow`), so that
/// no background refresh is still at the origin when the next step runs.
pub const ITEM_TTL: u64 = 3_000;
pub const ITEM_SWR: u64 = 2_000;
/// `/items/{id}/reviews`: scoped per user, a fixed TTL and stale-if-error.
pub const REVIEWS_TTL: u64 = 5_000;
pub const REVIEWS_SIE: u64 = 3_000;
/// `/dash`: scoped per user, tagged `dash`, freshness from the response
/// (`max-age`, which the handler varies with the data) and an `ETag`, so
/// that a stale entry is kept this long (the crate's default) and
/// revalidated.
pub const DASH_KEEP: u64 = 600_000;

pub fn swr_route(path: &str) -> bool {
    matches!(path, "/items/1" | "/items/2")
}

pub fn dash_max_age_ms(version: u64) -> u64 {
    (1 + version % 3) * 1_000
}

/// The route a path belongs to, as the model sees it.
pub struct Spec {
    pub pattern: &'static str,
    pub scoped: bool,
    /// A fixed TTL; `None`: from the response.
    pub ttl_ms: Option<u64>,
    pub swr_ms: u64,
    pub sie_ms: u64,
}

pub fn spec(path: &str) -> Spec {
    let fixed = |pattern, ttl, swr, sie, scoped| Spec {
        pattern,
        scoped,
        ttl_ms: Some(ttl),
        swr_ms: swr,
        sie_ms: sie,
    };
    match path {
        "/items" => fixed("/items", LIST_TTL, 0, 0, false),
        "/items/1" | "/items/2" => fixed("/items/{id}", ITEM_TTL, ITEM_SWR, 0, false),
        REVIEWS => fixed("/items/{id}/reviews", REVIEWS_TTL, 0, REVIEWS_SIE, true),
        DASH => Spec {
            pattern: "/dash",
            scoped: true,
            ttl_ms: None,
            swr_ms: 0,
            sie_ms: 0,
        },
        _ => unreachable!("not a path of the model: {path}"),
    }
}

pub const PATTERNS: [&str; 4] = ["/items", "/items/{id}", "/items/{id}/reviews", "/dash"];

/// `/items/{id}` and everything under it: the id.
pub fn item_id(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/items/")?;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// The tags an entry of `path` carries (the route's and the handler's).
pub fn entry_tags(path: &str) -> Vec<String> {
    match path {
        "/items" => vec!["list".into()],
        "/items/1" | "/items/2" => vec![format!("item:{}", item_id(path).unwrap())],
        DASH => vec!["dash".into()],
        _ => vec![],
    }
}

/// One invalidation target.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Flush {
    Prefix(String),
    Tag(String),
}

impl Flush {
    /// Whether this flush covers the entries of `path`: a prefix on whole
    /// segments, or a tag they carry.
    pub fn covers(&self, path: &str) -> bool {
        match self {
            Flush::Prefix(p) => {
                p == "/"
                    || path == p
                    || (path.starts_with(p.as_str()) && path[p.len()..].starts_with('/'))
            }
            Flush::Tag(t) => entry_tags(path).contains(t),
        }
    }
}

/// What a successful write on `path` flushes: its own path (as a prefix)
/// and its rule's targets (see `stack`).
pub fn write_flushes(path: &str) -> Vec<Flush> {
    let mut flushes = vec![Flush::Prefix(path.into())];
    let tags: Vec<String> = match path {
        "/items" => vec!["dash".into()],
        "/items/1" | "/items/2" => vec!["list".into(), "dash".into()],
        REVIEWS => vec![format!("item:{}", item_id(path).unwrap())],
        _ => vec![],
    };
    flushes.extend(tags.into_iter().map(Flush::Tag));
    flushes
}

/// The data behind a read: per path, and per user on `/dash`.
pub type DataKey = (&'static str, Option<User>);

pub fn data_key(path: &'static str, user: User) -> DataKey {
    (path, (path == DASH).then_some(user))
}

pub fn data_keys() -> Vec<DataKey> {
    let mut keys: Vec<DataKey> = PATHS[..4].iter().map(|p| (*p, None)).collect();
    keys.extend(User::ALL.iter().map(|u| (DASH, Some(*u))));
    keys
}

/// What a write on `path` by `user` changes, as the application's data
/// works: an item changes the list, its reviews and every dashboard; a
/// review changes its item; a dashboard is its user's own.
pub fn changes(path: &'static str, user: User) -> Vec<DataKey> {
    let dashes = User::ALL.iter().map(|u| (DASH, Some(*u)));
    match path {
        "/items" => data_keys(),
        "/items/1" => [("/items/1", None), (REVIEWS, None), ("/items", None)]
            .into_iter()
            .chain(dashes)
            .collect(),
        "/items/2" => [("/items/2", None), ("/items", None)]
            .into_iter()
            .chain(dashes)
            .collect(),
        REVIEWS => vec![(REVIEWS, None), ("/items/1", None)],
        DASH => vec![(DASH, Some(user))],
        _ => unreachable!("not a path of the model: {path}"),
    }
}
