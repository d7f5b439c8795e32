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
        gemm_to(dst.as_mut_ptr(), n, a, b, accumulate, parallelism);
    }
}

/// dst (a.rows x b.cols at row stride `dst_rs`) = a * b, plus the old dst when `accumulate`.
///
/// # Safety
/// dst must be valid for writes of those elements, a and b's views in bounds, and none aliased.
unsafe fn gemm_to<T: Scalar>(
    dst: *mut T,
    dst_rs: usize,
    a: View<T>,
    b: View<T>,
    accumulate: bool,
    parallelism: gemm::Parallelism,
) {
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            dst,
            1,
            dst_rs as isize,
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
        )
    }
}

/// A row-major destination whose column ranges parts of one job fill at once: each part writes
/// only its own columns, so the parts never touch the same element.
pub struct SharedColumns<'a, T> {
    ptr: *mut T,
    rows: usize,
    cols: usize,
    _dst: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: parts write disjoint column ranges (checked by `product`'s callers through `columns`
// ranges they own), and T is plain data.
unsafe impl<T: Send> Send for SharedColumns<'_, T> {}
unsafe impl<T: Send> Sync for SharedColumns<'_, T> {}

impl<'a, T: Scalar> SharedColumns<'a, T> {
    pub fn new(dst: &'a mut [T], rows: usize, cols: usize) -> Self {
        assert!(dst.len() >= rows * cols, "destination too small");
        SharedColumns {
            ptr: dst.as_mut_ptr(),
            rows,
            cols,
            _dst: std::marker::PhantomData,
        }
    }

    /// Where element (row, col) is, for a part that writes its own columns through the pointer.
    pub fn at(&self, row: usize, col: usize) -> *mut T {
        assert!(
            row < self.rows.max(1) && col <= self.cols,
            "outside the destination"
        );
        // SAFETY: inside the destination (asserted), so the offset stays in its allocation.
        unsafe { self.ptr.add(row * self.cols + col) }
    }

    /// Copies the first `width` columns of `block` (rows x `stride`, row-major) into columns
    /// `first .. first + width`.
    ///
    /// # Safety
    /// No other part may write these columns while this runs.
    pub unsafe fn copy_in(&self, first: usize, width: usize, block: &[T], stride: usize) {
        assert!(
            first + width <= self.cols && width <= stride,
            "columns out of range"
        );
        assert!(
            self.rows == 0 || block.len() >= (self.rows - 1) * stride + width,
            "block too small"
        );
        for r in 0..self.rows {
            // SAFETY: row r's columns [first, first + width) lie inside dst (asserted).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    block.as_ptr().add(r * stride),
                    self.ptr.add(r * self.cols + first),
                    width,
                )
            };
        }
    }

    /// Columns `first .. first + b.cols` of dst = a * b, then `add(row)` added to each row there.
    ///
    /// # Safety
    /// No other part may write these columns while this runs.
    pub unsafe fn product(&self, first: usize, a: View<T>, b: View<T>, add: impl Fn(usize) -> T)
    where
        T: std::ops::AddAssign,
    {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        assert!(
            b.rows == k && m == self.rows && first + n <= self.cols,
            "shapes differ"
        );
        if m == 0 || n == 0 {
            return;
        }
        assert!(
            k > 0 && a.last_index() < a.data.len() && b.last_index() < b.data.len(),
            "view out of bounds"
        );
        // SAFETY: rows x [first, first + n) lies inside dst (asserted); the caller owns those columns.
        unsafe {
            let dst = self.ptr.add(first);
            gemm_to(dst, self.cols, a, b, false, gemm::Parallelism::None);
            for r in 0..m {
                let v = add(r);
                let row = std::slice::from_raw_parts_mut(dst.add(r * self.cols), n);
                row.iter_mut().for_each(|x| *x += v);
            }
        }
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
