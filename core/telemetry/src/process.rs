//! The process's own CPU time and resident memory, read from Linux's `/proc/self` when a collection
//! asks; on other systems both are simply absent.

/// Clock ticks per second of `/proc` CPU times: `USER_HZ`, fixed at 100 by Linux's user-space ABI
/// (what `sysconf(_SC_CLK_TCK)` answers).
const USER_HZ: f64 = 100.0;

/// User plus system CPU time of the process so far, in seconds.
pub fn cpu_time_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_cpu_ticks(&stat).map(|ticks| ticks as f64 / USER_HZ)
}

/// Resident set size, in bytes.
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_rss_bytes(&status)
}

/// `utime + stime` (fields 14 and 15) of `/proc/self/stat`. The command name (field 2) is in
/// parentheses and may hold spaces, so fields are counted after its closing parenthesis.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name come field 3 (state), 4, …: utime is the 12th of these, stime the 13th.
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    utime.checked_add(stime)
}

/// `VmRSS:   1234 kB` of `/proc/self/status`.
fn parse_vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let mut parts = line["VmRSS:".len()..].split_whitespace();
    let kibibytes: u64 = parts.next()?.parse().ok()?;
    match parts.next() {
        Some("kB") => kibibytes.checked_mul(1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_read_after_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (settle (x) y) S 1 4242 4242 0 -1 4194560 500 0 0 0 250 31 0 0 20 0 3 0 1000 1000000 600";
        assert_eq!(parse_cpu_ticks(stat), Some(281));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn resident_memory_is_read_in_bytes() {
        let status = "Name:\tsettle\nVmPeak:\t  9000 kB\nVmRSS:\t   1234 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss_bytes(status), Some(1234 * 1024));
        assert_eq!(parse_vm_rss_bytes("Name:\tx\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_has_cpu_time_and_memory() {
        assert!(cpu_time_seconds().is_some_and(|s| s >= 0.0));
        assert!(resident_memory_bytes().is_some_and(|bytes| bytes > 0));
    }
}
