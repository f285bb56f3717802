//! Placeholder: replaced by the pull-from-default-storage benchmark.
fn main() {}
