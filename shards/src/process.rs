//! Process-wide settings a shard process (and the load generator beside it) wants once at start.

/// Turns transparent huge pages off for this process. mimalloc asks for huge pages on its
/// arenas, and the kernel then zeroes a fresh 2 MiB page on first touch, on whichever thread
/// touched it: in the load test that was some 300 such faults per 20-second run, each a stall of
/// up to a millisecond on a virtual machine, on executor threads and on the threads timing
/// requests. Best effort: where `PR_SET_THP_DISABLE` is missing (not Linux, an old kernel) the
/// system default stays, and the reason is returned for the caller to log.
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl(2) with PR_SET_THP_DISABLE reads only its integer arguments.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_os = "linux")]
    fn the_flag_is_set_for_the_process() {
        assert!(super::disable_transparent_huge_pages().is_ok());
        // SAFETY: PR_GET_THP_DISABLE takes no pointer arguments.
        let flag = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(flag, 1);
    }
}
