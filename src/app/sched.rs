//! Scheduling hints for the app's threads. Linux 6.12+ (EEVDF) lets any thread ask for its own
//! time slice without privilege: a short slice gives the UI thread an early deadline, so it runs
//! soon after it wakes for a frame; a long one lets the walk's threads yield the core to it. Their
//! share of the CPU (the nice weight) is unchanged, so a walk loses no steps to other programs.

use std::time::Duration;

/// The UI thread's slice: about a fifth of a frame's work.
pub const UI_SLICE: Duration = Duration::from_millis(1);
/// The walk's threads: long slices, preempted by a waking UI thread.
pub const WORKER_SLICE: Duration = Duration::from_millis(20);

/// Ask the kernel for `slice` as the calling thread's time slice; false where it is not supported
/// (older kernels ignore the request or refuse it, and nothing else changes).
pub fn request_slice(slice: Duration) -> bool {
    if std::env::var_os("DATALEAF_NO_SLICES").is_some() {
        return false;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: getpriority and sched_setattr read plain integers and one struct we own.
    unsafe {
        let nice = libc::getpriority(libc::PRIO_PROCESS, 0);
        let mut attr: libc::sched_attr = std::mem::zeroed();
        attr.size = std::mem::size_of::<libc::sched_attr>() as u32;
        attr.sched_policy = libc::SCHED_OTHER as u32;
        attr.sched_nice = nice;
        attr.sched_runtime = slice.as_nanos() as u64;
        libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const libc::sched_attr, 0) == 0
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        let _ = slice;
        false
    }
}
