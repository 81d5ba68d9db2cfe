//! Scoring one block of users against the whole catalog: a matrix product per tile of songs
//! (the `gemm` crate's packed AVX2/AVX-512 kernels), each tile's scores fed straight into the
//! users' top-K selectors while they are still in cache.
//!
//! Memory per worker: one tile of scores (`block users x TILE_SONGS` float32, 4 MiB at the
//! defaults) and the block's top-K buffers; blocks are independent, so workers share nothing
//! but the read-only catalog.

use crate::topk::{Candidate, TopK};
use crate::vectors::{Block, Catalog};

/// Songs per tile: 256 users x 4096 songs of f32 scores = 4 MiB, about a core's L2 + L3 share.
pub const TILE_SONGS: usize = 4096;

/// `dst (m x n, row-major) = lhs (m x k, row-major) · rhs_rows (n x k, row-major)ᵀ`.
#[allow(unsafe_code)]
fn product(dst: &mut [f32], lhs: &[f32], rhs_rows: &[f32], m: usize, n: usize, k: usize) {
    assert!(dst.len() >= m * n && lhs.len() >= m * k && rhs_rows.len() >= n * k);
    // SAFETY: the three slices hold at least m·n, m·k and n·k elements (asserted above) and the
    // strides below address exactly those elements: dst[i·n + j], lhs[i·k + p], and the
    // transpose of rhs_rows, rhs(p, j) = rhs_rows[j·k + p]. dst does not alias the inputs (it is
    // a distinct &mut), and read_dst = false, so its prior contents are never read.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs_rows.as_ptr(),
            k as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// The top `k` songs of every user of `block`, in the block's order.
pub fn score_block(block: &Block, catalog: &Catalog, k: usize) -> Vec<Vec<Candidate>> {
    let (m, dim) = (block.len(), catalog.dim);
    let mut tops: Vec<TopK> = (0..m).map(|_| TopK::new(k)).collect();
    let mut scores = vec![0.0f32; m * TILE_SONGS.min(catalog.len().max(1))];
    for first in (0..catalog.len()).step_by(TILE_SONGS) {
        let n = TILE_SONGS.min(catalog.len() - first);
        product(
            &mut scores[..m * n],
            &block.vectors,
            &catalog.vectors[first * dim..(first + n) * dim],
            m,
            n,
            dim,
        );
        for (u, top) in tops.iter_mut().enumerate() {
            let excluded = &block.excluded[u];
            let row = &scores[u * n..(u + 1) * n];
            if excluded.is_empty() {
                top.offer(first as u32, row, |_| false);
            } else {
                top.offer(first as u32, row, |s| excluded.binary_search(&s).is_ok());
            }
        }
    }
    tops.iter_mut().map(|t| t.finish().to_vec()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_product_is_the_dot_products() {
        let (m, n, k) = (3, 5, 4);
        let lhs: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5).collect();
        let rhs: Vec<f32> = (0..n * k).map(|i| (i as f32 - 7.0) * 0.25).collect();
        let mut dst = vec![0.0; m * n];
        product(&mut dst, &lhs, &rhs, m, n, k);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = (0..k).map(|p| lhs[i * k + p] * rhs[j * k + p]).sum();
                assert!((dst[i * n + j] - want).abs() < 1e-4, "({i}, {j})");
            }
        }
    }
}
