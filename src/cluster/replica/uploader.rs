//! The uploader thread of a [`super::Replicated`] log.

/// State shared between the appending side and the uploader.
#[derive(Debug, Default)]
pub(super) struct Shared {}
