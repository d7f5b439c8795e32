//! Fork-join for the sub-millisecond pieces of one image's forward and reverse pass.
//!
//! A step of a walk on a small CNN is a chain of products of 20-200 µs each. Handed to rayon, each
//! one wakes a sleeping worker through the kernel, and on this project's 2-core VMs that wake-up
//! often takes longer than the piece: the worker arrives after the caller has done both halves
//! (measured: process CPU time equal to wall time, so one core worked). Here the helper threads
//! spin for a short while after each piece, so the next piece of the same step finds them awake,
//! and park once the step is over. The caller always takes parts itself, so a helper that is slow
//! to arrive (descheduled under load) costs nothing but its share of the parallelism.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle helper spins before it parks: longer than the gaps between the pieces of one
/// step (the geometry between two steps' passes takes ~0.1 ms), short enough to cost nothing
/// measurable when no walk runs.
pub const SPIN: Duration = Duration::from_micros(1000);

/// Products of at least this many multiply-adds are worth splitting here: a job costs the caller
/// ~1 µs when the helper is awake (rayon's threshold, 4x this, allows for its wake-ups).
pub const MIN_MACS: usize = 1 << 16;

/// Threads of a team at most (the caller and its helpers).
const MAX_THREADS: usize = 8;

/// `state`: this bit is set while a job takes helpers; the bits below count helpers inside it.
const OPEN: usize = 1 << (usize::BITS - 1);

/// One job's parts as the helpers see them: a closure on the caller's stack, erased.
#[derive(Clone, Copy)]
struct Job {
    f: *const (dyn Fn(usize) + Sync),
    parts: usize,
}

// SAFETY: the pointee is Sync, and `run` keeps it alive until every helper has left the job.
unsafe impl Send for Job {}

struct Team {
    helpers: usize,
    /// Bumped by each new job; a helper waits for it to change.
    generation: AtomicU64,
    state: AtomicUsize,
    next: AtomicUsize,
    done: AtomicUsize,
    panicked: AtomicBool,
    job: Mutex<Option<Job>>,
    parked: Mutex<usize>,
    wake: Condvar,
    /// Held by the one caller whose job runs; others (nested or concurrent) run serially.
    busy: AtomicBool,
}

fn team() -> &'static Team {
    static TEAM: OnceLock<&'static Team> = OnceLock::new();
    TEAM.get_or_init(|| {
        // Pieces of 20-200 µs split no further than 8 ways; a helper spins after every job.
        let cores = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_THREADS);
        let team: &'static Team = Box::leak(Box::new(Team {
            helpers: cores - 1,
            generation: AtomicU64::new(0),
            state: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            job: Mutex::new(None),
            parked: Mutex::new(0),
            wake: Condvar::new(),
            busy: AtomicBool::new(false),
        }));
        for i in 0..team.helpers {
            let spawned = std::thread::Builder::new()
                .name(format!("dataleaf-team-{i}"))
                .spawn(move || team.helper());
            if spawned.is_err() {
                // No helper: every job runs on its caller.
                break;
            }
        }
        team
    })
}

/// Threads a job may use here: one inside a rayon worker (the work is already spread over images
/// or lanes there, and a spinning helper would take a core from the other workers), else the
/// global pool's size (`RAYON_NUM_THREADS`), at most the cores.
pub fn threads() -> usize {
    if rayon::current_thread_index().is_some() {
        return 1;
    }
    let pool = rayon::current_num_threads();
    if pool <= 1 {
        return 1;
    }
    pool.min(team().helpers + 1)
}

/// Runs `f(0) .. f(parts - 1)`, on the caller and the helpers, and returns when all have run.
pub fn run(parts: usize, f: &(dyn Fn(usize) + Sync)) {
    if parts <= 1 || threads() <= 1 {
        (0..parts).for_each(f);
        return;
    }
    let team = team();
    if team.busy.compare_exchange(false, true, SeqCst, SeqCst).is_err() {
        (0..parts).for_each(f);
        return;
    }
    // SAFETY (lifetime erasure): the job is closed and every helper has left it before `run`
    // returns, so no helper calls `f` after this frame ends.
    let erased: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
    *team.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(Job { f: erased, parts });
    team.next.store(0, SeqCst);
    team.done.store(0, SeqCst);
    team.state.store(OPEN, SeqCst);
    team.generation.fetch_add(1, SeqCst);
    if *team.parked.lock().unwrap_or_else(|e| e.into_inner()) > 0 {
        team.wake.notify_all();
    }
    let mut result = Ok(());
    loop {
        let i = team.next.fetch_add(1, SeqCst);
        if i >= parts {
            break;
        }
        if result.is_ok() {
            result = catch_unwind(AssertUnwindSafe(|| f(i)));
        }
        team.done.fetch_add(1, SeqCst);
    }
    wait_until(|| team.done.load(SeqCst) >= parts);
    team.state.fetch_and(!OPEN, SeqCst);
    wait_until(|| team.state.load(SeqCst) == 0);
    *team.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let helper_panicked = team.panicked.swap(false, SeqCst);
    team.busy.store(false, SeqCst);
    if let Err(payload) = result {
        std::panic::resume_unwind(payload);
    }
    assert!(
        !helper_panicked,
        "a part of a parallel job panicked on a helper thread"
    );
}

/// Calls `f(k, chunk)` for the k-th `chunk`-long piece of `data` (the last may be shorter), in
/// parallel as `run` does.
pub fn for_each_chunk_mut<T: Send>(data: &mut [T], chunk: usize, f: impl Fn(usize, &mut [T]) + Sync) {
    let pieces: Vec<Mutex<&mut [T]>> = data.chunks_mut(chunk.max(1)).map(Mutex::new).collect();
    run(pieces.len(), &|k| {
        // Each piece is taken by exactly one part: the lock is never contended.
        let mut piece = pieces[k].lock().unwrap_or_else(|e| e.into_inner());
        f(k, &mut piece)
    });
}

/// As `for_each_chunk_mut` over two buffers cut into the same number of pieces:
/// `f(k, a_piece, b_piece)`.
pub fn for_each_chunk_pair_mut<T: Send, U: Send>(
    a: &mut [T],
    a_chunk: usize,
    b: &mut [U],
    b_chunk: usize,
    f: impl Fn(usize, &mut [T], &mut [U]) + Sync,
) {
    let pieces: Vec<Mutex<(&mut [T], &mut [U])>> = a
        .chunks_mut(a_chunk.max(1))
        .zip(b.chunks_mut(b_chunk.max(1)))
        .map(Mutex::new)
        .collect();
    run(pieces.len(), &|k| {
        let mut piece = pieces[k].lock().unwrap_or_else(|e| e.into_inner());
        let (a, b) = &mut *piece;
        f(k, a, b)
    });
}

/// Spins on `ready`, yielding the core after a while (a helper finishing its part may have been
/// descheduled).
fn wait_until(ready: impl Fn() -> bool) {
    let mut spins = 0u32;
    while !ready() {
        if spins < 20_000 {
            std::hint::spin_loop();
            spins += 1;
        } else {
            std::thread::yield_now();
        }
    }
}

impl Team {
    fn helper(&self) {
        let mut seen = self.generation.load(SeqCst);
        loop {
            let started = Instant::now();
            let mut spins = 0u32;
            while self.generation.load(SeqCst) == seen {
                std::hint::spin_loop();
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(256) && started.elapsed() > SPIN {
                    let mut parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
                    *parked += 1;
                    while self.generation.load(SeqCst) == seen {
                        parked = self.wake.wait(parked).unwrap_or_else(|e| e.into_inner());
                    }
                    *parked -= 1;
                }
            }
            seen = self.generation.load(SeqCst);
            self.work();
        }
    }

    /// Enters the open job (if it is still open), takes parts until none are left, and leaves.
    fn work(&self) {
        let mut state = self.state.load(SeqCst);
        loop {
            if state & OPEN == 0 {
                return;
            }
            match self.state.compare_exchange(state, state + 1, SeqCst, SeqCst) {
                Ok(_) => break,
                Err(now) => state = now,
            }
        }
        let job = *self.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(job) = job {
            loop {
                let i = self.next.fetch_add(1, SeqCst);
                if i >= job.parts {
                    break;
                }
                // SAFETY: the caller keeps `f` alive while the job is open or a helper is inside.
                let f = unsafe { &*job.f };
                if catch_unwind(AssertUnwindSafe(|| f(i))).is_err() {
                    self.panicked.store(true, SeqCst);
                }
                self.done.fetch_add(1, SeqCst);
            }
        }
        self.state.fetch_sub(1, SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_runs_once_and_nested_jobs_run_serially() {
        let counts: Vec<AtomicUsize> = (0..37).map(|_| AtomicUsize::new(0)).collect();
        for _ in 0..200 {
            run(counts.len(), &|i| {
                counts[i].fetch_add(1, SeqCst);
                // A job inside a job runs on the calling thread.
                let inner = AtomicUsize::new(0);
                run(3, &|_| {
                    inner.fetch_add(1, SeqCst);
                });
                assert_eq!(inner.load(SeqCst), 3);
            });
        }
        assert!(counts.iter().all(|c| c.load(SeqCst) == 200));
    }

    #[test]
    fn a_panicking_part_reaches_the_caller() {
        let result = catch_unwind(|| {
            run(8, &|i| {
                if i == 5 {
                    panic!("part 5");
                }
            })
        });
        assert!(result.is_err());
        // The team still works afterwards.
        let sum = AtomicUsize::new(0);
        run(4, &|i| {
            sum.fetch_add(i, SeqCst);
        });
        assert_eq!(sum.load(SeqCst), 6);
    }
}
