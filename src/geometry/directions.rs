//! Leaf directions, "what the model can see here" (shared/REFERENCE.md section 7): the orthonormal
//! eigenvectors u_1..u_r of G, descending lambda, each an image of the input's shape. Moving along
//! u_k changes KL(p(x) || p(x + t u_k)) by 1/2 lambda_k t^2; every direction orthogonal to all u_k
//! leaves p unchanged to first order.

use super::{dot, LocalGeometry};

/// One leaf direction u_k with its eigenvalue.
#[derive(Debug, Clone)]
pub struct Direction {
    pub lambda: f64,
    /// Unit vector of length n (pixel space).
    pub u: Vec<f64>,
}

/// A class gradient's share of a direction: cos(u_k, grad log p_i).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    pub class: usize,
    pub cosine: f64,
}

impl LocalGeometry {
    /// The leaf directions u_1..u_r (r = rank), descending lambda: the rows of the leaf basis.
    pub fn leaf_directions(&self) -> Vec<Direction> {
        self.leaf_basis
            .iter()
            .zip(&self.eigenvalues)
            .map(|(u, &lambda)| Direction { lambda, u: u.clone() })
            .collect()
    }

    /// grad_x log p_i = J_i - sum_k p_k J_k for every class i G keeps (`classes`: all C when
    /// exact), rows of length n.
    pub fn class_gradients(&self) -> Vec<Vec<f64>> {
        let n = self.n;
        (0..self.classes.len())
            .map(|i| {
                self.jacobian[i * n..(i + 1) * n]
                    .iter()
                    .zip(&self.mean_gradient)
                    .map(|(&j, m)| j as f64 - m)
                    .collect()
            })
            .collect()
    }

    /// For each leaf direction, the class gradients it is most aligned with, |cosine| descending.
    /// u_k lies in span{grad log p_i}; the cosines say which of those gradients it mostly follows.
    pub fn direction_mixing(&self) -> Vec<Vec<Mix>> {
        let grads = self.class_gradients();
        let norms: Vec<f64> = grads.iter().map(|g| dot(g, g).sqrt()).collect();
        self.leaf_basis
            .iter()
            .map(|u| {
                let mut mix: Vec<Mix> = grads
                    .iter()
                    .zip(&norms)
                    .zip(&self.classes)
                    .map(|((g, &norm), &class)| Mix {
                        class,
                        // A vanishing gradient (p_i = 1 exactly) mixes in nothing.
                        cosine: if norm > 0.0 { dot(u, g) / norm } else { 0.0 },
                    })
                    .collect();
                mix.sort_by(|a, b| b.cosine.abs().total_cmp(&a.cosine.abs()));
                mix
            })
            .collect()
    }
}
