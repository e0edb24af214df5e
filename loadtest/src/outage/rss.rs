//! The server's memory as the kernel counts it: `VmRSS` (resident now), `VmHWM` (the peak
//! resident size since start, which catches a spike between two samples), and `RssAnon` /
//! `RssFile` (heap and stacks vs mapped files), read from `/proc/PID/status`. Linux only;
//! elsewhere nothing is read.

use serde::Serialize;

/// One reading of `/proc/PID/status`, in KiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MemReading {
    pub rss_kb: u64,
    pub hwm_kb: u64,
    pub anon_kb: u64,
    pub file_kb: u64,
}

/// Reads `pid`'s memory, or `None` when it is gone or `/proc` cannot be read.
pub fn read(pid: u32) -> Option<MemReading> {
    parse(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// The fields of a `/proc/PID/status` text; `None` without `VmRSS`.
pub fn parse(status: &str) -> Option<MemReading> {
    let mut m = MemReading::default();
    let mut seen_rss = false;
    for line in status.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let kb = || {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        };
        match key {
            "VmRSS" => {
                m.rss_kb = kb()?;
                seen_rss = true;
            }
            "VmHWM" => m.hwm_kb = kb().unwrap_or(0),
            "RssAnon" => m.anon_kb = kb().unwrap_or(0),
            "RssFile" => m.file_kb = kb().unwrap_or(0),
            _ => {}
        }
    }
    seen_rss.then_some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_four_fields_in_kib() {
        let text = "Name:\tclarion\nVmPeak:\t  900000 kB\nVmHWM:\t  210456 kB\nVmRSS:\t  190000 kB\n\
                    RssAnon:\t  150000 kB\nRssFile:\t   40000 kB\nRssShmem:\t       0 kB\nThreads:\t9\n";
        let m = parse(text).expect("parsed");
        assert_eq!(
            m,
            MemReading {
                rss_kb: 190_000,
                hwm_kb: 210_456,
                anon_kb: 150_000,
                file_kb: 40_000
            }
        );
        assert_eq!(parse("Name:\tx\n"), None, "a zombie has no VmRSS");
    }

    #[test]
    fn reads_this_process() {
        if cfg!(target_os = "linux") {
            let m = read(std::process::id()).expect("own status");
            assert!(m.rss_kb > 0 && m.hwm_kb >= m.rss_kb);
        }
    }
}
