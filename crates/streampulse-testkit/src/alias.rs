//! Walker/Vose alias tables: O(1) sampling from a fixed discrete distribution, which is what
//! drawing 80 M plays from a Zipf-shaped catalog needs (a CDF search would be 20 steps each).

use rand::Rng;

#[derive(Debug, Clone)]
pub struct AliasTable {
    prob: Vec<f32>,
    alias: Vec<u32>,
}

impl AliasTable {
    /// Builds a table from non-negative weights (at least one positive).
    pub fn new(weights: &[f64]) -> Self {
        let n = weights.len();
        assert!(
            n > 0 && n <= u32::MAX as usize,
            "alias table needs 1..2^32 weights"
        );
        let total: f64 = weights.iter().sum();
        let mut scaled: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let mut prob = vec![1.0f32; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            prob[s] = scaled[s] as f32;
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        AliasTable { prob, alias }
    }

    /// Zipf weights `1 / (rank + 1)^s` over `n` items.
    pub fn zipf(n: usize, s: f64) -> Self {
        let w: Vec<f64> = (0..n).map(|r| 1.0 / ((r + 1) as f64).powf(s)).collect();
        Self::new(&w)
    }

    pub fn sample<R: Rng>(&self, rng: &mut R) -> usize {
        let i = rng.random_range(0..self.prob.len());
        if rng.random::<f32>() < self.prob[i] {
            i
        } else {
            self.alias[i] as usize
        }
    }

    pub fn len(&self) -> usize {
        self.prob.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prob.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn samples_follow_the_weights() {
        let t = AliasTable::new(&[1.0, 2.0, 7.0]);
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(1);
        let mut counts = [0u32; 3];
        for _ in 0..100_000 {
            counts[t.sample(&mut rng)] += 1;
        }
        let share = |i: usize| counts[i] as f64 / 100_000.0;
        assert!(
            (share(0) - 0.1).abs() < 0.01 && (share(2) - 0.7).abs() < 0.01,
            "{counts:?}"
        );
    }
}
