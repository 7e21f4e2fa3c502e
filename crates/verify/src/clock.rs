//! The clock a timed run is measured on.

use std::time::Instant;

/// What a timed run is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Clock {
    /// Wall time: what a user waits.
    #[default]
    Wall,
    /// CPU time of the calling thread, which tract runs a model on: wall time on an idle machine,
    /// but time spent waiting for a core is not counted, so other processes move it far less.
    /// Wall time on systems without a thread CPU clock (other than Linux and macOS).
    ThreadCpu,
}

impl Clock {
    /// Runs `run` and returns its result and the milliseconds it took on this clock.
    pub fn time<T>(self, run: impl FnOnce() -> T) -> (T, f64) {
        match (self, thread_cpu_ms()) {
            (Clock::ThreadCpu, Some(start)) => {
                let out = run();
                (out, thread_cpu_ms().unwrap_or(start) - start)
            }
            _ => {
                let start = Instant::now();
                let out = run();
                (out, start.elapsed().as_secs_f64() * 1e3)
            }
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "macos"))]
fn thread_cpu_ms() -> Option<f64> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Some(t.tv_sec as f64 * 1e3 + t.tv_nsec as f64 / 1e6)
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn thread_cpu_ms() -> Option<f64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_sleeping_thread_spends_wall_time_but_no_cpu_time() {
        let nap = || std::thread::sleep(Duration::from_millis(50));
        let ((), wall) = Clock::Wall.time(nap);
        assert!(wall >= 50.0, "{wall}");
        let ((), cpu) = Clock::ThreadCpu.time(nap);
        if thread_cpu_ms().is_some() {
            assert!(cpu < 25.0, "a sleep is not CPU time: {cpu}");
        }
    }
}
