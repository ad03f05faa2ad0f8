//! Figures from the runs, the goals they are held to, and the two ways
//! they are shown: a terminal table and `BENCHMARKS.md` (the tables made
//! here, the prose from `loadbench/report-template.md`).

use std::fmt::Write as _;
use std::time::Duration;

use crate::proc::Machine;
use crate::template;
use crate::wrk::Summary;

/// One wrk run against one route, with the server CPU time it cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    /// What wrk measured.
    pub wrk: Summary,
    /// Server CPU time during the run, in nanoseconds.
    pub cpu_ns: u64,
    /// CPU time other processes took on the CPUs of the server and wrk
    /// during the run, in nanoseconds.
    pub foreign_ns: u64,
}

impl Sample {
    /// Server CPU time per request, in nanoseconds.
    pub fn cpu_per_request(&self) -> f64 {
        if self.wrk.requests == 0 {
            return 0.0;
        }
        self.cpu_ns as f64 / self.wrk.requests as f64
    }

    /// Share of the run's wall time the server spent on a CPU (1.0: the
    /// server's core was saturated).
    pub fn busy(&self) -> f64 {
        if self.wrk.duration_us == 0 {
            return 0.0;
        }
        self.cpu_ns as f64 / (self.wrk.duration_us as f64 * 1e3)
    }

    /// Two runs taken as one: counts and times added, percentiles averaged.
    #[must_use]
    pub fn merge(&self, other: &Sample) -> Sample {
        let (a, b) = (&self.wrk, &other.wrk);
        Sample {
            wrk: Summary {
                requests: a.requests + b.requests,
                duration_us: a.duration_us + b.duration_us,
                bytes: a.bytes + b.bytes,
                p50_us: (a.p50_us + b.p50_us) / 2,
                p99_us: (a.p99_us + b.p99_us) / 2,
                max_us: a.max_us.max(b.max_us),
                socket_errors: a.socket_errors + b.socket_errors,
                bad_status: a.bad_status + b.bad_status,
                client_cpu_us: a.client_cpu_us + b.client_cpu_us,
            },
            cpu_ns: self.cpu_ns + other.cpu_ns,
            foreign_ns: self.foreign_ns + other.foreign_ns,
        }
    }

    /// Share of the run's wall time wrk spent on a CPU.
    pub fn client_busy(&self) -> f64 {
        if self.wrk.duration_us == 0 {
            return 0.0;
        }
        self.wrk.client_cpu_us as f64 / self.wrk.duration_us as f64
    }

    /// Other processes' CPU time over the run's wall time (in CPUs: 0.5 is
    /// half a CPU's worth).
    pub fn foreign(&self) -> f64 {
        if self.wrk.duration_us == 0 {
            return 0.0;
        }
        self.foreign_ns as f64 / (self.wrk.duration_us as f64 * 1e3)
    }
}

/// The mean of several samples of one route.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Figures {
    /// Requests per second.
    pub rps: f64,
    /// Median latency, microseconds (mean over runs).
    pub p50_us: f64,
    /// 99th percentile latency, microseconds (mean over runs).
    pub p99_us: f64,
    /// Server CPU per request, nanoseconds (all CPU time over all requests).
    pub cpu_ns: f64,
    /// Server CPU busy share.
    pub busy: f64,
    /// wrk's CPU busy share.
    pub client_busy: f64,
    /// Non-2xx responses and socket errors, summed.
    pub errors: u64,
}

impl Figures {
    /// Figures of `samples` (all zero when there are none).
    pub fn of(samples: &[Sample]) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        let n = samples.len() as f64;
        let requests: u64 = samples.iter().map(|s| s.wrk.requests).sum();
        let cpu: u64 = samples.iter().map(|s| s.cpu_ns).sum();
        Self {
            rps: samples.iter().map(|s| s.wrk.rps()).sum::<f64>() / n,
            p50_us: samples.iter().map(|s| s.wrk.p50_us as f64).sum::<f64>() / n,
            p99_us: samples.iter().map(|s| s.wrk.p99_us as f64).sum::<f64>() / n,
            cpu_ns: if requests == 0 {
                0.0
            } else {
                cpu as f64 / requests as f64
            },
            busy: samples.iter().map(Sample::busy).sum::<f64>() / n,
            client_busy: samples.iter().map(Sample::client_busy).sum::<f64>() / n,
            errors: samples
                .iter()
                .map(|s| s.wrk.bad_status + s.wrk.socket_errors)
                .sum(),
        }
    }
}

/// A route's runs at one body size, each paired with the `plain` run
/// made just before it.
#[derive(Debug, Clone, Default)]
pub struct Comparison {
    /// Route label (`ours`, a peer crate's name and version, ...).
    pub route: String,
    /// Body size label (`1 KiB`, `64 KiB`).
    pub size: String,
    /// The route's runs, one per round.
    pub runs: Vec<Sample>,
    /// The `plain` run paired with each of them.
    pub plain: Vec<Sample>,
    /// Pairs kept although other processes disturbed them.
    pub disturbed: u32,
}

/// Ratios of a route's figures to those of its paired `plain` runs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Ratios {
    /// Requests per second, route over plain (higher is better).
    pub rps: f64,
    /// Lowest and highest of the per-round rps ratios.
    pub rps_range: (f64, f64),
    /// Median latency, route over plain (lower is better).
    pub p50: f64,
    /// 99th percentile latency, route over plain.
    pub p99: f64,
    /// Server CPU per request, route over plain (lower is better).
    pub cpu: f64,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / b
    }
}

impl Comparison {
    /// The route's own figures.
    pub fn figures(&self) -> Figures {
        Figures::of(&self.runs)
    }

    /// The paired plain runs' figures.
    pub fn plain_figures(&self) -> Figures {
        Figures::of(&self.plain)
    }

    /// The route against its paired plain runs.
    pub fn ratios(&self) -> Ratios {
        // Each run against the plain run just before it, then the median of
        // those ratios: drift between rounds cancels within each pair, and
        // one disturbed pair does not move the median.
        let pairs: Vec<(&Sample, &Sample)> = self.runs.iter().zip(&self.plain).collect();
        let per_pair = |f: &dyn Fn(&Sample, &Sample) -> f64| -> Vec<f64> {
            pairs.iter().map(|(r, p)| f(r, p)).collect()
        };
        let rps = per_pair(&|r, p| ratio(r.wrk.rps(), p.wrk.rps()));
        let lo = rps.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = rps.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Ratios {
            rps: median(rps.clone()),
            rps_range: if rps.is_empty() { (0.0, 0.0) } else { (lo, hi) },
            p50: median(per_pair(&|r, p| {
                ratio(r.wrk.p50_us as f64, p.wrk.p50_us as f64)
            })),
            p99: median(per_pair(&|r, p| {
                ratio(r.wrk.p99_us as f64, p.wrk.p99_us as f64)
            })),
            cpu: median(per_pair(&|r, p| {
                ratio(r.cpu_per_request(), p.cpu_per_request())
            })),
        }
    }
}

/// The median (the mean of the middle two for an even count; 0 for none).
pub fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// Resident memory a cache gained while filling distinct 1 KiB entries.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// Cache label (`none` for the uncached control).
    pub cache: String,
    /// Distinct entries requested.
    pub entries: u64,
    /// Entries the cache reports holding, when it can say.
    pub held: Option<u64>,
    /// Whether a re-read of a sample of the keys was served without
    /// calling the origin (every sampled entry still held).
    pub verified: Option<bool>,
    /// Resident memory before the fill, bytes.
    pub rss_before: u64,
    /// Resident memory after the fill, bytes.
    pub rss_after: u64,
    /// The store's own estimate of its bytes, when it has one.
    pub weighed: Option<u64>,
}

impl Memory {
    /// Resident bytes gained per entry.
    pub fn per_entry(&self) -> f64 {
        if self.entries == 0 {
            return 0.0;
        }
        self.rss_after.saturating_sub(self.rss_before) as f64 / self.entries as f64
    }
}

/// The label of this crate's route with the lean header profile.
pub const LEAN: &str = "ours-lean";

/// The peer whose 1 KiB hits the default headers must outrun.
const PEER: &str = "axum-response-cache";

/// The goals the issue sets for a cache hit and an entry.
#[derive(Debug, Clone, Copy)]
pub struct Goals {
    /// 1 KiB hit: at least this share of `plain`'s requests per second.
    pub min_rps_ratio: f64,
    /// Server CPU per hit: at most this multiple of `plain`'s.
    pub max_cpu_ratio: f64,
    /// Resident bytes per 1 KiB entry: at most this many.
    pub max_entry_bytes: f64,
}

impl Default for Goals {
    fn default() -> Self {
        Self {
            min_rps_ratio: 0.97,
            max_cpu_ratio: 1.05,
            max_entry_bytes: 1400.0,
        }
    }
}

/// How the run was made.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Seconds per wrk run.
    pub secs: u64,
    /// A B A B rounds per route and size.
    pub rounds: u32,
    /// wrk connections.
    pub connections: u32,
    /// wrk threads.
    pub threads: u32,
    /// CPU of the server, and of wrk.
    pub cpus: (Option<usize>, Option<usize>),
    /// The origin's wait.
    pub origin_delay: Duration,
    /// Entries filled for the memory figure.
    pub fill_entries: u64,
    /// Keep-alive connections the memory fill uses.
    pub fill_connections: usize,
    /// The command that reruns this.
    pub command: String,
}

/// Everything a run produced.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Where and with what it ran.
    pub machine: Machine,
    /// Crate versions, as `(name, version)`.
    pub versions: Vec<(String, String)>,
    /// How it ran.
    pub settings: Settings,
    /// Date of the run, `YYYY-MM-DD` (UTC).
    pub date: String,
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// `plain` at each size: every plain run of that size.
    pub plain: Vec<Comparison>,
    /// Every other route at each size.
    pub routes: Vec<Comparison>,
    /// Memory per entry of each cache.
    pub memory: Vec<Memory>,
    /// What the goals are.
    pub goals: Goals,
    /// The label of this crate's route.
    pub ours: String,
    /// Anything that went wrong or looks off.
    pub warnings: Vec<String>,
    /// Pairs of runs made again because other processes disturbed them.
    pub redone: u32,
    /// Other processes' CPU share above which a pair is made again.
    pub foreign_limit: f64,
}

fn us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

fn thousands(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// One row of the throughput table, as text cells.
struct Row {
    cells: Vec<String>,
}

const HEAD: [&str; 12] = [
    "route",
    "body",
    "req/s",
    "× plain",
    "p50",
    "× plain",
    "p99",
    "× plain",
    "CPU/req",
    "× plain",
    "server busy",
    "wrk busy",
];

impl Report {
    /// The comparison for `route` at `size`, if run.
    pub fn find(&self, route: &str, size: &str) -> Option<&Comparison> {
        self.routes
            .iter()
            .chain(&self.plain)
            .find(|c| c.route == route && c.size == size)
    }

    fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        let sizes: Vec<&str> = self.plain.iter().map(|c| c.size.as_str()).collect();
        for size in sizes {
            for c in self
                .plain
                .iter()
                .chain(&self.routes)
                .filter(|c| c.size == size)
            {
                let f = c.figures();
                let is_plain = c.route == "plain";
                let r = if is_plain {
                    Ratios {
                        rps: 1.0,
                        rps_range: (1.0, 1.0),
                        p50: 1.0,
                        p99: 1.0,
                        cpu: 1.0,
                    }
                } else {
                    c.ratios()
                };
                let mut route = c.route.clone();
                if f.errors > 0 {
                    route.push_str(" (errors)");
                }
                if c.disturbed > 0 {
                    route.push_str(" (disturbed)");
                }
                let rps_ratio = if is_plain {
                    "1.00".to_owned()
                } else {
                    format!("{:.3} ({:.2}–{:.2})", r.rps, r.rps_range.0, r.rps_range.1)
                };
                rows.push(Row {
                    cells: vec![
                        route,
                        c.size.clone(),
                        thousands(f.rps),
                        rps_ratio,
                        us(f.p50_us),
                        format!("{:.2}", r.p50),
                        us(f.p99_us),
                        format!("{:.2}", r.p99),
                        format!("{:.2} µs", f.cpu_ns / 1000.0),
                        format!("{:.3}", r.cpu),
                        format!("{:.0}%", f.busy * 100.0),
                        format!("{:.0}%", f.client_busy * 100.0),
                    ],
                });
            }
        }
        rows
    }

    fn memory_rows(&self) -> Vec<Vec<String>> {
        self.memory
            .iter()
            .map(|m| {
                let held = match (m.held, m.verified) {
                    (Some(n), _) => thousands(n as f64),
                    (None, Some(true)) => "all (sampled)".to_owned(),
                    (None, Some(false)) => "NOT all".to_owned(),
                    (None, None) => "—".to_owned(),
                };
                vec![
                    m.cache.clone(),
                    thousands(m.entries as f64),
                    held,
                    mib(m.rss_before),
                    mib(m.rss_after),
                    format!("{} B", thousands(m.per_entry())),
                    m.weighed.map_or_else(
                        || "—".to_owned(),
                        |w| format!("{} B", thousands(w as f64 / m.entries.max(1) as f64)),
                    ),
                ]
            })
            .collect()
    }

    /// The goal lines: what was asked, what was measured, met or not.
    pub fn goal_lines(&self) -> Vec<(String, String, String, bool)> {
        let mut lines = Vec::new();
        let g = self.goals;
        if let Some(c) = self.find(&self.ours, "1 KiB") {
            let r = c.ratios();
            lines.push((
                "1 KiB hit, req/s vs plain".to_owned(),
                format!("≥ {:.2}", g.min_rps_ratio),
                format!("{:.3}", r.rps),
                r.rps >= g.min_rps_ratio,
            ));
            lines.push((
                "1 KiB hit, server CPU/req vs plain".to_owned(),
                format!("≤ {:.2}", g.max_cpu_ratio),
                format!("{:.3}", r.cpu),
                r.cpu <= g.max_cpu_ratio,
            ));
        }
        if let Some(c) = self.find(LEAN, "1 KiB") {
            let r = c.ratios();
            lines.push((
                "1 KiB hit, lean headers, req/s vs plain".to_owned(),
                format!("≥ {:.2}", g.min_rps_ratio),
                format!("{:.3}", r.rps),
                r.rps >= g.min_rps_ratio,
            ));
        }
        let peer = self
            .routes
            .iter()
            .find(|c| c.route.starts_with(PEER) && c.size == "1 KiB");
        if let (Some(ours), Some(peer)) = (self.find(&self.ours, "1 KiB"), peer) {
            let ratio = ours.ratios().rps / peer.ratios().rps;
            lines.push((
                format!("1 KiB hit, default headers, req/s vs {}", peer.route),
                "> 1.00".to_owned(),
                format!("{ratio:.3}"),
                ratio > 1.0,
            ));
        }
        if let Some(c) = self.find(&self.ours, "64 KiB") {
            let r = c.ratios();
            lines.push((
                "64 KiB hit, server CPU/req vs plain".to_owned(),
                format!("≤ {:.2}", g.max_cpu_ratio),
                format!("{:.3}", r.cpu),
                r.cpu <= g.max_cpu_ratio,
            ));
        }
        if let Some(m) = self.memory.iter().find(|m| m.cache == self.ours) {
            lines.push((
                "resident memory per 1 KiB entry".to_owned(),
                format!("≤ {} B", thousands(g.max_entry_bytes)),
                format!("{} B", thousands(m.per_entry())),
                m.per_entry() <= g.max_entry_bytes,
            ));
        }
        lines
    }

    /// The report as a terminal table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let head: Vec<String> = HEAD.iter().map(|s| (*s).to_owned()).collect();
        let rows: Vec<Vec<String>> = self.rows().into_iter().map(|r| r.cells).collect();
        out.push_str(&text_table(&head, &rows));
        out.push('\n');
        let mhead: Vec<String> = MEMORY_HEAD.iter().map(|s| (*s).to_owned()).collect();
        out.push_str(&text_table(&mhead, &self.memory_rows()));
        out.push('\n');
        for (goal, want, got, met) in self.goal_lines() {
            let _ = writeln!(
                out,
                "goal: {goal}: {want}, measured {got} — {}",
                if met { "met" } else { "NOT met" }
            );
        }
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        let _ = writeln!(out, "run time: {:.0} s", self.elapsed.as_secs_f64());
        out
    }

    /// `BENCHMARKS.md`: `loadbench/report-template.md` (the prose) filled
    /// with this run's figures and tables; `chart` is the chart's path
    /// relative to the file.
    pub fn markdown(&self, chart: &str) -> String {
        template::fill(TEMPLATE, &self.markdown_values(chart))
            .unwrap_or_else(|e| panic!("loadbench/report-template.md: {e}"))
    }

    /// The values `loadbench/report-template.md` names, as text.
    fn markdown_values(&self, chart: &str) -> Vec<(&'static str, String)> {
        let s = &self.settings;
        let m = &self.machine;
        let cpu = |c: Option<usize>| c.map_or_else(|| "any".to_owned(), |c| c.to_string());
        let head: Vec<String> = HEAD.iter().map(|s| (*s).to_owned()).collect();
        let rows: Vec<Vec<String>> = self.rows().into_iter().map(|r| r.cells).collect();
        let mhead: Vec<String> = MEMORY_HEAD.iter().map(|s| (*s).to_owned()).collect();
        let ghead: Vec<String> = GOALS_HEAD.iter().map(|s| (*s).to_owned()).collect();
        let grows: Vec<Vec<String>> = self
            .goal_lines()
            .into_iter()
            .map(|(g, w, m, met)| vec![g, w, m, if met { "yes" } else { "**no**" }.to_owned()])
            .collect();
        let list = |items: &mut dyn Iterator<Item = String>| {
            items.fold(String::new(), |mut out, item| {
                let _ = writeln!(out, "- {item}");
                out
            })
        };
        vec![
            ("command", s.command.clone()),
            ("date", self.date.clone()),
            ("cpu", m.cpu.clone()),
            ("cores", m.cores.to_string()),
            (
                "memory_gib",
                format!("{:.0}", m.memory as f64 / (1u64 << 30) as f64),
            ),
            ("os", m.os.clone()),
            ("kernel", m.kernel.clone()),
            ("rustc", m.rustc.clone()),
            ("wrk", m.wrk.clone()),
            ("elapsed_s", format!("{:.0}", self.elapsed.as_secs_f64())),
            ("chart", chart.to_owned()),
            ("connections", s.connections.to_string()),
            ("threads", s.threads.to_string()),
            ("secs", s.secs.to_string()),
            ("rounds", s.rounds.to_string()),
            (
                "redone",
                if self.redone > 0 {
                    self.redone.to_string()
                } else {
                    String::new()
                },
            ),
            (
                "foreign_limit_pct",
                format!("{:.0}", self.foreign_limit * 100.0),
            ),
            ("throughput_table", md_table(&head, &rows)),
            ("fill_entries", thousands(s.fill_entries as f64)),
            ("fill_connections", s.fill_connections.to_string()),
            ("memory_table", md_table(&mhead, &self.memory_rows())),
            ("goals_table", md_table(&ghead, &grows)),
            ("warnings", list(&mut self.warnings.iter().cloned())),
            ("server_cpu", cpu(s.cpus.0)),
            ("client_cpu", cpu(s.cpus.1)),
            ("origin_delay_ms", s.origin_delay.as_millis().to_string()),
            (
                "versions",
                list(&mut self.versions.iter().map(|(n, v)| format!("{n} {v}"))),
            ),
        ]
    }
}

/// The prose of `BENCHMARKS.md`, with the placeholders the run fills in.
const TEMPLATE: &str = include_str!("../report-template.md");

const GOALS_HEAD: [&str; 4] = ["goal", "target", "measured", "met"];

const MEMORY_HEAD: [&str; 7] = [
    "cache",
    "entries",
    "held",
    "RSS before",
    "RSS after",
    "per entry",
    "weighed",
];

fn text_table(head: &[String], rows: &[Vec<String>]) -> String {
    let cols = head.len();
    let mut width = vec![0usize; cols];
    for row in std::iter::once(head).chain(rows.iter().map(Vec::as_slice)) {
        for (i, cell) in row.iter().enumerate().take(cols) {
            width[i] = width[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, row: &[String]| {
        for (i, cell) in row.iter().enumerate().take(cols) {
            let pad = width[i] - cell.chars().count();
            if i == 0 {
                out.push_str(cell);
                out.push_str(&" ".repeat(pad));
            } else {
                out.push_str("  ");
                out.push_str(&" ".repeat(pad));
                out.push_str(cell);
            }
        }
        out.push('\n');
    };
    line(&mut out, head);
    let total: usize = width.iter().sum::<usize>() + 2 * (cols - 1);
    out.push_str(&"-".repeat(total));
    out.push('\n');
    for row in rows {
        line(&mut out, row);
    }
    out
}

fn md_table(head: &[String], rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", head.join(" | "));
    let align: Vec<&str> = (0..head.len())
        .map(|i| if i == 0 { ":--" } else { "--:" })
        .collect();
    let _ = writeln!(out, "|{}|", align.join("|"));
    for row in rows {
        let _ = writeln!(out, "| {} |", row.join(" | "));
    }
    out
}

/// Today's date (UTC) as `YYYY-MM-DD`.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    civil_date((secs / 86_400) as i64)
}

/// `YYYY-MM-DD` of a day counted from 1970-01-01 (the proleptic
/// Gregorian calendar, by eras of 400 years).
fn civil_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(requests: u64, secs: f64, p50: u64, cpu_ms: u64) -> Sample {
        Sample {
            wrk: Summary {
                requests,
                duration_us: (secs * 1e6) as u64,
                p50_us: p50,
                p99_us: p50 * 3,
                ..Summary::default()
            },
            cpu_ns: cpu_ms * 1_000_000,
            foreign_ns: 0,
        }
    }

    #[test]
    fn ratios_pair_each_run_with_its_plain_run() {
        let c = Comparison {
            route: "ours".into(),
            size: "1 KiB".into(),
            runs: vec![sample(90, 1.0, 110, 900), sample(100, 1.0, 100, 1000)],
            plain: vec![sample(100, 1.0, 100, 1000), sample(100, 1.0, 100, 1000)],
            disturbed: 0,
        };
        let r = c.ratios();
        // Medians of two per-pair ratios: (0.9 + 1.0) / 2, (1.1 + 1.0) / 2.
        assert!((r.rps - 0.95).abs() < 1e-9);
        assert!((r.rps_range.0 - 0.9).abs() < 1e-9);
        assert!((r.rps_range.1 - 1.0).abs() < 1e-9);
        assert!((r.p50 - 1.05).abs() < 1e-9);
        // 10 ms of CPU per request in every run.
        assert!((r.cpu - 1.0).abs() < 1e-9);
        assert!((c.figures().busy - 0.95).abs() < 1e-9);
    }

    #[test]
    fn merged_runs_add_counts_and_average_percentiles() {
        let m = sample(100, 1.0, 100, 1000).merge(&sample(300, 1.0, 200, 2000));
        assert_eq!(m.wrk.requests, 400);
        assert!((m.wrk.rps() - 200.0).abs() < 1e-9);
        assert_eq!(m.wrk.p50_us, 150);
        assert!((m.cpu_per_request() - 7_500_000.0).abs() < 1e-6);
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), 0.0);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![1.0, 100.0, 1.1]), 1.1);
    }

    #[test]
    fn memory_per_entry() {
        let m = Memory {
            entries: 1000,
            rss_before: 10_000_000,
            rss_after: 11_400_000,
            ..Memory::default()
        };
        assert!((m.per_entry() - 1400.0).abs() < 1e-9);
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(us(512.0), "512 µs");
        assert_eq!(us(1500.0), "1.50 ms");
        assert_eq!(us(25_000.0), "25.0 ms");
    }

    #[test]
    fn dates() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(11_016), "2000-02-29");
        assert_eq!(civil_date(20_000), "2024-10-04");
    }

    #[test]
    fn tables_line_up() {
        let head = vec!["a".to_owned(), "bb".to_owned()];
        let rows = vec![vec!["xyz".to_owned(), "1".to_owned()]];
        assert_eq!(text_table(&head, &rows), "a    bb\n-------\nxyz   1\n");
        assert_eq!(
            md_table(&head, &rows),
            "| a | bb |\n|:--|--:|\n| xyz | 1 |\n"
        );
    }

    fn small_report() -> Report {
        let mut report = Report {
            ours: "ours".into(),
            date: "2026-12-01".into(),
            versions: vec![("tower-response-cache".into(), "0.1.0".into())],
            settings: Settings {
                secs: 1,
                rounds: 2,
                connections: 64,
                threads: 1,
                cpus: (Some(0), None),
                origin_delay: Duration::from_millis(5),
                fill_entries: 100_000,
                fill_connections: 32,
                command: "cargo bench --bench load".into(),
            },
            foreign_limit: 0.25,
            ..Report::default()
        };
        report.plain.push(Comparison {
            route: "plain".into(),
            size: "1 KiB".into(),
            runs: vec![sample(100, 1.0, 100, 1000)],
            plain: vec![sample(100, 1.0, 100, 1000)],
            disturbed: 0,
        });
        report.routes.push(Comparison {
            route: "ours".into(),
            size: "1 KiB".into(),
            runs: vec![sample(98, 1.0, 100, 1000)],
            plain: vec![sample(100, 1.0, 100, 1000)],
            disturbed: 0,
        });
        report
    }

    #[test]
    fn the_template_is_filled() {
        let mut report = small_report();
        let md = report.markdown("docs/chart.svg");
        assert!(!md.contains("{{"), "a placeholder is left:\n{md}");
        assert!(md.starts_with("# Benchmarks\n"));
        for part in [
            "```sh\ncargo bench --bench load\n```",
            "Run on 2026-12-01: ",
            "](docs/chart.svg)",
            "\n| route | body | req/s |",
            "\n| ours | 1 KiB | 98 | 0.980 (0.98–0.98) |",
            "\n| goal | target | measured | met |",
            "100,000 requests",
            "over\n32 keep-alive",
            "pinned to\n  CPU any.",
            "waits 5 ms first",
            "](docs/tuning-journal.md)",
            "\n- tower-response-cache 0.1.0\n",
        ] {
            assert!(md.contains(part), "no {part:?} in:\n{md}");
        }
        // The optional paragraphs appear only when there is something to say.
        assert!(!md.contains("were made again because"));
        assert!(!md.contains("Warnings from this run"));
        report.redone = 3;
        report.warnings.push("something looked off".into());
        let md = report.markdown("docs/chart.svg");
        assert!(md.contains("\n3 pairs of runs were made again because other processes took more\nthan 25% of a CPU"));
        assert!(md.contains("Warnings from this run:\n\n- something looked off\n"));
        assert!(!md.contains("{{"));
    }

    #[test]
    fn goals_are_judged() {
        let mut report = Report {
            ours: "ours".into(),
            ..Report::default()
        };
        report.routes.push(Comparison {
            route: "ours".into(),
            size: "1 KiB".into(),
            runs: vec![sample(98, 1.0, 100, 1100)],
            plain: vec![sample(100, 1.0, 100, 1000)],
            disturbed: 0,
        });
        report.memory.push(Memory {
            cache: "ours".into(),
            entries: 100,
            rss_before: 0,
            rss_after: 150_000,
            ..Memory::default()
        });
        let lines = report.goal_lines();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].3, "0.98 ≥ 0.97");
        assert!(!lines[1].3, "CPU 1100/98 per request vs 1000/100");
        assert!(!lines[2].3, "1500 B per entry");
    }
}
