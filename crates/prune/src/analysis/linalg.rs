//! The two matrix computations of effective-filter analysis on a group's Gram matrix K: its
//! effective rank by the energy rule (nalgebra's symmetric eigensolver), and the greedy pivoted
//! Cholesky order that says which channels best explain the others.

use nalgebra::{DMatrix, SymmetricEigen};

/// The eigenvalues of the symmetric matrix `k`, largest first, negative rounding noise set to 0.
pub(crate) fn eigenvalues(k: &DMatrix<f64>) -> Vec<f64> {
    if k.nrows() == 0 {
        return Vec::new();
    }
    let mut values: Vec<f64> = SymmetricEigen::new(k.clone())
        .eigenvalues
        .iter()
        .map(|&l| l.max(0.0))
        .collect();
    values.sort_by(|a, b| b.total_cmp(a));
    values
}

/// The fewest leading eigenvalues (sorted largest first) that hold at least 1 − `epsilon` of
/// their sum: 0 when the sum is 0.
pub(crate) fn energy_rank(eigenvalues: &[f64], epsilon: f64) -> usize {
    let total: f64 = eigenvalues.iter().sum();
    if total <= 0.0 {
        return 0;
    }
    let goal = (1.0 - epsilon) * total;
    let mut sum = 0.0;
    for (i, &l) in eigenvalues.iter().enumerate() {
        sum += l;
        if sum >= goal {
            return i + 1;
        }
    }
    eigenvalues.len()
}

/// The columns of `k` in greedy pivoted-Cholesky order: each step takes the column whose
/// residual variance (its diagonal after projecting out the columns already taken) is largest,
/// ties to the lower index. Once every residual is below `1e-12` of the largest diagonal the
/// remaining columns are explained by the taken ones and follow in index order. Keeping a prefix
/// of the order keeps the set that best explains the rest.
pub(crate) fn pivoted_cholesky_order(k: &DMatrix<f64>) -> Vec<usize> {
    let n = k.nrows();
    let mut residual: Vec<f64> = (0..n).map(|i| k[(i, i)]).collect();
    let floor = 1e-12 * residual.iter().copied().fold(0.0, f64::max);
    // Column j of L, for each pivot taken, over all n rows.
    let mut factors: Vec<Vec<f64>> = Vec::new();
    let mut order = Vec::with_capacity(n);
    let mut taken = vec![false; n];
    while order.len() < n {
        let best = (0..n)
            .filter(|&i| !taken[i])
            .fold(None, |best: Option<usize>, i| match best {
                Some(b) if residual[b] >= residual[i] => Some(b),
                _ => Some(i),
            })
            .expect("a column is left");
        if residual[best] <= floor {
            order.extend((0..n).filter(|&i| !taken[i]));
            break;
        }
        let pivot = residual[best].sqrt();
        let column: Vec<f64> = (0..n)
            .map(|i| {
                let dot: f64 = factors.iter().map(|l| l[i] * l[best]).sum();
                (k[(i, best)] - dot) / pivot
            })
            .collect();
        for i in 0..n {
            residual[i] = (residual[i] - column[i] * column[i]).max(0.0);
        }
        taken[best] = true;
        order.push(best);
        factors.push(column);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    /// K = BᵀB for columns b0, b1, b2 = b0 + b1, b3 = b0 (a copy), b4 = 0, b5 independent.
    fn dependent_gram() -> DMatrix<f64> {
        let b0 = [1.0, 2.0, 0.0, 1.0, -1.0, 0.5];
        let b1 = [0.0, 1.0, 3.0, -2.0, 1.0, 1.0];
        let b5 = [2.0, -1.0, 1.0, 0.0, 0.0, 4.0];
        let columns: Vec<[f64; 6]> = vec![
            b0,
            b1,
            std::array::from_fn(|i| b0[i] + b1[i]),
            b0,
            [0.0; 6],
            b5,
        ];
        let b = DMatrix::from_fn(6, 6, |r, c| columns[c][r]);
        b.transpose() * b
    }

    #[test]
    fn eigenvalues_match_a_diagonal_matrix_and_come_largest_first() {
        let k = DMatrix::from_diagonal(&nalgebra::DVector::from_vec(vec![2.0, 5.0, 0.0, 1.0]));
        assert_eq!(eigenvalues(&k), vec![5.0, 2.0, 1.0, 0.0]);
    }

    #[test]
    fn the_energy_rule_counts_the_leading_share() {
        let values = [90.0, 9.0, 0.9, 0.1];
        assert_eq!(energy_rank(&values, 0.0), 4);
        assert_eq!(energy_rank(&values, 1e-4), 4);
        assert_eq!(energy_rank(&values, 5e-3), 3);
        assert_eq!(energy_rank(&values, 0.05), 2);
        assert_eq!(energy_rank(&values, 0.5), 1);
        assert_eq!(energy_rank(&[0.0, 0.0], 1e-3), 0);
    }

    #[test]
    fn dependent_columns_leave_the_rank_of_the_independent_ones() {
        let values = eigenvalues(&dependent_gram());
        assert_eq!(energy_rank(&values, 1e-9), 3, "{values:?}");
    }

    #[test]
    fn pivoted_cholesky_keeps_an_independent_set_first() {
        let k = dependent_gram();
        let order = pivoted_cholesky_order(&k);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (0..6).collect::<Vec<_>>(),
            "a permutation: {order:?}"
        );
        // The first three pivots span the columns: their Gram block has rank 3.
        let kept = &order[..3];
        let block = DMatrix::from_fn(3, 3, |i, j| k[(kept[i], kept[j])]);
        assert_eq!(energy_rank(&eigenvalues(&block), 1e-9), 3, "{order:?}");
        assert!(
            kept.contains(&5),
            "the one column nothing else explains: {order:?}"
        );
        // The zero column is explained by anything: never among the kept.
        assert!(!kept.contains(&4), "{order:?}");
    }
}
