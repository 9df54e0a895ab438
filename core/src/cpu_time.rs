//! CPU time this process has used, for the benchmarks' "how busy were the cores".

/// CPU seconds this process has used so far, all threads, user and system
/// (`CLOCK_PROCESS_CPUTIME_ID`: nanosecond resolution, where /proc's clock ticks are 10 ms).
pub fn process_cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_cpu_the_process_spends() {
        let before = process_cpu_seconds();
        // A fixed amount of work (tens of milliseconds of CPU at least, whatever the load).
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
        let used = process_cpu_seconds() - before;
        assert!(used >= 0.005, "{used} s of CPU for 20 million steps ({x})");
        assert!(process_cpu_seconds() >= before + used);
    }
}
