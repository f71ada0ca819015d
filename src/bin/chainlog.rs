//! The chainlog command-line tool.
fn main() {}
