//! The standard Prometheus process metrics (`process_cpu_seconds_total`,
//! `process_resident_memory_bytes`, `process_open_fds`, ...), read from `/proc/self`.
//!
//! Their names and meanings are those every Prometheus client library exports, so
//! existing dashboards and alerts work unchanged. On systems without `/proc` the
//! families are left out rather than reported as zero.

/// Clock ticks per second of `/proc/<pid>/stat`'s time fields. Linux fixes `USER_HZ`
/// at 100 in its user-space ABI on every architecture it supports.
const TICKS_PER_SECOND: f64 = 100.0;

/// What `/proc/self` says about this process now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Process {
    /// User plus system CPU time of all threads, in seconds.
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    /// The soft limit on open files.
    pub max_fds: Option<u64>,
    pub threads: u64,
    /// When the process started, in seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

impl Process {
    /// Reads `/proc/self`; `None` where it is missing or unreadable.
    pub fn read() -> Option<Process> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok()?;
        let mut p = parse(&stat, &status, &boot)?;
        p.open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        p.max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|l| soft_limit(&l, "Max open files"));
        Some(p)
    }
}

/// The parts of [`Process`] found in `/proc/self/stat`, `/proc/self/status` and
/// `/proc/stat` (for the boot time, so the start time is the same on every scrape).
fn parse(stat: &str, status: &str, system: &str) -> Option<Process> {
    // The command name (field 2) is in parentheses and may hold spaces or ')': the
    // fields that follow start after its last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field n is fields[n - 3].
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let (utime, stime) = (field(14)?, field(15)?);
    let threads = field(20)?;
    let start_ticks = field(22)?;
    let vsize = field(23)?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))?
            .split_whitespace()
            .next()?
            .parse::<u64>()
            .ok()
    };
    let resident_bytes = kib("VmRSS:")? * 1024;
    let boot: u64 = system
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(Process {
        cpu_seconds: (utime + stime) as f64 / TICKS_PER_SECOND,
        resident_bytes,
        virtual_bytes: vsize,
        open_fds: 0,
        max_fds: None,
        threads,
        start_time_seconds: boot as f64 + start_ticks as f64 / TICKS_PER_SECOND,
    })
}

/// The soft limit on the `/proc/self/limits` line named `name` (`None` if unlimited).
fn soft_limit(limits: &str, name: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// Appends the process families in the Prometheus text format.
pub fn render(out: &mut String) {
    use std::fmt::Write;
    let Some(p) = Process::read() else {
        return;
    };
    let mut one = |name: &str, kind: &str, help: &str, v: &dyn std::fmt::Display| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    };
    one(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        &p.cpu_seconds,
    );
    one(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes.",
        &p.resident_bytes,
    );
    one(
        "process_virtual_memory_bytes",
        "gauge",
        "Virtual memory size in bytes.",
        &p.virtual_bytes,
    );
    one(
        "process_open_fds",
        "gauge",
        "Number of open file descriptors.",
        &p.open_fds,
    );
    if let Some(max) = p.max_fds {
        one(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            &max,
        );
    }
    one(
        "process_threads",
        "gauge",
        "Number of OS threads in the process.",
        &p.threads,
    );
    one(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        &format!("{:.2}", p.start_time_seconds),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_the_command_name() {
        // A command name with a space and a ')' must not shift the fields.
        let stat = "4242 (we ird) x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                    250 130 0 0 20 0 7 0 12345 987654321 2500 18446744073709551615";
        let status = "Name:\tnode\nVmRSS:\t  10240 kB\nThreads:\t7\n";
        let p = parse(stat, status, "cpu  1 2 3\nbtime 1700000000\nprocesses 9\n").unwrap();
        assert_eq!(p.cpu_seconds, 3.8);
        assert_eq!(p.threads, 7);
        assert_eq!(p.virtual_bytes, 987_654_321);
        assert_eq!(p.resident_bytes, 10_240 * 1024);
        // Started 123.45 s after boot.
        assert!((p.start_time_seconds - 1_700_000_123.45).abs() < 1e-3);
    }

    #[test]
    fn soft_limit_of_open_files() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(soft_limit(limits, "Max open files"), Some(1024));
        assert_eq!(soft_limit(limits, "Max processes"), None);
    }

    #[test]
    fn this_process_is_measured() {
        let p = Process::read().expect("/proc/self is readable on Linux");
        assert!(p.resident_bytes > 0);
        assert!(p.open_fds >= 3, "stdin, stdout, stderr at least");
        assert!(p.threads >= 1);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(p.start_time_seconds > 1e9 && p.start_time_seconds <= now + 1.0);
        assert_eq!(
            Process::read().unwrap().start_time_seconds,
            p.start_time_seconds,
            "the same on every read"
        );
        let mut text = String::new();
        render(&mut text);
        assert!(text.contains("\nprocess_cpu_seconds_total "));
        assert!(text.contains("\nprocess_open_fds "));
    }
}
