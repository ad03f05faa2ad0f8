//! Readings from `/proc`: a process's CPU time and resident memory, and a
//! description of the machine.

use std::fs;
use std::io;
use std::process::Command;

/// CPU time a process has used so far, in nanoseconds, user and system
/// together, summed over all its threads.
///
/// Reads each thread's `/proc/<pid>/task/<tid>/schedstat` (nanosecond
/// resolution); where the kernel keeps no schedstat, falls back to
/// `utime + stime` from `/proc/<pid>/stat` (clock ticks, usually 10 ms).
///
/// # Errors
///
/// When the process is gone or `/proc` cannot be read.
pub fn cpu_ns(pid: u32) -> io::Result<u64> {
    match cpu_ns_schedstat(pid) {
        Ok(ns) if ns > 0 => Ok(ns),
        _ => cpu_ns_stat(pid),
    }
}

fn cpu_ns_schedstat(pid: u32) -> io::Result<u64> {
    let mut total = 0u64;
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        // A thread that ended between the listing and the read has
        // nothing left to count.
        let Ok(text) = fs::read_to_string(path) else {
            continue;
        };
        total += text
            .split_whitespace()
            .next()
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Ok(total)
}

fn cpu_ns_stat(pid: u32) -> io::Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (utime, stime) = parse_stat_times(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unreadable /proc/<pid>/stat"))?;
    let hz = clock_ticks_per_second();
    Ok((utime + stime).saturating_mul(1_000_000_000) / hz)
}

/// `utime` and `stime` (fields 14 and 15) from a `/proc/<pid>/stat` line.
/// The command name (field 2) may hold spaces and parentheses, so fields
/// are counted from the last `)`.
pub fn parse_stat_times(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3, utime field 14.
    let utime = fields.nth(11)?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&hz| hz > 0)
        .unwrap_or(100)
}

/// Busy time of every CPU so far (user, nice, system, irq, softirq and
/// steal: everything but idle and iowait), in nanoseconds, indexed by CPU
/// number.
///
/// # Errors
///
/// When `/proc/stat` cannot be read.
pub fn cpu_busy_ns() -> io::Result<Vec<u64>> {
    let text = fs::read_to_string("/proc/stat")?;
    Ok(parse_cpu_busy(&text, clock_ticks_per_second()))
}

/// The per-CPU busy times of a `/proc/stat`, in nanoseconds (`hz` ticks
/// a second).
pub fn parse_cpu_busy(stat: &str, hz: u64) -> Vec<u64> {
    let mut busy = Vec::new();
    for line in stat.lines() {
        // Per-CPU lines only ("cpu0", "cpu1", ...), not the "cpu" total.
        let Some(rest) = line
            .strip_prefix("cpu")
            .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
        else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let Some(Ok(cpu)) = fields.next().map(str::parse::<usize>) else {
            continue;
        };
        let t: Vec<u64> = fields.map(|f| f.parse().unwrap_or(0)).collect();
        // user nice system idle iowait irq softirq steal ...
        let ticks: u64 = [0, 1, 2, 5, 6, 7]
            .iter()
            .map(|&i| t.get(i).copied().unwrap_or(0))
            .sum();
        if busy.len() <= cpu {
            busy.resize(cpu + 1, 0);
        }
        busy[cpu] = ticks.saturating_mul(1_000_000_000) / hz.max(1);
    }
    busy
}

/// Resident memory of a process (`VmRSS`), in bytes.
///
/// # Errors
///
/// When the process is gone or its status cannot be read.
pub fn rss_bytes(pid: u32) -> io::Result<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_vm_rss(&text)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS in /proc/<pid>/status"))
}

/// The `VmRSS` line of a `/proc/<pid>/status`, in bytes.
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") | None => Some(value * 1024),
        Some(_) => None,
    }
}

/// The machine a run happened on, as the report states it.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    /// CPU model name.
    pub cpu: String,
    /// Online CPUs.
    pub cores: usize,
    /// Total memory, in bytes.
    pub memory: u64,
    /// Kernel release.
    pub kernel: String,
    /// Operating system, from `/etc/os-release`.
    pub os: String,
    /// `rustc --version`.
    pub rustc: String,
    /// `wrk --version`, first line.
    pub wrk: String,
}

impl Machine {
    /// Describes this machine; unknown parts are left as `?`.
    pub fn describe() -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "?".to_owned(), |(_, v)| v.trim().to_owned());
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let memory = fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                let line = m.lines().find(|l| l.starts_with("MemTotal:"))?.to_owned();
                let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(kb * 1024)
            })
            .unwrap_or(0);
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "?".to_owned(), |s| s.trim().to_owned());
        let os = fs::read_to_string("/etc/os-release")
            .ok()
            .and_then(|t| {
                let line = t
                    .lines()
                    .find(|l| l.starts_with("PRETTY_NAME="))?
                    .to_owned();
                Some(line["PRETTY_NAME=".len()..].trim_matches('"').to_owned())
            })
            .unwrap_or_else(|| "?".to_owned());
        Self {
            cpu,
            cores,
            memory,
            kernel,
            os,
            rustc: first_line_of("rustc", &["--version"]),
            wrk: first_line_of("wrk", &["--version"]),
        }
    }
}

/// The first line a command prints (on stdout or stderr), or `?`.
fn first_line_of(program: &str, args: &[&str]) -> String {
    let Ok(out) = Command::new(program).args(args).output() else {
        return "?".to_owned();
    };
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text).lines().next().map_or_else(
        || "?".to_owned(),
        |l| l.split_whitespace().collect::<Vec<_>>().join(" "),
    )
}

/// Versions of packages as `Cargo.lock` pins them: `name` → `version`
/// (the first entry, when several versions are locked).
pub fn locked_version(lockfile: &str, name: &str) -> Option<String> {
    let needle = format!("name = \"{name}\"");
    let mut lines = lockfile.lines();
    while let Some(line) = lines.next() {
        if line.trim() == needle {
            let version = lines.next()?.trim();
            return version
                .strip_prefix("version = \"")
                .and_then(|v| v.strip_suffix('"'))
                .map(str::to_owned);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_times_skip_names_with_spaces() {
        let line = "1234 (tokio (rt) worker) S 1 1234 1234 0 -1 4194560 100 0 0 0 \
                    250 40 0 0 20 0 3 0 100 1000 200 18446744073709551615";
        assert_eq!(parse_stat_times(line), Some((250, 40)));
    }

    #[test]
    fn vm_rss_in_bytes() {
        let status = "Name:\tserver\nVmPeak:\t  9000 kB\nVmRSS:\t    5120 kB\nThreads:\t2\n";
        assert_eq!(parse_vm_rss(status), Some(5120 * 1024));
        assert_eq!(parse_vm_rss("Name: x\n"), None);
    }

    #[test]
    fn cpu_busy_per_cpu() {
        let stat = "cpu  10 0 10 100 0 0 0 0 0 0\n\
                    cpu0 5 1 2 50 9 1 1 1 0 0\n\
                    cpu1 5 0 8 50 0 0 0 0 0 0\n\
                    intr 12345\n";
        assert_eq!(parse_cpu_busy(stat, 100), vec![110_000_000, 130_000_000]);
    }

    #[test]
    fn lockfile_versions() {
        let lock = "[[package]]\nname = \"axum\"\nversion = \"0.8.9\"\nsource = \"x\"\n\n\
                    [[package]]\nname = \"axum-core\"\nversion = \"0.5.6\"\n";
        assert_eq!(locked_version(lock, "axum").as_deref(), Some("0.8.9"));
        assert_eq!(locked_version(lock, "axum-core").as_deref(), Some("0.5.6"));
        assert_eq!(locked_version(lock, "hyper"), None);
    }

    #[test]
    fn own_cpu_time_is_readable() {
        let pid = std::process::id();
        assert!(cpu_ns(pid).is_ok());
        assert!(rss_bytes(pid).unwrap() > 0);
    }
}
