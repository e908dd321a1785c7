//! Summaries of a benchmark's samples: the figures each JSON line reports.

use std::time::Duration;

use crate::stats::{median, sorted};

/// A duration in milliseconds, as the figures are given.
pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Nearest-rank percentile: the smallest sample with at least `p`% of the samples at or below
/// it (p95 of 20 samples is the 19th smallest).
pub(crate) fn percentile(xs: &[f64], p: f64) -> f64 {
    let v = sorted(xs);
    if v.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// The usual figures of a set of samples.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Summary {
    pub(crate) n: usize,
    pub(crate) median: f64,
    pub(crate) p95: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) mean: f64,
}

impl Summary {
    pub(crate) fn of(xs: &[f64]) -> Summary {
        let v = sorted(xs);
        Summary {
            n: v.len(),
            median: median(&v),
            p95: percentile(&v, 95.0),
            min: v.first().copied().unwrap_or(f64::NAN),
            max: v.last().copied().unwrap_or(f64::NAN),
            mean: v.iter().sum::<f64>() / v.len() as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentile() {
        let xs: Vec<f64> = (1..=20).rev().map(f64::from).collect();
        assert_eq!(median(&xs), 10.5);
        assert_eq!(percentile(&xs, 95.0), 19.0);
        assert_eq!(percentile(&xs, 100.0), 20.0);
        assert_eq!(percentile(&xs, 0.0), 1.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        let s = Summary::of(&[5.0, 1.0, 3.0]);
        assert_eq!((s.n, s.min, s.max, s.mean), (3, 1.0, 5.0, 3.0));
    }
}
