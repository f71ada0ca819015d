//! Delivery to where security teams read the log: export rows rendered as
//! OCSF, CEF or JSON, RFC 5424 syslog messages, and the syslog sender.
//! Uses the layers below it (an export row is `query::export`'s), never `server`.

pub mod cef;
pub mod ocsf;
pub mod row;
pub mod syslog;
#[cfg(feature = "server")]
pub mod syslog_send;

pub use row::{render, Format, RenderError, Row};
