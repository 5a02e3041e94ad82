//! What the benchmarks read about the processes they load, from `/proc`:
//! CPU time (utime + stime, all threads) and resident memory (VmRSS, VmHWM).
//! Linux only, like the machines the figures come from.

use std::{collections::BTreeMap, str::FromStr};

use anyhow::{Context, bail};

/// A process to watch, given on the command line as `NAME=PID`.
#[derive(Debug, Clone)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
}

impl FromStr for Watched {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let (name, pid) = s
            .split_once('=')
            .with_context(|| format!("{s:?}: expected NAME=PID"))?;
        Ok(Self {
            name: name.to_string(),
            pid: pid.parse().with_context(|| format!("{s:?}: PID"))?,
        })
    }
}

/// CPU seconds (user + system) a process has used so far. `clk_tck` is the
/// kernel's USER_HZ (`getconf CLK_TCK`, 100 on Linux/x86).
pub fn cpu_seconds(pid: u32, clk_tck: f64) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat).map(|ticks| ticks / clk_tck)
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command
/// name (field 2) may hold spaces and parentheses, so fields are counted
/// from the last ')'.
fn parse_cpu_ticks(stat: &str) -> anyhow::Result<f64> {
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("no ')' in /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': field 3 (state) is index 0, so utime (14) is 11, stime (15) 12.
    if fields.len() < 13 {
        bail!("short /proc/PID/stat line");
    }
    let utime: f64 = fields[11].parse().context("utime")?;
    let stime: f64 = fields[12].parse().context("stime")?;
    Ok(utime + stime)
}

/// A `kB` line of `/proc/PID/status` (`VmRSS`, `VmHWM`), in kB.
pub fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kb(&status, key)
}

fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// CPU seconds of each watched process, by name.
pub fn cpu_snapshot(watched: &[Watched], clk_tck: f64) -> anyhow::Result<BTreeMap<String, f64>> {
    watched
        .iter()
        .map(|w| Ok((w.name.clone(), cpu_seconds(w.pid, clk_tck)?)))
        .collect()
}

/// Peak RSS (VmHWM) of each watched process, in MB (10^6 bytes).
pub fn peak_rss_mb(watched: &[Watched]) -> BTreeMap<String, f64> {
    watched
        .iter()
        .filter_map(|w| Some((w.name.clone(), status_kb(w.pid, "VmHWM")? as f64 * 1.024e-3)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_count_fields_from_the_last_parenthesis() {
        // A command name with a space and a ')' in it, as a process may set.
        let line = "4242 (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 9 0";
        assert_eq!(parse_cpu_ticks(line).unwrap(), 325.0);
        assert!(parse_cpu_ticks("4242 (x) S 1").is_err());
    }

    #[test]
    fn status_lines_are_read_in_kb() {
        let status = "Name:\tresize-svc\nVmHWM:\t   34400 kB\nVmRSS:\t   20112 kB\n";
        assert_eq!(parse_status_kb(status, "VmRSS"), Some(20112));
        assert_eq!(parse_status_kb(status, "VmHWM"), Some(34400));
        assert_eq!(parse_status_kb(status, "VmSwap"), None);
    }

    #[test]
    fn watched_processes_parse_from_name_equals_pid() {
        let w: Watched = "resize-svc=123".parse().unwrap();
        assert_eq!((w.name.as_str(), w.pid), ("resize-svc", 123));
        assert!("resize-svc".parse::<Watched>().is_err());
        assert!("a=b".parse::<Watched>().is_err());
    }
}
