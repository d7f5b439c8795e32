//! Reused f32 buffers for the passes of one image.
//!
//! A step of a walk on a small CNN allocates the same dozen buffers of 20 KB - 1 MB every time.
//! Fresh from the allocator each costs a zero-fill (calloc from the heap) or page faults and the
//! kernel's zeroing (mmap), together more than a tenth of the step; taken back from this per-thread
//! pool they come warm from the cache, and buffers written in full are not zeroed at all.

use std::sync::Mutex;

/// Buffers above this size are left to the allocator (ImageNet-size activations).
const KEEP_MAX_BYTES: usize = 8 << 20;
/// Below this size the allocator's own free lists do as well.
const KEEP_MIN_LEN: usize = 1024;
/// Buffers kept, and their bytes at most (a small CNN's step needs ~3 MB); the oldest goes first.
const KEEP_COUNT: usize = 48;
const KEEP_TOTAL_BYTES: usize = 32 << 20;

/// One pool for all threads: a part's buffer is often taken on a team helper and handed back by
/// the caller. Taken by exact length, so a buffer is never cut short and grown again (the same
/// dozen lengths come back every step).
static POOL: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// A buffer of `len` floats with unspecified contents (an earlier use's values): for outputs the
/// caller writes in full.
pub fn take(len: usize) -> Vec<f32> {
    if len >= KEEP_MIN_LEN && len * 4 <= KEEP_MAX_BYTES {
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = pool.iter().rposition(|v| v.len() == len) {
            return pool.remove(i);
        }
    }
    vec![0.0; len]
}

/// A buffer of `len` zeros.
pub fn zeroed(len: usize) -> Vec<f32> {
    let mut v = take(len);
    v.fill(0.0);
    v
}

/// Hands a buffer back for reuse.
pub fn give(v: Vec<f32>) {
    if v.len() < KEEP_MIN_LEN || v.len() * 4 > KEEP_MAX_BYTES {
        return;
    }
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    let mut total: usize = pool.iter().map(|k| k.len() * 4).sum::<usize>() + v.len() * 4;
    while !pool.is_empty() && (pool.len() >= KEEP_COUNT || total > KEEP_TOTAL_BYTES) {
        total -= pool.remove(0).len() * 4;
    }
    pool.push(v);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_with_the_asked_length_and_zeros_when_asked() {
        // A length no other test uses, so the shared pool holds no other buffer of it.
        let len = 5003;
        let mut a = take(len);
        a.iter_mut().for_each(|v| *v = 7.0);
        let ptr = a.as_ptr();
        give(a);
        let b = zeroed(len);
        assert_eq!(b.len(), len);
        assert!(b.iter().all(|&v| v == 0.0));
        // Another thread's buffer comes back too (it may be another test's only by length).
        std::thread::spawn(move || give(b)).join().unwrap();
        let c = take(len);
        assert_eq!(c.len(), len);
        assert!(c.as_ptr() == ptr || c.iter().all(|&v| v == 0.0));
    }
}
