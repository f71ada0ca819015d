//! Random events in their JSON form for the tests that compare
//! [`EventRef`] with serde_json's `Event`: spelled every way JSON allows
//! (escapes, surrogate pairs, number forms, whitespace), with duplicate
//! keys, deep nesting and broken text mixed in.

use proptest::prelude::*;

use super::EventRef;
use crate::event::{encode_record, Event, Timestamp};
use crate::EncodeRecord;

/// How one character of a string is written.
#[derive(Debug, Clone)]
pub(crate) enum Piece {
    /// As itself (a control character this way is invalid JSON).
    Raw(char),
    /// `\n`, `\"`, `\/`…, or `\u` where there is no short form.
    Short(char),
    /// `\u00e9`; a surrogate pair beyond the BMP; hex in upper case if set.
    Unicode(char, bool),
    /// Invalid: `\ud800` alone, `\udc00` alone, `\ud800\u0041`, `\x`.
    Broken(u8),
}

impl Piece {
    /// The character it stands for, if it is valid.
    fn char(&self) -> Option<char> {
        match self {
            Piece::Raw(c) | Piece::Short(c) | Piece::Unicode(c, _) => Some(*c),
            Piece::Broken(_) => None,
        }
    }

    fn write(&self, out: &mut String) {
        let unicode = |out: &mut String, c: char, upper: bool| {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&if upper {
                    format!("\\u{unit:04X}")
                } else {
                    format!("\\u{unit:04x}")
                });
            }
        };
        match *self {
            // Never a raw quote or backslash: that would change the
            // structure, not only the spelling.
            Piece::Raw('"') | Piece::Short('"') => out.push_str("\\\""),
            Piece::Raw('\\') | Piece::Short('\\') => out.push_str("\\\\"),
            Piece::Raw(c) => out.push(c),
            Piece::Short(c) => match c {
                '/' => out.push_str("\\/"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c => unicode(out, c, false),
            },
            Piece::Unicode(c, upper) => unicode(out, c, upper),
            Piece::Broken(kind) => out.push_str(match kind % 4 {
                0 => "\\ud800",
                1 => "\\udc00",
                2 => "\\ud800\\u0041",
                _ => "\\x",
            }),
        }
    }
}

/// A string: its pieces.
#[derive(Debug, Clone)]
pub(crate) struct Text(pub(crate) Vec<Piece>);

impl Text {
    /// The value it stands for, if every piece is valid.
    fn value(&self) -> Option<String> {
        self.0.iter().map(Piece::char).collect()
    }

    fn write(&self, out: &mut String) {
        out.push('"');
        for piece in &self.0 {
            piece.write(out);
        }
        out.push('"');
    }
}

/// A JSON value and how it is written.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// `null`, `true`, `false`, or a token written as is (a number in any
    /// spelling, or something invalid).
    Token(String),
    /// A string.
    Str(Text),
    /// An array.
    Array(Vec<Node>),
    /// An object, keys in order (duplicates allowed).
    Object(Vec<(Text, Node)>),
    /// An array nested this many levels around `1`.
    Deep(usize),
}

impl Node {
    /// Whether an object in it has a key twice, or a key serde_json's
    /// `Value` treats specially: serde takes those, the borrowed reader
    /// declines them.
    fn has_declined_keys(&self) -> bool {
        match self {
            Node::Token(_) | Node::Str(_) | Node::Deep(_) => false,
            Node::Array(items) => items.iter().any(Node::has_declined_keys),
            Node::Object(entries) => {
                let keys: Vec<Option<String>> = entries.iter().map(|(k, _)| k.value()).collect();
                let duplicate = (0..keys.len()).any(|i| keys[..i].contains(&keys[i]));
                let private = keys
                    .iter()
                    .flatten()
                    .any(|k| k.starts_with("$serde_json::private::"));
                duplicate || private || entries.iter().any(|(_, v)| v.has_declined_keys())
            }
        }
    }

    fn write(&self, out: &mut String, ws: &mut Whitespace) {
        match self {
            Node::Token(token) => out.push_str(token),
            Node::Str(text) => text.write(out),
            Node::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        ws.write(out);
                        out.push(',');
                    }
                    ws.write(out);
                    item.write(out, ws);
                }
                ws.write(out);
                out.push(']');
            }
            Node::Object(entries) => write_object(entries, out, ws),
            Node::Deep(levels) => {
                out.push_str(&"[".repeat(*levels));
                out.push('1');
                out.push_str(&"]".repeat(*levels));
            }
        }
    }
}

fn write_object(entries: &[(Text, Node)], out: &mut String, ws: &mut Whitespace) {
    out.push('{');
    for (i, (key, value)) in entries.iter().enumerate() {
        if i > 0 {
            ws.write(out);
            out.push(',');
        }
        ws.write(out);
        key.write(out);
        ws.write(out);
        out.push(':');
        ws.write(out);
        value.write(out, ws);
    }
    ws.write(out);
    out.push('}');
}

/// Whitespace between tokens, drawn from a seed: mostly none, as clients
/// send it, sometimes JSON's four kinds, rarely a form feed (not JSON).
pub(crate) struct Whitespace(u64);

impl Whitespace {
    fn write(&mut self, out: &mut String) {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        match self.0 % 1024 {
            0..=767 => {}
            768..=959 => out.push([' ', '\t', '\n', '\r'][(self.0 >> 12) as usize % 4]),
            960..=1022 => out.push_str(" \r\n\t "),
            _ => out.push('\u{c}'),
        }
    }
}

fn any_char() -> impl Strategy<Value = char> {
    prop_oneof![
        6 => proptest::char::range(' ', '~'),
        1 => Just('"'),
        1 => Just('\\'),
        1 => Just('/'),
        1 => proptest::char::range('\0', '\u{1f}'),
        1 => prop::sample::select(vec!['\u{7f}', 'é', '漢', '🙂', '\u{2028}', '\u{10ffff}', '\u{fffd}']),
        1 => any::<char>(),
    ]
}

fn piece_of(c: char) -> impl Strategy<Value = Piece> {
    prop_oneof![
        8 => Just(if c < ' ' { Piece::Short(c) } else { Piece::Raw(c) }),
        2 => Just(Piece::Short(c)),
        2 => any::<bool>().prop_map(move |upper| Piece::Unicode(c, upper)),
        // A raw control character: invalid.
        1 => Just(Piece::Raw(c)),
    ]
}

/// A string with characters of every kind, spelled every way.
pub(crate) fn any_text() -> impl Strategy<Value = Text> {
    let piece = prop_oneof![
        200 => any_char().prop_flat_map(piece_of),
        1 => any::<u8>().prop_map(Piece::Broken),
    ];
    prop::collection::vec(piece, 0..12).prop_map(Text)
}

/// `value` as a string, each character spelled one of the valid ways.
pub(crate) fn spelled(value: &str) -> impl Strategy<Value = Text> {
    let chars: Vec<char> = value.chars().collect();
    let pieces: Vec<_> = chars
        .into_iter()
        .map(|c| {
            prop_oneof![
                40 => Just(if c < ' ' { Piece::Short(c) } else { Piece::Raw(c) }),
                1 => Just(Piece::Short(c)),
                1 => any::<bool>().prop_map(move |upper| Piece::Unicode(c, upper)),
            ]
        })
        .collect();
    pieces.prop_map(Text)
}

/// Keys: a few names that collide often, random ones, serde_json's own.
fn any_key() -> impl Strategy<Value = Text> {
    prop_oneof![
        8 => prop::sample::select(vec!["a", "b", "i", "sha256", "é", "a\"b"]).prop_flat_map(spelled),
        4 => any_text(),
        1 => prop::sample::select(vec![
            "$serde_json::private::RawValue",
            "$serde_json::private::Number",
        ])
        .prop_flat_map(spelled),
    ]
}

/// A number in every spelling: plain integers, floats written by Rust and
/// by serde_json, exponents, -0, integers beyond u64/i64, long digit
/// strings, and invalid ones.
fn any_number() -> impl Strategy<Value = String> {
    let finite = any::<f64>().prop_filter("finite", |f| f.is_finite());
    prop_oneof![
        4 => any::<i64>().prop_map(|n| n.to_string()),
        2 => any::<u64>().prop_map(|n| n.to_string()),
        2 => (0u32..1000).prop_map(|n| n.to_string()),
        1 => finite.clone().prop_map(|f| format!("{f}")),
        1 => finite.clone().prop_map(|f| format!("{f:e}")),
        1 => finite.clone().prop_map(|f| format!("{f:E}")),
        1 => finite.prop_map(|f| serde_json::to_string(&f).unwrap_or_default()),
        2 => "-?(0|[1-9][0-9]{0,24})(\\.[0-9]{1,24})?([eE][+-]?[0-9]{1,4})?",
        2 => prop::sample::select(vec![
            "-0", "0", "-0.0", "0.0", "1.0", "1e3", "1E+2", "1e-2", "-1.5E-3",
            "18446744073709551615", "18446744073709551616", "-9223372036854775808",
            "-9223372036854775809", "9999999999999999999", "-999999999999999999",
            "0e99999999999", "1e-400", "4.9e-324", "2.2250738585072011e-308",
            "1e400", "-1e400", "01", "-01", "1.", "+1", ".5", "-", "1e", "1e+", "0x10", "1.5.3",
        ])
        .prop_map(str::to_string),
    ]
}

/// Any context value.
pub(crate) fn any_node() -> impl Strategy<Value = Node> {
    let leaf = prop_oneof![
        8 => prop::sample::select(vec!["null", "true", "false"]).prop_map(|t| Node::Token(t.into())),
        16 => any_number().prop_map(Node::Token),
        16 => any_text().prop_map(Node::Str),
        1 => prop::sample::select(vec!["nul", "truex", "'x'", ""]).prop_map(|t| Node::Token(t.into())),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            4 => prop::collection::vec(inner.clone(), 0..5).prop_map(Node::Array),
            6 => prop::collection::vec((any_key(), inner), 0..6).prop_map(Node::Object),
            // Around serde_json's recursion limit.
            1 => (56usize..140).prop_map(Node::Deep),
        ]
    })
}

/// A context: mostly an object, sometimes not one.
fn any_context() -> impl Strategy<Value = Node> {
    prop_oneof![
        18 => prop::collection::vec((any_key(), any_node()), 0..6).prop_map(Node::Object),
        1 => prop::sample::select(vec!["null", "5", "[]", "\"x\""]).prop_map(|t| Node::Token(t.into())),
        // Around MAX_CONTEXT_BYTES once stored.
        1 => (65_520usize..65_540).prop_map(|n| Node::Object(vec![(
            Text("blob".chars().map(Piece::Raw).collect()),
            Node::Str(Text(vec![Piece::Raw('y'); n])),
        )])),
    ]
}

/// A string value for a text field, from values that pass and fail
/// validation.
fn any_field_text() -> impl Strategy<Value = Node> {
    let value = prop_oneof![
        8 => prop::sample::select(vec![
            "alice@acme.io", "deploy-bot", "system", "nyc-edge-01", "a3f7c2b1",
            "pcap.download", "auth.login_failed", "é漢🙂", "a/b",
        ])
        .prop_map(str::to_string),
        1 => Just(String::new()),
        1 => Just("x".repeat(300)),
        1 => Just("a\u{1}b".to_string()),
        1 => Just("Pcap.download".to_string()),
        2 => ".{0,20}",
    ];
    prop_oneof![
        36 => value.prop_flat_map(|v| spelled(&v)).prop_map(Node::Str),
        3 => any_text().prop_map(Node::Str),
        1 => prop::sample::select(vec!["null", "5", "[]"]).prop_map(|t| Node::Token(t.into())),
    ]
}

fn quoted(values: Vec<&'static str>) -> impl Strategy<Value = Node> {
    prop::sample::select(values)
        .prop_flat_map(spelled)
        .prop_map(Node::Str)
}

fn null_or(values: impl Strategy<Value = Node>) -> impl Strategy<Value = Node> {
    prop_oneof![1 => Just(Node::Token("null".into())), 6 => values]
}

/// An event's JSON text, and whether serde_json taking it means the
/// borrowed reader must take it too.
#[derive(Debug, Clone)]
pub(crate) struct EventCase {
    pub(crate) text: String,
    /// False when it holds what the borrowed reader declines although
    /// serde_json takes it.
    pub(crate) takeable: bool,
}

/// Random events in their JSON form.
pub(crate) fn any_event() -> impl Strategy<Value = EventCase> {
    let timestamp = prop_oneof![
        16 => any::<i64>().prop_map(|n| Timestamp::from_unix_nanos(n).to_string()).prop_flat_map(|t| spelled(&t)).prop_map(Node::Str),
        2 => quoted(vec!["2026-03-09T10:52:14.5+01:00", "2026-03-09T09:52:14Z", "yesterday", "2026-13-01T00:00:00Z"]),
        1 => Just(Node::Token("null".into())),
    ];
    let ip = null_or(prop_oneof![
        8 => quoted(vec!["203.0.113.42", "2001:db8::1", "::ffff:1.2.3.4", "::1"]),
        1 => quoted(vec!["999.1.1.1", "", "1.2.3"]),
    ]);
    let outcome = prop_oneof![
        12 => quoted(vec!["success", "failure"]),
        1 => quoted(vec!["bogus", "Success"]),
        1 => Just(Node::Token("{\"failure\":null}".into())),
        1 => Just(Node::Token("null".into())),
    ];
    let field = |name: &'static str, value: BoxedStrategy<Node>, present: u32| {
        prop_oneof![
            present => (spelled(name), value).prop_map(Some),
            (20 - present) => Just(None),
        ]
    };
    (
        (
            field("timestamp", timestamp.boxed(), 12),
            field("event", any_field_text().boxed(), 19),
            field("actor", any_field_text().boxed(), 19),
            field("node", null_or(any_field_text()).boxed(), 10),
            field("resource", null_or(any_field_text()).boxed(), 10),
            field("ip", ip.boxed(), 10),
            field("outcome", outcome.boxed(), 10),
            field("context", any_context().boxed(), 15),
        ),
        prop_oneof![
            40 => Just(None),
            1 => Just(Some(("colour", Node::Token("\"red\"".into())))),
            1 => Just(Some(("actor", Node::Token("\"again\"".into())))),
        ],
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(|((t, e, a, n, r, i, o, c), extra, order, spacing)| {
            let mut entries: Vec<(Text, Node)> =
                [t, e, a, n, r, i, o, c].into_iter().flatten().collect();
            if let Some((name, value)) = extra {
                entries.push((Text(name.chars().map(Piece::Raw).collect()), value));
            }
            // A field order drawn from the seed.
            let mut x = order | 1;
            for i in (1..entries.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                entries.swap(i, (x % (i as u64 + 1)) as usize);
            }
            let context_declined = entries
                .iter()
                .any(|(k, v)| k.value().as_deref() == Some("context") && v.has_declined_keys());
            let mut ws = Whitespace(spacing | 1);
            let mut text = String::new();
            ws.write(&mut text);
            write_object(&entries, &mut text, &mut ws);
            ws.write(&mut text);
            EventCase {
                text,
                takeable: !context_declined,
            }
        })
}

/// The record bytes, or the error, of an encoding.
pub(crate) fn encoded(
    encode: impl FnOnce(&mut Vec<u8>) -> Result<(), crate::event::EventError>,
) -> Result<Vec<u8>, crate::event::EventError> {
    let mut out = vec![0xa5];
    match encode(&mut out) {
        Ok(()) => Ok(out),
        Err(e) => {
            assert_eq!(out, [0xa5], "a refused event left bytes behind");
            Err(e)
        }
    }
}

/// Parses `text` both ways; when the borrowed reader takes it, checks that
/// serde_json takes it too and that both encode to the same bytes or the
/// same error. Returns whether the borrowed reader took it.
pub(crate) fn parse_both_and_compare(text: &str) -> bool {
    let before = Timestamp::now();
    let owned = serde_json::from_str::<Event>(text);
    let borrowed = EventRef::from_json(text);
    let after = Timestamp::now();
    let Some(mut borrowed) = borrowed else {
        return false;
    };
    let owned = match owned {
        Ok(owned) => owned,
        Err(e) => panic!("the borrowed reader took what serde_json refuses ({e}): {text:?}"),
    };
    // Both "now" when the text has no timestamp.
    let now = before..=after;
    if now.contains(&owned.timestamp) && now.contains(&borrowed.timestamp) {
        borrowed.timestamp = owned.timestamp;
    }
    assert_eq!(
        encoded(|out| borrowed.encode_record(out)),
        encoded(|out| encode_record(&owned, out)),
        "{text:?}"
    );
    // Without a number read as a float, the number rule has nothing to refuse.
    if !borrowed.float_read() {
        assert_eq!(
            crate::event::input::check_numbers(text.as_bytes()),
            Ok(()),
            "{text:?}"
        );
    }
    true
}
