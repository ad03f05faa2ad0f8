//! The load generator: `wrk`, installed from Debian's packages when
//! missing, run pinned to its own CPU, its summary read from a line its
//! `done` hook prints.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::child::{self, Guard};

/// The hook wrk runs at the end: one line with the counts, the latency
/// percentiles (microseconds) and wrk's own CPU time (`os.clock()`, all
/// its threads, in microseconds), which [`Summary::parse`] reads.
const DONE_HOOK: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("LOADBENCH %d %d %d %d %d %d %d %d %d %d %d %d\n",
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout,
    os.clock() * 1000000))
end
"#;

/// Makes sure `wrk` can be run: when it is missing and this runs as root
/// on a system with `apt-get`, installs Debian's `wrk` package.
///
/// # Errors
///
/// When `wrk` is missing and cannot be installed.
pub fn ensure_installed() -> io::Result<()> {
    if child::available("wrk") {
        return Ok(());
    }
    let root = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false);
    if !root || !child::available("apt-get") {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "wrk is not installed; install it (Debian: `apt-get install wrk`) and rerun",
        ));
    }
    eprintln!("loadbench: wrk is missing; installing it with apt-get");
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "wrk"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
    };
    if !install()?.success() {
        Command::new("apt-get")
            .args(["update", "-qq"])
            .stdout(Stdio::null())
            .status()?;
        if !install()?.success() {
            return Err(io::Error::other("apt-get install wrk failed"));
        }
    }
    if child::available("wrk") {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::NotFound,
            "wrk still missing after installing it",
        ))
    }
}

/// Where the `done` hook lives for the run; the file is removed on drop.
#[derive(Debug)]
pub struct Script {
    path: PathBuf,
}

impl Script {
    /// Writes the hook into `dir`.
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn write(dir: &Path) -> io::Result<Self> {
        let path = dir.join(format!("loadbench-{}.lua", std::process::id()));
        fs::write(&path, DONE_HOOK)?;
        Ok(Self { path })
    }

    /// The script's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// How one wrk run is made.
#[derive(Debug, Clone)]
pub struct Load {
    /// CPU wrk is pinned to.
    pub cpu: Option<usize>,
    /// Open connections.
    pub connections: u32,
    /// wrk threads (one per core it has).
    pub threads: u32,
    /// How long it drives the URL.
    pub duration: Duration,
}

/// What one wrk run measured.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Summary {
    /// Requests completed.
    pub requests: u64,
    /// Run time, in microseconds.
    pub duration_us: u64,
    /// Bytes read (heads and bodies).
    pub bytes: u64,
    /// Median latency, microseconds.
    pub p50_us: u64,
    /// 99th percentile latency, microseconds.
    pub p99_us: u64,
    /// Largest latency, microseconds.
    pub max_us: u64,
    /// Socket errors: connect, read, write, timeout.
    pub socket_errors: u64,
    /// Responses that were not 2xx or 3xx.
    pub bad_status: u64,
    /// wrk's own CPU time, microseconds.
    pub client_cpu_us: u64,
}

impl Summary {
    /// Requests per second.
    pub fn rps(&self) -> f64 {
        if self.duration_us == 0 {
            return 0.0;
        }
        self.requests as f64 / (self.duration_us as f64 / 1e6)
    }

    /// Reads the `LOADBENCH ...` line the hook prints from wrk's stdout.
    pub fn parse(stdout: &str) -> Option<Self> {
        let line = stdout.lines().find_map(|l| l.strip_prefix("LOADBENCH "))?;
        let v: Vec<u64> = line
            .split_whitespace()
            .map(|f| f.parse::<f64>().ok().map(|x| x as u64))
            .collect::<Option<_>>()?;
        if v.len() != 12 {
            return None;
        }
        Some(Self {
            requests: v[0],
            duration_us: v[1],
            bytes: v[2],
            p50_us: v[3],
            p99_us: v[4],
            max_us: v[5],
            socket_errors: v[6] + v[7] + v[8] + v[10],
            bad_status: v[9],
            client_cpu_us: v[11],
        })
    }
}

/// Runs wrk against `url` once.
///
/// # Errors
///
/// When wrk fails, overruns its time by far, or prints no summary.
pub fn run(load: &Load, script: &Script, url: &str) -> io::Result<Summary> {
    let secs = load.duration.as_secs_f64();
    let mut command = child::pinned(load.cpu, "wrk");
    command
        .arg(format!("-t{}", load.threads))
        .arg(format!("-c{}", load.connections))
        .arg(format!("-d{}s", secs.ceil().max(1.0) as u64))
        .arg("--timeout")
        .arg("5s")
        .arg("-s")
        .arg(script.path())
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let guard = Guard::spawn("wrk", &mut command)?;
    let output = guard.wait_output(load.duration + Duration::from_secs(15))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "wrk {url} failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Summary::parse(&stdout).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no summary in wrk's output for {url}: {stdout}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_hook_line() {
        let out = "Running 2s test @ http://127.0.0.1:1/plain/1k\n  1 threads and 64 connections\n\
                   LOADBENCH 120000 2000450 150000000 510 1980 9000 0 0 0 3 1 1500000\n";
        let s = Summary::parse(out).unwrap();
        assert_eq!(s.requests, 120_000);
        assert_eq!(s.p50_us, 510);
        assert_eq!(s.p99_us, 1980);
        assert_eq!(s.bad_status, 3);
        assert_eq!(s.socket_errors, 1);
        assert_eq!(s.client_cpu_us, 1_500_000);
        assert!((s.rps() - 59_986.5).abs() < 1.0);
    }

    #[test]
    fn accepts_float_fields_and_rejects_short_lines() {
        let s = Summary::parse("LOADBENCH 10 1000000 100 5.0 9.5 12 0 0 0 0 0 7.5").unwrap();
        assert_eq!((s.p50_us, s.p99_us), (5, 9));
        assert!(Summary::parse("LOADBENCH 10 1000000").is_none());
        assert!(Summary::parse("nothing here").is_none());
    }
}
