//! Figures with thousands separators, for the benchmark tables. Shared by
//! `chainlog bench` and `benches/peers.rs` (which includes this file by path).

/// `n` rounded, its digits grouped by threes: `1234567.8` is `1,234,568`.
pub fn group_thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
