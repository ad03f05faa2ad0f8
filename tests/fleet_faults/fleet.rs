//! The fault matrix's fleet and its traffic: two instances, each a real
//! hyper server with its own `Cache` on one `redis-server`, in front of
//! one versioned origin; readers and writers on both, every read checked
//! against the writes acknowledged before it was sent.
//!
//! The check is the promise the README makes, to the letter. A write whose
//! 2xx left with its flush recorded holds on every instance: no read sent
//! after that 2xx returns an older version. A write answered with its
//! flush still owed (the store unreachable for the whole store timeout)
//! holds at once on its own instance, and on the others once its
//! instance owes nothing any more (the background retry landed).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::task::JoinHandle;
use tower::ServiceBuilder;
use tower_response_cache::store::RedisStore;
use tower_response_cache::{Cache, CacheLayer, InvalidateOn};

use crate::redis_server::RedisServer;
use crate::support::{client, serve, Client, Seen, BOUND};

/// Items in the catalogue: each has its own version.
const ITEMS: usize = 4;
/// What bounds the traffic, besides [`Traffic::stop`]: requests per task,
/// and time.
const READS_PER_READER: usize = 20_000;
const WRITES_PER_WRITER: usize = 1_000;
const TRAFFIC_FOR: Duration = Duration::from_secs(60);
/// The longest a request may take before it counts as failed: more than a
/// write's flush budget (the 1 s store timeout) plus a call's own budget.
const REQUEST_BOUND: Duration = Duration::from_secs(10);
const READ_PAUSE: Duration = Duration::from_millis(4);
/// Reads on an instance between two of its writes, however fast or slow
/// the machine: enough for an item to be a hit between its writes.
const READS_PER_WRITE: u64 = 12;

/// The origin: one version per item, bumped by each write; a read answers
/// `v<version>` and a newline, padded to the body length.
#[derive(Clone)]
struct Catalogue(Arc<Items>);

struct Items {
    versions: [AtomicU64; ITEMS],
    padding: Bytes,
}

async fn show(State(c): State<Catalogue>, Path(id): Path<usize>) -> Result<Vec<u8>, StatusCode> {
    let version = c.0.versions.get(id).ok_or(StatusCode::NOT_FOUND)?;
    let mut body = format!("v{}\n", version.load(SeqCst)).into_bytes();
    body.extend_from_slice(&c.0.padding);
    Ok(body)
}

async fn update(State(c): State<Catalogue>, Path(id): Path<usize>) -> Result<String, StatusCode> {
    let version = c.0.versions.get(id).ok_or(StatusCode::NOT_FOUND)?;
    Ok(format!("v{}", version.fetch_add(1, SeqCst) + 1))
}

/// The version a response names.
fn version(body: &[u8]) -> Option<u64> {
    let digits = body.strip_prefix(b"v")?;
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// The test's `redis-server`, driven from blocking threads (a restart
/// waits for it to answer, `DEBUG SLEEP` for its reply) so that the
/// fleet's runtime keeps running meanwhile.
#[derive(Clone)]
pub struct Redis(Arc<Mutex<RedisServer>>);

impl Redis {
    async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut RedisServer) -> R + Send + 'static,
    ) -> R {
        let server = self.0.clone();
        tokio::task::spawn_blocking(move || f(&mut server.lock().unwrap()))
            .await
            .unwrap()
    }

    /// One command, checked against the start of its reply.
    pub async fn command(&self, cmd: &str, expect: &str) {
        let (cmd, expect) = (cmd.to_owned(), expect.to_owned());
        let reply = self.with(move |s| s.command(&cmd)).await;
        assert!(reply.starts_with(&expect), "{reply}");
    }

    /// SIGKILL: connections reset, new ones refused.
    pub async fn kill(&self) {
        self.with(RedisServer::kill).await;
    }

    /// Up again on the same port, empty (no persistence).
    pub async fn restart(&self) {
        self.with(RedisServer::restart).await;
    }

    /// SIGSTOP: connections stay open, nothing answers.
    pub async fn pause(&self) {
        self.with(|s| s.pause()).await;
    }

    /// SIGCONT.
    pub async fn resume(&self) {
        self.with(|s| s.resume()).await;
    }
}

/// One instance: its store, its cache, and the address it serves on.
pub struct Instance {
    pub store: RedisStore,
    pub cache: Cache,
    addr: SocketAddr,
}

impl Instance {
    async fn start(url: &str, catalogue: &Catalogue) -> Instance {
        let store = RedisStore::builder(url).build().unwrap();
        let cache = Cache::builder().store(store.clone()).build();
        let app = Router::new()
            .route("/items/{id}", get(show).put(update))
            .with_state(catalogue.clone())
            .layer(
                ServiceBuilder::new()
                    .layer(InvalidateOn::new(&cache))
                    .layer(CacheLayer::new(&cache).ttl(Duration::from_secs(60))),
            );
        let addr = serve(app).await;
        Instance { store, cache, addr }
    }

    fn hits(&self) -> u64 {
        self.cache.stats().totals.hits
    }

    fn owed(&self) -> u64 {
        self.cache.stats().owed_flush_records
    }

    /// Store calls that failed or timed out.
    pub fn store_errors(&self) -> u64 {
        self.cache.stats().store_errors
    }

    /// Requests passed to the origin because the store failed them.
    pub fn store_error_bypasses(&self) -> u64 {
        let stats = self.cache.stats();
        stats
            .totals
            .bypasses
            .get("store-error")
            .copied()
            .unwrap_or(0)
    }

    /// Responses not stored because the store refused or failed the put.
    pub fn store_failed_puts(&self) -> u64 {
        let stats = self.cache.stats();
        stats
            .totals
            .not_stored
            .get("store-error")
            .copied()
            .unwrap_or(0)
    }
}

/// Two instances on one Redis, in front of one catalogue.
pub struct Fleet {
    pub redis: Redis,
    pub a: Instance,
    pub b: Instance,
}

impl Fleet {
    /// Starts the fleet on `server`, with read bodies of `body_len` bytes.
    pub async fn start(server: RedisServer, body_len: usize) -> Fleet {
        let url = server.url();
        let catalogue = Catalogue(Arc::new(Items {
            versions: Default::default(),
            padding: Bytes::from(vec![b'.'; body_len.saturating_sub(8)]),
        }));
        Fleet {
            redis: Redis(Arc::new(Mutex::new(server))),
            a: Instance::start(&url, &catalogue).await,
            b: Instance::start(&url, &catalogue).await,
        }
    }

    pub fn both(&self) -> [&Instance; 2] {
        [&self.a, &self.b]
    }

    /// Waits (bounded) until `done` holds for the fleet.
    pub async fn until(&self, what: &str, mut done: impl FnMut(&Fleet) -> bool) {
        let start = Instant::now();
        while !done(self) {
            assert!(start.elapsed() < BOUND, "{what}: not within {BOUND:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until both instances have answered `n` more hits from Redis,
    /// the traffic running: caching works (again), with nobody's help.
    pub async fn until_caching(&self, n: u64) {
        let from = [self.a.hits(), self.b.hits()];
        self.until("hits on both instances", |f| {
            f.a.hits() >= from[0] + n && f.b.hits() >= from[1] + n
        })
        .await;
    }

    /// Waits until neither instance owes a flush: every write's flush is
    /// in Redis.
    pub async fn until_settled(&self) {
        self.until("owed flushes recorded", |f| {
            f.a.owed() == 0 && f.b.owed() == 0
        })
        .await;
    }

    /// Starts readers (two per instance) and a writer per instance.
    pub fn traffic(&self) -> Traffic {
        let book = Arc::new(Book::default());
        let client = client();
        let mut tasks = Vec::new();
        for (i, instance) in self.both().into_iter().enumerate() {
            let user = User {
                i,
                addr: instance.addr,
                cache: instance.cache.clone(),
                client: client.clone(),
                book: book.clone(),
                until: Instant::now() + TRAFFIC_FOR,
            };
            tasks.push(tokio::spawn(user.clone().read(0)));
            tasks.push(tokio::spawn(user.clone().read(ITEMS / 2)));
            tasks.push(tokio::spawn(user.clone().write(i)));
            tasks.push(tokio::spawn(user.settle()));
        }
        Traffic { book, tasks }
    }
}

/// What the clients saw, and what they may expect.
#[derive(Default)]
struct Book {
    /// Per item, the newest version whose write's flush is in Redis.
    fleet: [AtomicU64; ITEMS],
    /// Per instance and item, the newest version written through it.
    own: [[AtomicU64; ITEMS]; 2],
    /// Per instance, acknowledged writes whose flush it still owed then.
    owed: [Mutex<Vec<(usize, u64)>>; 2],
    stop: AtomicBool,
    reads: AtomicU64,
    /// Per instance, reads it answered.
    reads_on: [AtomicU64; 2],
    hits: AtomicU64,
    writes: AtomicU64,
    owed_writes: AtomicU64,
    /// Reads older than a write another instance answered with its flush
    /// owed, before the retry landed.
    owed_window: AtomicU64,
    failures: Mutex<Vec<String>>,
    stale: Mutex<Vec<String>>,
}

impl Book {
    /// The oldest version a read of `id` on instance `i` may return.
    fn floor(&self, i: usize, id: usize) -> u64 {
        self.fleet[id]
            .load(SeqCst)
            .max(self.own[i][id].load(SeqCst))
    }

    /// The newest version acknowledged anywhere, its flush owed or not.
    fn newest(&self, id: usize) -> u64 {
        self.own
            .iter()
            .map(|own| own[id].load(SeqCst))
            .max()
            .unwrap_or(0)
    }

    fn failed(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }
}

/// One client of one instance.
#[derive(Clone)]
struct User {
    i: usize,
    addr: SocketAddr,
    cache: Cache,
    client: Client,
    book: Arc<Book>,
    until: Instant,
}

impl User {
    fn done(&self) -> bool {
        self.book.stop.load(SeqCst) || Instant::now() > self.until
    }

    fn name(&self) -> char {
        ['A', 'B'][self.i]
    }

    async fn send(&self, method: &str, id: usize) -> Result<Seen, String> {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}/items/{id}", self.addr))
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let exchange = async {
            let res = self.client.request(req).await.map_err(|e| e.to_string())?;
            let (parts, body) = res.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?;
            Ok(Seen {
                status: parts.status,
                headers: parts.headers,
                body: body.to_bytes(),
            })
        };
        tokio::time::timeout(REQUEST_BOUND, exchange)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {REQUEST_BOUND:?}")))
    }

    /// Reads the items in turn, from `first` on.
    async fn read(self, first: usize) {
        for n in 0..READS_PER_READER {
            if self.done() {
                return;
            }
            let id = (first + n) % ITEMS;
            let (floor, newest) = (self.book.floor(self.i, id), self.book.newest(id));
            let seen = match self.send("GET", id).await {
                Ok(seen) if seen.status == StatusCode::OK => seen,
                Ok(seen) => {
                    let status = seen.cache_status().to_owned();
                    self.book.failed(format!(
                        "{} GET {id}: {} ({status})",
                        self.name(),
                        seen.status
                    ));
                    continue;
                }
                Err(e) => {
                    self.book.failed(format!("{} GET {id}: {e}", self.name()));
                    continue;
                }
            };
            self.book.reads.fetch_add(1, SeqCst);
            self.book.reads_on[self.i].fetch_add(1, SeqCst);
            if seen.is_hit() {
                self.book.hits.fetch_add(1, SeqCst);
            }
            match version(&seen.body) {
                // Older than a write another instance answered with its
                // flush owed: what the promise under a partition allows.
                Some(v) if v >= floor && v < newest => {
                    self.book.owed_window.fetch_add(1, SeqCst);
                }
                Some(v) if v >= floor => {}
                v => self.book.stale.lock().unwrap().push(format!(
                    "{} GET {id}: {v:?} after v{floor} was acknowledged ({})",
                    self.name(),
                    seen.cache_status()
                )),
            }
            tokio::time::sleep(READ_PAUSE).await;
        }
    }

    /// Writes the items in turn, from `first` on.
    async fn write(self, first: usize) {
        for n in 0..WRITES_PER_WRITER {
            if self.done() {
                return;
            }
            let id = (first + n) % ITEMS;
            match self.send("PUT", id).await {
                Ok(seen) if seen.status == StatusCode::OK => match version(&seen.body) {
                    Some(v) => self.acknowledged(id, v),
                    None => self.book.failed(format!("PUT {id}: {:?}", seen.body)),
                },
                Ok(seen) => self
                    .book
                    .failed(format!("{} PUT {id}: {}", self.name(), seen.status)),
                Err(e) => self.book.failed(format!("{} PUT {id}: {e}", self.name())),
            }
            let next = self.book.reads_on[self.i].load(SeqCst) + READS_PER_WRITE;
            while !self.done() && self.book.reads_on[self.i].load(SeqCst) < next {
                tokio::time::sleep(READ_PAUSE).await;
            }
        }
    }

    /// A write's 2xx is in hand: it holds here at once, and everywhere
    /// once this instance owes no flush (at once, unless its flush failed).
    fn acknowledged(&self, id: usize, v: u64) {
        let book = &self.book;
        book.writes.fetch_add(1, SeqCst);
        book.own[self.i][id].fetch_max(v, SeqCst);
        let mut owed = book.owed[self.i].lock().unwrap();
        if self.cache.stats().owed_flush_records == 0 {
            book.fleet[id].fetch_max(v, SeqCst);
        } else {
            book.owed_writes.fetch_add(1, SeqCst);
            owed.push((id, v));
        }
    }

    /// Moves this instance's owed writes to the fleet's book once it owes
    /// nothing any more.
    async fn settle(self) {
        while !self.done() {
            {
                let mut owed = self.book.owed[self.i].lock().unwrap();
                if !owed.is_empty() && self.cache.stats().owed_flush_records == 0 {
                    for (id, v) in owed.drain(..) {
                        self.book.fleet[id].fetch_max(v, SeqCst);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The traffic under way.
pub struct Traffic {
    book: Arc<Book>,
    tasks: Vec<JoinHandle<()>>,
}

impl Traffic {
    /// Waits (bounded) until `n` writes were answered with their flush
    /// owed: the store failed them for the whole store timeout.
    pub async fn until_owed_writes(&self, n: u64) {
        let start = Instant::now();
        while self.book.owed_writes.load(SeqCst) < n {
            assert!(
                start.elapsed() < BOUND,
                "no write answered with its flush owed"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Writes acknowledged so far.
    pub fn writes(&self) -> u64 {
        self.book.writes.load(SeqCst)
    }

    /// Waits (bounded) until `n` more writes are acknowledged.
    pub async fn until_writes(&self, n: u64) {
        let from = self.book.writes.load(SeqCst);
        let start = Instant::now();
        while self.book.writes.load(SeqCst) < from + n {
            assert!(start.elapsed() < BOUND, "{n} writes not answered");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops the traffic and says what it saw.
    pub async fn stop(self, fault: &'static str) -> Report {
        self.book.stop.store(true, SeqCst);
        for task in self.tasks {
            tokio::time::timeout(BOUND, task)
                .await
                .expect("the traffic stops")
                .expect("no client task panics");
        }
        let book = &self.book;
        let report = Report {
            fault,
            reads: book.reads.load(SeqCst),
            hits: book.hits.load(SeqCst),
            writes: book.writes.load(SeqCst),
            owed_writes: book.owed_writes.load(SeqCst),
            owed_window: book.owed_window.load(SeqCst),
            failures: std::mem::take(&mut book.failures.lock().unwrap()),
            stale: std::mem::take(&mut book.stale.lock().unwrap()),
        };
        eprintln!(
            "{fault}: {} reads ({} hits), {} writes ({} answered with their flush owed, \
             {} reads elsewhere older than one of those), {} failed, {} stale",
            report.reads,
            report.hits,
            report.writes,
            report.owed_writes,
            report.owed_window,
            report.failures.len(),
            report.stale.len()
        );
        report
    }
}

/// What the traffic saw.
pub struct Report {
    fault: &'static str,
    pub reads: u64,
    pub hits: u64,
    pub writes: u64,
    pub owed_writes: u64,
    pub owed_window: u64,
    pub failures: Vec<String>,
    pub stale: Vec<String>,
}

impl Report {
    /// No request failed, no read returned data older than a write it
    /// had to see, and there was traffic to judge.
    pub fn assert_held(&self) {
        let fault = self.fault;
        assert!(
            self.failures.is_empty(),
            "{fault}: {} requests failed: {:#?}",
            self.failures.len(),
            &self.failures[..self.failures.len().min(10)]
        );
        assert!(
            self.stale.is_empty(),
            "{fault}: {} reads returned data older than an acknowledged write: {:#?}",
            self.stale.len(),
            &self.stale[..self.stale.len().min(10)]
        );
        assert!(self.reads > 0 && self.hits > 0 && self.writes > 0);
    }
}
