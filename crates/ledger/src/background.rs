//! The CPU priority of background threads: the projector, whose work may lag behind the
//! log (audit reads wait for what they need), runs at a lower scheduling priority than the
//! request path. Its transactions fold thousands of usage events in a burst; at the same
//! priority, on a machine whose cores are busy, such a burst takes a core from the
//! verifications for milliseconds and shows in their tail latency (docs/benchmarks.md,
//! "The projector at a lower priority").
//!
//! Under Linux's scheduler a runnable thread at nice 10 gets about a tenth of the CPU time
//! of one at nice 0 on the same core, and all of it when the request path is idle, so it
//! is never starved and keeps up whenever the machine has spare time. Linux keeps the nice
//! value per thread; elsewhere nothing is changed (the call would lower the whole process).

/// The nice value background threads run at (0 is the default, 19 the lowest priority).
pub const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's priority to [`BACKGROUND_NICE`] (Linux only). Lowering
/// needs no privilege; a failure (a sandbox forbidding the call) is logged and changes
/// nothing else.
pub fn lower_current_thread() {
    #[cfg(target_os = "linux")]
    {
        let thread = rustix::thread::gettid();
        if let Err(error) = rustix::process::setpriority_process(Some(thread), BACKGROUND_NICE) {
            tracing::warn!(%error, "cannot lower a background thread's priority");
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn only_the_calling_thread_is_lowered() {
        let own = rustix::process::getpriority_process(None).unwrap();
        let (lowered, after) = std::thread::spawn(|| {
            let before = rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap();
            lower_current_thread();
            (before, rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap())
        })
        .join()
        .unwrap();
        assert_eq!(lowered, own, "a new thread starts at the process's priority");
        assert_eq!(after, BACKGROUND_NICE);
        assert_eq!(rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap(), own);
    }
}
