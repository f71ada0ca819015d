//! Query parameters of `GET …/events` and `GET …/export`: the filters of
//! `chainlog query`, each repeatable for OR, plus paging.

use std::str::FromStr;

use crate::event::{Outcome, Timestamp};
use crate::query::export::ExportFormat;
use crate::query::time_order::TimeCursor;
use crate::query::{parse_origin, parse_time, EventPattern, Filter, FilterError, IpNet, Query};
use crate::server::error::ApiError;

/// Events a page holds when `limit` is absent.
pub const DEFAULT_PAGE_EVENTS: u64 = 100;
/// Most events a page holds.
pub const MAX_PAGE_EVENTS: u64 = 1000;
/// Most values of one parameter.
const MAX_VALUES_PER_PARAMETER: usize = 64;

/// Which endpoint the parameters are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET …/events`: paged, `limit` 1..=1000, default 100.
    Events,
    /// `GET …/export`: `format` required, no default limit.
    Export,
    /// `GET …/events/stream`: no `limit`, `reverse` or `format`; `cursor`
    /// is the first seq to send (inclusive).
    Tail,
    /// `GET …/events/summary`: filters only (its `bucket` is taken out
    /// before); no `limit`, `cursor`, `reverse` or `format`.
    Summary,
}

/// The order of a page of `GET …/events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Arrival order (`order=seq`, the default); the cursor is a seq.
    Seq,
    /// Event time, ties by seq (`order=time`); the cursor is a
    /// [`TimeCursor`], or absent on the first page.
    Time(Option<TimeCursor>),
}

/// The parsed parameters.
#[derive(Debug, Clone)]
pub struct Params {
    /// The query (for `Events`, its limit is the page size).
    pub query: Query,
    /// The export format (`Export` only).
    pub format: Option<ExportFormat>,
    /// The page's order (`Events` only; `Seq` elsewhere).
    pub order: Order,
}

fn bad(detail: String) -> ApiError {
    ApiError::bad_request("invalid_parameter", detail)
}

fn parse_bool(name: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        other => Err(bad(format!(
            "`{name}`: expected true or false, got {:?}",
            cut(other)
        ))),
    }
}

fn cut(text: &str) -> String {
    text.chars().take(100).collect()
}

/// Parses the (name, value) pairs of a query string; relative times count
/// back from `now`.
pub fn parse(
    pairs: &[(String, String)],
    endpoint: Endpoint,
    now: Timestamp,
) -> Result<Params, ApiError> {
    let mut filter = Filter::default();
    let mut query = Query::default();
    let mut format = None;
    let mut by_time = false;
    let mut cursor = None;
    let mut limit = None;
    let mut since = None;
    let mut until = None;
    let mut received_since = None;
    let mut received_until = None;
    let mut counts = std::collections::HashMap::<&str, usize>::new();
    for (name, value) in pairs {
        let count = counts.entry(name.as_str()).or_default();
        *count += 1;
        if *count > MAX_VALUES_PER_PARAMETER {
            return Err(bad(format!(
                "`{}` is given more than {MAX_VALUES_PER_PARAMETER} times",
                cut(name)
            )));
        }
        let filter_err = |e: FilterError| bad(format!("`{name}`: {e}"));
        match name.as_str() {
            "actor" => filter.actors.push(value.clone()),
            "event" => filter
                .event_types
                .push(EventPattern::from_str(value).map_err(filter_err)?),
            "node" => filter.nodes.push(value.clone()),
            "resource" => filter.resources.push(value.clone()),
            "ip" => filter.ips.push(IpNet::from_str(value).map_err(filter_err)?),
            "outcome" => filter.outcomes.push(
                Outcome::from_str(value)
                    .map_err(|_| filter_err(FilterError::BadOutcome(cut(value))))?,
            ),
            "appender" => filter.appenders.push(value.clone()),
            "origin" => filter
                .origins
                .push(parse_origin(value).map_err(filter_err)?),
            "since" | "until" | "received_since" | "received_until" => {
                let t = parse_time(value, now).map_err(filter_err)?;
                let slot = match name.as_str() {
                    "since" => &mut since,
                    "until" => &mut until,
                    "received_since" => &mut received_since,
                    _ => &mut received_until,
                };
                if slot.replace(t).is_some() {
                    return Err(bad(format!("`{name}` is given more than once")));
                }
            }
            "limit" | "cursor" | "reverse" if endpoint == Endpoint::Summary => {
                return Err(bad(format!(
                    "`{name}` does not apply to a summary (it counts every matching record)"
                )))
            }
            "limit" | "reverse" if endpoint == Endpoint::Tail => {
                return Err(bad(format!(
                    "`{name}` does not apply to a live stream (it sends every matching record, oldest first)"
                )))
            }
            "cursor" if endpoint == Endpoint::Tail => {
                query.from_seq = Some(value.parse().map_err(|_| {
                    bad(format!(
                        "`cursor`: {:?} is not a seq (the first seq to send)",
                        cut(value)
                    ))
                })?);
            }
            "limit" => {
                let n: u64 = value
                    .parse()
                    .map_err(|_| bad(format!("`limit`: {:?} is not a number", cut(value))))?;
                let max = match endpoint {
                    Endpoint::Events => MAX_PAGE_EVENTS,
                    Endpoint::Export | Endpoint::Tail | Endpoint::Summary => u64::MAX,
                };
                if n == 0 || n > max {
                    return Err(bad(format!("`limit` must be between 1 and {max}, got {n}")));
                }
                limit = Some(n);
            }
            "cursor" => {
                if cursor.replace(value).is_some() {
                    return Err(bad("`cursor` is given more than once".to_string()));
                }
            }
            "order" if endpoint == Endpoint::Events => {
                by_time = match value.as_str() {
                    "seq" => false,
                    "time" => true,
                    other => {
                        return Err(bad(format!(
                            "`order`: {:?} is not an order (expected seq or time)",
                            cut(other)
                        )))
                    }
                };
            }
            "reverse" => query.reverse = parse_bool("reverse", value)?,
            "format" if endpoint == Endpoint::Export => {
                format = Some(ExportFormat::from_str(value).map_err(|_| {
                    bad(format!(
                        "`format`: unknown export format {:?} (expected csv, json or jsonl)",
                        cut(value)
                    ))
                })?);
            }
            other => {
                return Err(bad(format!(
                    "unknown parameter `{}` (known: actor, event, node, resource, ip, outcome, since, until, appender, origin, received_since, received_until, limit, cursor, reverse{})",
                    cut(other),
                    match endpoint {
                        Endpoint::Export => ", format",
                        Endpoint::Events => ", order",
                        Endpoint::Tail | Endpoint::Summary => "",
                    }
                )))
            }
        }
    }
    filter.since = since;
    filter.until = until;
    filter.received_since = received_since;
    filter.received_until = received_until;
    filter.validate().map_err(|e| bad(e.to_string()))?;
    query.filter = filter;
    query.limit = match endpoint {
        Endpoint::Events => Some(limit.unwrap_or(DEFAULT_PAGE_EVENTS)),
        Endpoint::Export | Endpoint::Tail | Endpoint::Summary => limit,
    };
    if endpoint == Endpoint::Export && format.is_none() {
        return Err(bad("`format` is required: csv, json or jsonl".to_string()));
    }
    let order = if by_time {
        Order::Time(
            cursor
                .map(|c| c.parse::<TimeCursor>())
                .transpose()
                .map_err(|e| bad(format!("`cursor`: {e}")))?,
        )
    } else {
        if let Some(c) = cursor {
            query.after = Some(c.parse().map_err(|_| {
                bad(format!(
                    "`cursor`: {:?} is not a seq (pass the next_cursor of the previous page)",
                    cut(c)
                ))
            })?);
        }
        Order::Seq
    };
    Ok(Params {
        query,
        format,
        order,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn filters_repeat_for_or() {
        let now = Timestamp::parse_rfc3339("2026-03-09T12:00:00Z").unwrap();
        let p = parse(
            &pairs(&[
                ("actor", "alice"),
                ("actor", "bob"),
                ("event", "pcap.*"),
                ("since", "1h"),
                ("reverse", "true"),
                ("cursor", "42"),
            ]),
            Endpoint::Events,
            now,
        )
        .unwrap();
        assert_eq!(p.query.filter.actors, ["alice", "bob"]);
        assert_eq!(
            p.query.filter.since,
            Some(Timestamp::parse_rfc3339("2026-03-09T11:00:00Z").unwrap())
        );
        assert!(p.query.reverse);
        assert_eq!(p.query.after, Some(42));
        assert_eq!(p.query.limit, Some(DEFAULT_PAGE_EVENTS));
    }

    #[test]
    fn order_by_time_takes_a_time_cursor() {
        let now = Timestamp::parse_rfc3339("2026-03-09T12:00:00Z").unwrap();
        let parsed = |items: &[(&str, &str)], endpoint| parse(&pairs(items), endpoint, now);
        let p = parsed(&[("order", "time"), ("cursor", "-5.42")], Endpoint::Events).unwrap();
        let cursor = TimeCursor {
            timestamp: Timestamp::from_unix_nanos(-5),
            seq: 42,
        };
        assert_eq!(p.order, Order::Time(Some(cursor)));
        assert_eq!(p.query.after, None);
        // The cursor is read after the order, wherever each stands.
        let p = parsed(&[("cursor", "7"), ("order", "seq")], Endpoint::Events).unwrap();
        assert_eq!((p.order, p.query.after), (Order::Seq, Some(7)));
        type Refusal<'a> = (&'a [(&'a str, &'a str)], Endpoint, &'a str);
        let refusals: [Refusal; 5] = [
            (
                &[("order", "time"), ("cursor", "7")],
                Endpoint::Events,
                "time-order cursor",
            ),
            (
                &[("order", "arrival")],
                Endpoint::Events,
                "expected seq or time",
            ),
            (&[("cursor", "1.2")], Endpoint::Events, "is not a seq"),
            (
                &[("cursor", "1"), ("cursor", "2")],
                Endpoint::Events,
                "more than once",
            ),
            (
                &[("order", "time"), ("format", "csv")],
                Endpoint::Export,
                "unknown parameter `order`",
            ),
        ];
        for (items, endpoint, said) in refusals {
            let e = parsed(items, endpoint).unwrap_err();
            assert!(e.detail.contains(said), "{items:?}: {}", e.detail);
        }
    }

    #[test]
    fn provenance_filters() {
        let now = Timestamp::parse_rfc3339("2026-03-09T12:00:00Z").unwrap();
        let items = pairs(&[
            ("appender", "key-1"),
            ("appender", "key-2"),
            ("origin", "engine"),
            ("received_since", "2h"),
            ("received_until", "2026-03-09T11:30:00Z"),
        ]);
        let e = parse(&items, Endpoint::Export, now).unwrap_err();
        assert!(e.detail.contains("`format` is required"), "{}", e.detail);
        let p = parse(&items, Endpoint::Events, now).unwrap();
        let f = &p.query.filter;
        assert_eq!(f.appenders, ["key-1", "key-2"]);
        assert_eq!(f.origins, [crate::event::Origin::Engine]);
        assert_eq!(
            f.received_since,
            Some(Timestamp::parse_rfc3339("2026-03-09T10:00:00Z").unwrap())
        );
        assert_eq!(
            f.received_until,
            Some(Timestamp::parse_rfc3339("2026-03-09T11:30:00Z").unwrap())
        );
    }

    #[test]
    fn a_tail_starts_at_its_cursor_and_takes_no_paging() {
        let now = Timestamp::now();
        let p = parse(
            &pairs(&[("cursor", "7"), ("actor", "alice")]),
            Endpoint::Tail,
            now,
        )
        .unwrap();
        assert_eq!(p.query.from_seq, Some(7));
        assert_eq!(p.query.after, None);
        assert_eq!(p.query.limit, None);
        assert_eq!(p.query.filter.actors, ["alice"]);
        for name in ["limit", "reverse"] {
            let e = parse(&pairs(&[(name, "1")]), Endpoint::Tail, now).unwrap_err();
            assert!(e.detail.contains("live stream"), "{}", e.detail);
        }
        let e = parse(&pairs(&[("format", "csv")]), Endpoint::Tail, now).unwrap_err();
        assert!(e.detail.contains("unknown parameter"), "{}", e.detail);
    }

    #[test]
    fn summaries_take_filters_only() {
        let now = Timestamp::now();
        let p = parse(&pairs(&[("actor", "alice")]), Endpoint::Summary, now).unwrap();
        assert_eq!(p.query.limit, None);
        for name in ["limit", "cursor", "reverse"] {
            let e = parse(&pairs(&[(name, "1")]), Endpoint::Summary, now).unwrap_err();
            assert!(e.detail.contains("summary"), "{}", e.detail);
        }
    }

    #[test]
    fn bad_values_are_named() {
        let now = Timestamp::now();
        for (items, needle) in [
            (vec![("limit", "1001")], "`limit`"),
            (vec![("limit", "0")], "`limit`"),
            (vec![("since", "yesterday")], "`since`"),
            (vec![("ip", "300.1.1.1")], "`ip`"),
            (vec![("event", "Bad")], "`event`"),
            (vec![("outcome", "maybe")], "`outcome`"),
            (vec![("cursor", "-1")], "`cursor`"),
            (vec![("nope", "1")], "unknown parameter `nope`"),
            (vec![("format", "csv")], "unknown parameter `format`"),
            (vec![("since", "1h"), ("until", "2h")], "not before"),
            (vec![("origin", "legacy")], "`origin`"),
            (vec![("received_since", "soon")], "`received_since`"),
            (
                vec![("received_since", "1h"), ("received_until", "2h")],
                "--received-since",
            ),
            (
                vec![("received_until", "1h"), ("received_until", "2h")],
                "more than once",
            ),
        ] {
            let e = parse(&pairs(&items), Endpoint::Events, now).unwrap_err();
            assert!(e.detail.contains(needle), "{items:?}: {}", e.detail);
        }
        let e = parse(&[], Endpoint::Export, now).unwrap_err();
        assert!(e.detail.contains("`format` is required"));
        let p = parse(&pairs(&[("format", "csv")]), Endpoint::Export, now).unwrap();
        assert_eq!(p.format, Some(ExportFormat::Csv));
        assert_eq!(p.query.limit, None);
    }
}
