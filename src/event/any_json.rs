//! A proptest strategy for arbitrary JSON values, shared by the context
//! readers' tests (each checks itself against serde_json on them).

use proptest::prelude::*;
use serde_json::Value;

/// The shape of the values [`any_json`] makes.
pub(crate) struct Shape {
    /// Regexes for string leaves (two kinds, so both plain and escaped
    /// text turn up).
    pub strings: [&'static str; 2],
    /// Regex for object keys.
    pub keys: &'static str,
    /// Most members of one array or object.
    pub width: usize,
    /// proptest's desired size of the whole tree.
    pub size: u32,
}

/// Any JSON value of `shape`: nulls, booleans, integers at both ends of
/// 64 bits, finite doubles, strings, nested up to four deep.
pub(crate) fn any_json(shape: Shape) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        shape.strings[0].prop_map(Value::String),
        shape.strings[1].prop_map(Value::String),
    ];
    let (keys, width) = (shape.keys, shape.width);
    leaf.prop_recursive(4, shape.size, width as u32, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..width).prop_map(Value::Array),
            prop::collection::vec((keys, inner), 0..width)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}
