//! Small statistics for the benchmarks' JSON lines (shared by the bench binaries).

/// Rounded to one decimal, as the figures are printed.
pub(crate) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub(crate) fn round_all(xs: &[f64]) -> Vec<f64> {
    xs.iter().copied().map(round1).collect()
}

pub(crate) fn sorted(xs: &[f64]) -> Vec<f64> {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// The middle value, or the mean of the two middle values.
pub(crate) fn median(xs: &[f64]) -> f64 {
    let v = sorted(xs);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
