//! Every input has a limit. These are part of the format contract: a reader
//! rejects stored data that exceeds them, so a damaged length field can never
//! make it allocate more than these bounds.

/// Longest event type, in bytes (`pcap.download`).
pub const MAX_EVENT_TYPE_BYTES: usize = 128;
/// Longest actor, in bytes.
pub const MAX_ACTOR_BYTES: usize = 256;
/// Longest node name, in bytes.
pub const MAX_NODE_BYTES: usize = 256;
/// Longest resource id, in bytes.
pub const MAX_RESOURCE_BYTES: usize = 256;
/// Largest context, as compact JSON text, in bytes.
pub const MAX_CONTEXT_BYTES: usize = 64 * 1024;
/// Longest appender name (who appended a record), in bytes.
pub const MAX_APPENDER_BYTES: usize = 256;
/// Largest version 1 record (the event body): the fixed fields (timestamp,
/// outcome, IP kind and up to 16 address bytes), four u16-prefixed strings
/// and the u32-prefixed context, each at its limit.
pub const MAX_RECORD_BYTES_V1: usize = 26
    + 4 * 2
    + MAX_EVENT_TYPE_BYTES
    + MAX_ACTOR_BYTES
    + MAX_NODE_BYTES
    + MAX_RESOURCE_BYTES
    + 4
    + MAX_CONTEXT_BYTES;
/// Largest record of any layout: a version 2 record, the provenance prefix
/// (received_at, origin, u16-prefixed appender at its limit) and a largest
/// version 1 body. Frames are bounded by it whatever their segment's version;
/// the record decoder bounds each version by its own maximum.
pub const MAX_RECORD_BYTES: usize = 8 + 1 + 2 + MAX_APPENDER_BYTES + MAX_RECORD_BYTES_V1;
/// Most events in one `append_batch` call.
pub const MAX_BATCH_EVENTS: usize = 65_536;
/// Longest JSON input line the CLI accepts, in bytes.
pub const MAX_INPUT_LINE_BYTES: usize = 256 * 1024;

#[cfg(test)]
mod tests {
    #[test]
    fn record_limit_matches_the_format_doc() {
        // docs/FORMAT.md states this number; keep them in step.
        assert_eq!(super::MAX_RECORD_BYTES_V1, 66_470);
        assert_eq!(super::MAX_RECORD_BYTES, 66_737);
    }
}
