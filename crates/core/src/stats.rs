//! The one quantile every figure uses (the replay's time-to-ready, evaluation latencies, the
//! benchmarks and the demo): nearest rank, rounded.

/// The `q` quantile (0..=1) of ascending `sorted` values: the value at rank
/// `round((n - 1) · q)`; 0 when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
    sorted[i]
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_rounded_and_zero_when_empty() {
        assert_eq!(percentile(&[], 0.5), 0.0);
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 0.5), 3.0); // rank 1.5 rounds to 2
        assert_eq!(percentile(&v, 0.99), 4.0);
        assert_eq!(percentile(&v, 1.0), 4.0);
    }
}
