//! A safe wrapper over the `gemm` crate (the kernel candle itself uses) for strided f32 and f64
//! matrices.

/// The element types the products take.
pub trait Scalar: Copy + Default + 'static {
    const ONE: Self;
}
impl Scalar for f32 {
    const ONE: Self = 1.0;
}
impl Scalar for f64 {
    const ONE: Self = 1.0;
}

/// A read-only matrix view: element (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub struct View<'a, T = f32> {
    pub data: &'a [T],
    pub rows: usize,
    pub cols: usize,
    pub rs: usize,
    pub cs: usize,
}

impl<'a, T> View<'a, T> {
    /// A row-major `rows x cols` matrix.
    pub fn rows(data: &'a [T], rows: usize, cols: usize) -> Self {
        View {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose of a row-major `rows x cols` matrix stored in `data` (so this view is cols x rows).
    pub fn transposed(data: &'a [T], rows: usize, cols: usize) -> Self {
        View {
            data,
            rows: cols,
            cols: rows,
            rs: 1,
            cs: cols,
        }
    }
    fn last_index(&self) -> usize {
        if self.rows == 0 || self.cols == 0 {
            0
        } else {
            (self.rows - 1) * self.rs + (self.cols - 1) * self.cs
        }
    }
}

/// Whether a product may split itself over threads; callers that already run in parallel say no.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    One,
    All,
}

/// Products smaller than this many multiply-adds run on one thread.
pub const PARALLEL_MIN_MACS: usize = 1 << 18;

/// dst (row-major m x n) = a (m x k) * b (k x n), plus the old dst when `accumulate`.
pub fn matmul<T: Scalar>(dst: &mut [T], a: View<T>, b: View<T>, accumulate: bool, threads: Threads) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions differ");
    assert!(dst.len() >= m * n, "destination too small");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(T::default());
        }
        return;
    }
    assert!(
        a.last_index() < a.data.len() && b.last_index() < b.data.len(),
        "view out of bounds"
    );
    // Waking a second thread costs more than it saves on small products (LeNet, MLPs).
    let parallelism = if threads == Threads::One || m * n * k < PARALLEL_MIN_MACS {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(0)
    };
    // SAFETY: every index the kernel touches was bounds-checked above (last_index of each view,
    // m * n for dst), and dst does not alias a or b (it is a distinct &mut).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_naive_product_with_transposes_and_accumulation() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.11).cos()).collect(); // n x k
        let mut dst = vec![1.0; m * n];
        matmul(
            &mut dst,
            View::rows(&a, m, k),
            View::transposed(&bt, n, k),
            true,
            Threads::All,
        );
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 1.0 + (0..k).map(|l| a[i * k + l] * bt[j * k + l]).sum::<f32>();
                assert!((dst[i * n + j] - want).abs() < 1e-5);
            }
        }
    }
}
