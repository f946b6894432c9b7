//! What the media node's benchmarks share: their numeric arguments and the median of rounds.

/// The numbers on the command line, in order; the options cargo adds are skipped.
pub fn numbers() -> Vec<usize> {
    std::env::args()
        .skip(1)
        .filter_map(|argument| argument.parse().ok())
        .collect()
}

/// The median of `values` (the upper one of an even count); `values` is sorted.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
