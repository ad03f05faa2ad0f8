//! Load comparison, in one run: a plain axum handler, a slow origin, the
//! origin behind this crate's `CacheLayer`, and behind each peer crate.
//!
//! ```sh
//! cargo bench --manifest-path loadbench/Cargo.toml --bench load
//! # a quick smoke run (its files go to target/loadbench/):
//! LOADBENCH_SECS=1 LOADBENCH_ROUNDS=1 LOADBENCH_FILL=10000 cargo bench --manifest-path loadbench/Cargo.toml --bench load
//! ```
//!
//! The binary plays three parts, chosen by its first argument: with none
//! it runs the comparison; `serve` and `fill <cache>` are the servers it
//! starts (re-executing itself, pinned with `taskset`). See
//! `loadbench/README.md` for what it needs, `report-template.md` for the
//! method and `BENCHMARKS.md` for figures.

mod server;

use std::collections::HashMap;
use std::env;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use loadbench::chart::{self, Group};
use loadbench::child::{self, Server};
use loadbench::client::{self, Conn, Reply};
use loadbench::proc::{self, Machine};
use loadbench::report::{self, Comparison, Goals, Memory, Report, Sample, Settings};
use loadbench::wrk::{self, Load, Script};

use server::{Kind, ORIGIN_DELAY, SIZES};

const COMMAND: &str = "cargo bench --manifest-path loadbench/Cargo.toml --bench load";

/// Keep-alive connections the memory fill uses.
const FILL_CONNECTIONS: usize = 32;

/// Other processes' CPU time, as a share of one CPU, above which a pair of
/// runs is made again: a shared machine (a build in the background) must
/// not pass for a slow route.
const FOREIGN_LIMIT: f64 = 0.10;

/// Times a disturbed pair is made again before it is kept (with a warning).
const MAX_REDO: u32 = 3;

/// Longest the whole run waits for other processes to quiet down.
const MAX_WAIT: Duration = Duration::from_secs(60);

fn main() {
    // cargo passes `--bench`; other flags and filters are ignored.
    let args: Vec<String> = env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    match args.first().map(String::as_str) {
        Some("serve") => server::serve_load(),
        Some("fill") => server::serve_fill(args.get(1).map(String::as_str)),
        _ => {
            if let Err(e) = run() {
                eprintln!("loadbench: error: {e}");
                std::process::exit(1);
            }
        }
    }
}

/// What the environment asks for.
struct Config {
    secs: u64,
    rounds: u32,
    connections: u32,
    fill: u64,
    server_cpu: Option<usize>,
    client_cpu: Option<usize>,
    out: PathBuf,
    /// Adds the diagnostic `plain-hit-headers` route.
    diag: bool,
}

const DEFAULT_SECS: u64 = 2;
const DEFAULT_ROUNDS: u32 = 8;
const DEFAULT_CONNECTIONS: u32 = 64;
const DEFAULT_FILL: u64 = 100_000;

fn env_value<T: FromStr>(name: &str, default: T) -> io::Result<T> {
    match env::var(name) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name}={v:?} is not valid"),
            )
        }),
        _ => Ok(default),
    }
}

fn env_cpu(name: &str, default: usize) -> io::Result<Option<usize>> {
    match env::var(name) {
        Ok(v) if v.trim() == "none" => Ok(None),
        _ => env_value(name, default).map(Some),
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

impl Config {
    fn from_env() -> io::Result<Self> {
        let secs = env_value("LOADBENCH_SECS", DEFAULT_SECS)?.max(1);
        let rounds = env_value("LOADBENCH_ROUNDS", DEFAULT_ROUNDS)?.max(1);
        let connections = env_value("LOADBENCH_CONNECTIONS", DEFAULT_CONNECTIONS)?.max(1);
        let fill = env_value("LOADBENCH_FILL", DEFAULT_FILL)?.max(1000);
        let diag = env_value("LOADBENCH_DIAG", 0u8)? != 0;
        let full = !diag
            && (secs, rounds, connections, fill)
                == (
                    DEFAULT_SECS,
                    DEFAULT_ROUNDS,
                    DEFAULT_CONNECTIONS,
                    DEFAULT_FILL,
                );
        // A shortened run must not overwrite the published figures.
        let out = match env::var_os("LOADBENCH_OUT") {
            Some(dir) => PathBuf::from(dir),
            None if full => repo_root(),
            None => repo_root().join("target").join("loadbench"),
        };
        Ok(Self {
            secs,
            rounds,
            connections,
            fill,
            server_cpu: env_cpu("LOADBENCH_SERVER_CPU", 0)?,
            client_cpu: env_cpu("LOADBENCH_CLIENT_CPU", 1)?,
            out,
            diag,
        })
    }
}

fn size_label(suffix: &str) -> String {
    match suffix {
        "1k" => "1 KiB".to_owned(),
        "64k" => "64 KiB".to_owned(),
        other => other.to_owned(),
    }
}

/// Crate versions as loadbench's own lockfile pins them.
fn versions() -> Vec<(String, String)> {
    let lock = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock"))
        .unwrap_or_default();
    [
        "tower-response-cache",
        "quick_cache",
        "axum-response-cache",
        "cached",
        "tower-http-cache",
        "moka",
        "axum",
        "hyper",
        "tokio",
        "plotters",
    ]
    .iter()
    .filter_map(|name| Some(((*name).to_owned(), proc::locked_version(&lock, name)?)))
    .collect()
}

fn label(kind: Kind, versions: &[(String, String)]) -> String {
    let name = kind.path();
    if matches!(kind, Kind::AxumResponseCache | Kind::TowerHttpCache) {
        if let Some((_, v)) = versions.iter().find(|(n, _)| n == name) {
            return format!("{name} {v}");
        }
    }
    name.to_owned()
}

fn check_reply(path: &str, reply: &Reply, len: usize) -> io::Result<()> {
    if reply.status != 200 || reply.body.len() != len {
        return Err(io::Error::other(format!(
            "GET {path}: status {}, {} bytes (expected 200 and {len})",
            reply.status,
            reply.body.len()
        )));
    }
    Ok(())
}

/// GETs every route twice (the first fills each cache) and checks status
/// and length; returns the `Cache-Status` of `ours`' second reply.
async fn check_routes(port: u16) -> io::Result<String> {
    let mut conn = Conn::open(port).await?;
    let mut status = String::new();
    for (suffix, len) in SIZES {
        for kind in Kind::ALL.into_iter().chain([Kind::PlainHitHeaders]) {
            let path = format!("/{}/{suffix}", kind.path());
            for _ in 0..2 {
                let reply = conn.get(&path).await?;
                check_reply(&path, &reply, len)?;
                if kind == Kind::Ours && status.is_empty() {
                    if let Some(v) = reply.headers.get("cache-status") {
                        status = v.to_str().unwrap_or("?").to_owned();
                    }
                }
            }
        }
    }
    Ok(status)
}

/// The server's origin call counters.
async fn calls(port: u16) -> io::Result<HashMap<String, u64>> {
    let reply = Conn::open(port).await?.get("/_calls").await?;
    Ok(String::from_utf8_lossy(&reply.body)
        .lines()
        .filter_map(|l| {
            let (name, n) = l.split_once(' ')?;
            Some((name.to_owned(), n.parse().ok()?))
        })
        .collect())
}

/// Busy time of `cpus` together (every CPU when empty), nanoseconds.
fn busy_ns(cpus: &[usize]) -> io::Result<u64> {
    let busy = proc::cpu_busy_ns()?;
    Ok(if cpus.is_empty() {
        busy.iter().sum()
    } else {
        cpus.iter().filter_map(|&c| busy.get(c)).sum()
    })
}

/// One wrk run, with the server CPU time it cost and the CPU time other
/// processes took on `cpus` meanwhile.
fn measure(
    load: &Load,
    script: &Script,
    server: &Server,
    cpus: &[usize],
    path: &str,
) -> io::Result<Sample> {
    let url = format!("http://127.0.0.1:{}{path}", server.port);
    let machine_before = busy_ns(cpus)?;
    let before = proc::cpu_ns(server.pid())?;
    let wrk = wrk::run(load, script, &url)?;
    let after = proc::cpu_ns(server.pid())?;
    let machine_after = busy_ns(cpus)?;
    let cpu_ns = after.saturating_sub(before);
    let ours = cpu_ns + wrk.client_cpu_us * 1000;
    Ok(Sample {
        wrk,
        cpu_ns,
        foreign_ns: machine_after
            .saturating_sub(machine_before)
            .saturating_sub(ours),
    })
}

/// Waits until other processes leave `cpus` nearly idle (below `limit`
/// of a CPU over half a second), at most `max_wait`. Returns how long it
/// waited, or `None` when the machine never became quiet.
fn wait_quiet(cpus: &[usize], limit: f64, max_wait: Duration) -> io::Result<Option<Duration>> {
    let started = Instant::now();
    let window = Duration::from_millis(500);
    let mut said = false;
    loop {
        let before = busy_ns(cpus)?;
        std::thread::sleep(window);
        let load = busy_ns(cpus)?.saturating_sub(before) as f64 / window.as_nanos() as f64;
        if load <= limit {
            return Ok(Some(started.elapsed()));
        }
        if started.elapsed() >= max_wait {
            return Ok(None);
        }
        if !said {
            eprintln!(
                "loadbench: other processes are using {:.0}% of a CPU; waiting for quiet",
                load * 100.0
            );
            said = true;
        }
    }
}

/// Fills a fresh `fill` server with `n` distinct 1 KiB entries and reads
/// what its resident memory gained.
async fn fill(server: &Server, cache: &str, label: String, n: u64) -> io::Result<Memory> {
    let (port, pid) = (server.port, server.pid());
    // Connections open and buffers grown before the first reading.
    let mut conns = Vec::with_capacity(FILL_CONNECTIONS);
    for _ in 0..FILL_CONNECTIONS {
        let mut conn = Conn::open(port).await?;
        for _ in 0..4 {
            let reply = conn.get("/warm").await?;
            check_reply("/warm", &reply, 1024)?;
        }
        conns.push(conn);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = proc::rss_bytes(pid)?;
    let started = Instant::now();
    let check = |path: &str, reply: &Reply| check_reply(path, reply, 1024);
    client::drive_on(conns, n as usize, |i| format!("/fill/{i:06}"), check).await?;
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_after = proc::rss_bytes(pid)?;

    let mut conn = Conn::open(port).await?;
    let (mut held, mut weighed) = (None, None);
    if cache == Kind::Ours.path() {
        let reply = conn.get("/_stats").await?;
        for line in String::from_utf8_lossy(&reply.body).lines() {
            match line.split_once(' ') {
                Some(("entries", v)) => held = v.parse().ok(),
                Some(("bytes", v)) => weighed = v.parse().ok(),
                _ => {}
            }
        }
    }
    let filled = calls(port).await?.get("/fill").copied().unwrap_or(0);
    let verified = if cache == "none" {
        None
    } else {
        // Every sampled key again: a cache that kept them all serves each
        // without calling the origin.
        let step = (n / 1000).max(1) as usize;
        for i in (0..n as usize).step_by(step) {
            let path = format!("/fill/{i:06}");
            check_reply(&path, &conn.get(&path).await?, 1024)?;
        }
        let again = calls(port).await?.get("/fill").copied().unwrap_or(0);
        Some(again == filled && filled == n)
    };
    eprintln!(
        "loadbench: filled {label}: {n} entries in {:.1} s, RSS {:.1} → {:.1} MiB ({:.0} B/entry)",
        took.as_secs_f64(),
        rss_before as f64 / 1048576.0,
        rss_after as f64 / 1048576.0,
        rss_after.saturating_sub(rss_before) as f64 / n as f64
    );
    Ok(Memory {
        cache: label,
        entries: n,
        held,
        verified,
        rss_before,
        rss_after,
        weighed,
    })
}

fn run() -> io::Result<()> {
    let started = Instant::now();
    let cfg = Config::from_env()?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cfg.server_cpu.is_some() || cfg.client_cpu.is_some() {
        if !child::available("taskset") {
            return Err(io::Error::other(
                "taskset (util-linux) is needed to pin the processes; install it, or set \
                 LOADBENCH_SERVER_CPU=none LOADBENCH_CLIENT_CPU=none",
            ));
        }
        for cpu in [cfg.server_cpu, cfg.client_cpu].into_iter().flatten() {
            if cpu >= cores {
                return Err(io::Error::other(format!(
                    "CPU {cpu} is not available ({cores} CPUs); set LOADBENCH_SERVER_CPU and \
                     LOADBENCH_CLIENT_CPU"
                )));
            }
        }
    }
    wrk::ensure_installed()?;
    let exe = env::current_exe()?;
    let exe = exe
        .to_str()
        .ok_or_else(|| io::Error::other("the bench's path is not UTF-8"))?
        .to_owned();
    let script = Script::write(&env::temp_dir())?;
    let versions = versions();
    let rt = client::runtime()?;

    let mut routes: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| *k != Kind::Plain)
        .collect();
    if cfg.diag {
        routes.push(Kind::PlainHitHeaders);
    }
    let runs = cfg.rounds as usize * SIZES.len() * (routes.len() * 2 + 1);
    // Each run starts wrk and opens its connections; the fills take ~15 s.
    let estimate = (runs as f64 * (cfg.secs as f64 + 0.15) + 25.0) as u64;
    eprintln!(
        "loadbench: {runs} wrk runs of {} s ({} rounds), then memory fills of {} entries; \
         about {} s",
        cfg.secs, cfg.rounds, cfg.fill, estimate
    );

    // Throughput, latency, CPU: one server, every route, on a quiet machine.
    let mut warnings = Vec::new();
    let cpus: Vec<usize> = match (cfg.server_cpu, cfg.client_cpu) {
        (Some(a), Some(b)) => vec![a, b],
        _ => Vec::new(),
    };
    if wait_quiet(&cpus, FOREIGN_LIMIT, Duration::from_secs(30))?.is_none() {
        warnings.push(
            "other processes kept the machine busy before the run; figures may be disturbed"
                .to_owned(),
        );
    }
    let load = Load {
        cpu: cfg.client_cpu,
        connections: cfg.connections,
        threads: 1,
        duration: Duration::from_secs(cfg.secs),
    };
    let server = Server::start("server", cfg.server_cpu, &exe, &["serve"])?;
    let cache_status = rt.block_on(check_routes(server.port))?;
    eprintln!(
        "loadbench: server on port {}, ours answers `{cache_status}`",
        server.port
    );
    let calls_before = rt.block_on(calls(server.port))?;
    let warm = Load {
        duration: Duration::from_secs(1),
        ..load.clone()
    };
    for (suffix, _) in SIZES {
        measure(&warm, &script, &server, &cpus, &format!("/plain/{suffix}"))?;
    }

    let mut plain: Vec<Comparison> = SIZES
        .iter()
        .map(|(suffix, _)| Comparison {
            route: "plain".to_owned(),
            size: size_label(suffix),
            ..Comparison::default()
        })
        .collect();
    let mut compared: Vec<Comparison> = SIZES
        .iter()
        .flat_map(|(suffix, _)| {
            routes.iter().map(|kind| Comparison {
                route: label(*kind, &versions),
                size: size_label(suffix),
                ..Comparison::default()
            })
        })
        .collect();
    let mut redone = 0u32;
    let mut kept_disturbed = 0u32;
    let mut wait_budget = MAX_WAIT;
    for round in 0..cfg.rounds as usize {
        for (s, (suffix, _)) in SIZES.iter().enumerate() {
            // plain, route, plain, route, ..., plain: every route between two
            // plain runs, the routes in a different order each round.
            let plain_path = format!("/plain/{suffix}");
            let mut before = measure(&load, &script, &server, &cpus, &plain_path)?;
            plain[s].runs.push(before);
            plain[s].plain.push(before);
            for i in 0..routes.len() {
                let r = (i + round) % routes.len();
                let path = format!("/{}/{suffix}", routes[r].path());
                let mut attempts = 0;
                let (b, after) = loop {
                    let b = measure(&load, &script, &server, &cpus, &path)?;
                    let after = measure(&load, &script, &server, &cpus, &plain_path)?;
                    let other = before.foreign().max(b.foreign()).max(after.foreign());
                    if other <= FOREIGN_LIMIT {
                        break (b, after);
                    }
                    if attempts >= MAX_REDO || wait_budget.is_zero() {
                        kept_disturbed += 1;
                        compared[s * routes.len() + r].disturbed += 1;
                        plain[s].disturbed += 1;
                        break (b, after);
                    }
                    attempts += 1;
                    redone += 1;
                    eprintln!(
                        "loadbench: {path}: other processes took {:.0}% of a CPU; again",
                        other * 100.0
                    );
                    let t = Instant::now();
                    wait_quiet(
                        &cpus,
                        FOREIGN_LIMIT,
                        wait_budget.min(Duration::from_secs(20)),
                    )?;
                    wait_budget = wait_budget.saturating_sub(t.elapsed());
                    before = measure(&load, &script, &server, &cpus, &plain_path)?;
                };
                let a = before.merge(&after);
                plain[s].runs.push(after);
                plain[s].plain.push(after);
                let c = &mut compared[s * routes.len() + r];
                c.runs.push(b);
                c.plain.push(a);
                eprintln!(
                    "loadbench: round {}/{} {:>6} {:<28} {:>9.0} req/s, plain {:>9.0} ({:.3}), \
                     server {:.0}%/{:.0}%, wrk {:.0}%/{:.0}%, other {:.0}%/{:.0}%",
                    round + 1,
                    cfg.rounds,
                    c.size,
                    c.route,
                    b.wrk.rps(),
                    a.wrk.rps(),
                    b.wrk.rps() / a.wrk.rps().max(1.0),
                    b.busy() * 100.0,
                    a.busy() * 100.0,
                    b.client_busy() * 100.0,
                    a.client_busy() * 100.0,
                    b.foreign() * 100.0,
                    a.foreign() * 100.0,
                );
                before = after;
            }
        }
    }
    if kept_disturbed > 0 {
        warnings.push(format!(
            "{kept_disturbed} pairs of runs were kept although other processes took more than \
             {:.0}% of a CPU during them (the machine did not become quiet in time)",
            FOREIGN_LIMIT * 100.0
        ));
    }
    let calls_after = rt.block_on(calls(server.port))?;
    server.stop();

    for (suffix, _) in SIZES {
        for kind in routes.iter().filter(|k| k.cached()) {
            let path = format!("/{}/{suffix}", kind.path());
            let n = calls_after.get(&path).copied().unwrap_or(0)
                - calls_before.get(&path).copied().unwrap_or(0);
            if n > 0 {
                warnings.push(format!(
                    "{path} called its origin {n} times during the runs: not every request was a hit"
                ));
            }
        }
    }
    for c in plain.iter().chain(&compared) {
        let f = c.figures();
        if f.errors > 0 {
            warnings.push(format!(
                "{} {}: {} errors or non-2xx responses",
                c.route, c.size, f.errors
            ));
        }
    }
    for c in &plain {
        let busy = c.figures().busy;
        if busy < 0.9 {
            warnings.push(format!(
                "plain {}: the server's core was only {:.0}% busy, so the load generator may be \
                 the limit, which pulls every ratio towards 1",
                c.size,
                busy * 100.0
            ));
        }
    }

    // Memory per entry: a fresh server per cache.
    let mut memory = Vec::new();
    let caches = ["none"]
        .into_iter()
        // The lean profile's entries are the default's less one header.
        .chain(
            routes
                .iter()
                .filter(|k| k.cached() && **k != Kind::OursLean)
                .map(|k| k.path()),
        );
    for cache in caches {
        let name = format!("fill server ({cache})");
        let server = Server::start(&name, cfg.server_cpu, &exe, &["fill", cache])?;
        let label = Kind::ALL
            .into_iter()
            .find(|k| k.path() == cache)
            .map_or_else(|| cache.to_owned(), |k| label(k, &versions));
        let m = rt.block_on(fill(&server, cache, label, cfg.fill))?;
        server.stop();
        if m.verified == Some(false) {
            warnings.push(format!(
                "{}: the fill called the origin more often than once per key, or a re-read \
                 missed: the cache did not keep every entry",
                m.cache
            ));
        }
        if m.held.is_some_and(|h| h != cfg.fill) {
            warnings.push(format!(
                "{}: holds {:?} of {} entries",
                m.cache, m.held, cfg.fill
            ));
        }
        memory.push(m);
    }

    let mut machine = Machine::describe();
    if let Some((head, _)) = machine.wrk.split_once(" Copyright") {
        machine.wrk = head.to_owned();
    }
    let report = Report {
        machine,
        versions,
        settings: Settings {
            secs: cfg.secs,
            rounds: cfg.rounds,
            connections: cfg.connections,
            threads: load.threads,
            cpus: (cfg.server_cpu, cfg.client_cpu),
            origin_delay: ORIGIN_DELAY,
            fill_entries: cfg.fill,
            fill_connections: FILL_CONNECTIONS,
            command: COMMAND.to_owned(),
        },
        date: report::today(),
        elapsed: started.elapsed(),
        plain,
        routes: compared,
        memory,
        goals: Goals::default(),
        ours: label(Kind::Ours, &[]),
        warnings,
        redone,
        foreign_limit: FOREIGN_LIMIT,
    };
    println!("\n{}", report.table());

    let sizes: Vec<String> = SIZES.iter().map(|(s, _)| size_label(s)).collect();
    let size_refs: Vec<&str> = sizes.iter().map(String::as_str).collect();
    let mut groups = vec![Group {
        label: "plain".to_owned(),
        ratios: vec![1.0; sizes.len()],
    }];
    for kind in &routes {
        let name = label(*kind, &report.versions);
        let ratios = sizes
            .iter()
            .map(|size| report.find(&name, size).map_or(0.0, |c| c.ratios().rps))
            .collect();
        groups.push(Group {
            label: kind.path().to_owned(),
            ratios,
        });
    }
    let chart_rel = "docs/loadbench.svg";
    let chart_path = cfg.out.join(chart_rel);
    chart::write_svg(
        &chart_path,
        &format!(
            "Requests per second relative to plain (one server core, wrk -c{})",
            cfg.connections
        ),
        &size_refs,
        &groups,
        report.goals.min_rps_ratio,
    )?;
    let md_path = cfg.out.join("BENCHMARKS.md");
    fs::create_dir_all(&cfg.out)?;
    fs::write(&md_path, report.markdown(chart_rel))?;
    println!("wrote {} and {}", md_path.display(), chart_path.display());
    Ok(())
}
