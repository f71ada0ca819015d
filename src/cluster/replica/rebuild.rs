//! Rebuilding a log directory from the bucket: archived sealed segments,
//! then the segments after them from pieces, up to a head.
