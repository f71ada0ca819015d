//! Conditional writes on a [`Bucket`]: create-only PUTs that report the
//! version they wrote, compare-and-swap PUTs (`If-Match`), and reads that
//! return the version to swap against: what a writer's lease and a
//! published head over a bucket need.
//!
//! A refused write is an answer, not an error: [`Conditional::Refused`].
//! Since a write can succeed on the server and its response be lost (the
//! client then retries and the retry is refused), a refused write is read
//! back: an object holding exactly the bytes just sent was written by this
//! call, and is reported as [`Conditional::Written`].

use object_store::{
    GetOptions, ObjectStore as _, ObjectStoreExt as _, PutMode, PutOptions, PutPayload,
    UpdateVersion,
};

use super::{ArchiveError, Bucket};

/// The version of an object, as conditional writes compare it: its ETag,
/// without quotes (Ceph 16's radosgw matches `If-Match` only against the
/// bare ETag; AWS S3 and s3s-fs accept either form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    /// The ETag, unquoted.
    pub e_tag: String,
    /// The object's version id, on a versioned bucket.
    pub version: Option<String>,
}

impl ObjectVersion {
    fn new(
        e_tag: Option<String>,
        version: Option<String>,
        url: &str,
    ) -> Result<Self, ArchiveError> {
        let e_tag = e_tag.ok_or_else(|| ArchiveError::MissingETag(url.to_string()))?;
        Ok(ObjectVersion {
            e_tag: unquote(&e_tag).to_string(),
            version,
        })
    }

    fn to_update(&self) -> UpdateVersion {
        UpdateVersion {
            e_tag: Some(self.e_tag.clone()),
            version: self.version.clone(),
        }
    }
}

/// `"abc"` → `abc`; `W/"abc"` stays as it is (a weak ETag never matches
/// `If-Match` anyway).
fn unquote(e_tag: &str) -> &str {
    e_tag
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(e_tag)
}

/// An object's bytes with the version they were read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The whole object.
    pub bytes: Vec<u8>,
    /// Its version: pass it to [`Bucket::put_swap`] to replace exactly these bytes.
    pub version: ObjectVersion,
}

/// What a conditional PUT did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conditional {
    /// The object now holds the bytes sent, at this version.
    Written(ObjectVersion),
    /// The condition did not hold (the object existed, or had another
    /// version); nothing was written.
    Refused,
}

impl Bucket {
    /// The whole object `name` and its version, or `None` when there is no
    /// such object. Meant for small objects (a lease, a head).
    pub fn get_versioned(&self, name: &str) -> Result<Option<Versioned>, ArchiveError> {
        let path = self.path(name);
        let got = self.runtime.block_on(async {
            let result = self.store.get_opts(&path, GetOptions::default()).await?;
            let meta = result.meta.clone();
            let bytes = result.bytes().await?;
            Ok::<_, object_store::Error>((meta, bytes))
        });
        match got {
            Ok((meta, bytes)) => Ok(Some(Versioned {
                bytes: bytes.to_vec(),
                version: ObjectVersion::new(meta.e_tag, meta.version, &self.url(name))?,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(ArchiveError::store(
                format!("reading {}", self.url(name)),
                e,
            )),
        }
    }

    /// Writes `bytes` as `name` only if no object of that name exists
    /// (`If-None-Match: *`). Never uses the Object Lock headers of
    /// [`Bucket::with_object_lock`]: these objects are replaced later.
    pub fn put_create(&self, name: &str, bytes: Vec<u8>) -> Result<Conditional, ArchiveError> {
        self.put_conditional(name, bytes, PutMode::Create)
    }

    /// Replaces `name` with `bytes` only if it is still at `version`
    /// (`If-Match`): a compare-and-swap.
    pub fn put_swap(
        &self,
        name: &str,
        bytes: Vec<u8>,
        version: &ObjectVersion,
    ) -> Result<Conditional, ArchiveError> {
        self.put_conditional(name, bytes, PutMode::Update(version.to_update()))
    }

    /// Deletes `name` (unconditionally; S3 has no conditional DELETE that
    /// every server honours). Deleting a missing object is not an error.
    pub fn delete(&self, name: &str) -> Result<(), ArchiveError> {
        match self.runtime.block_on(self.store.delete(&self.path(name))) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(ArchiveError::store(
                format!("deleting {}", self.url(name)),
                e,
            )),
        }
    }

    fn put_conditional(
        &self,
        name: &str,
        bytes: Vec<u8>,
        mode: PutMode,
    ) -> Result<Conditional, ArchiveError> {
        let url = self.url(name);
        let options = PutOptions {
            mode,
            ..PutOptions::default()
        };
        let put = self.runtime.block_on(self.store.put_opts(
            &self.path(name),
            PutPayload::from(bytes.clone()),
            options,
        ));
        match put {
            Ok(result) => Ok(Conditional::Written(ObjectVersion::new(
                result.e_tag,
                result.version,
                &url,
            )?)),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => {
                // Refused, or a retry of a write that had succeeded.
                match self.get_versioned(name)? {
                    Some(found) if found.bytes == bytes => Ok(Conditional::Written(found.version)),
                    _ => Ok(Conditional::Refused),
                }
            }
            Err(e) => Err(ArchiveError::store(format!("writing {url}"), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e_tags_lose_their_quotes() {
        assert_eq!(
            unquote("\"d41d8cd98f00b204e9800998ecf8427e\""),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        assert_eq!(unquote("d41d8cd9"), "d41d8cd9");
        assert_eq!(unquote("W/\"x\""), "W/\"x\"");
        assert_eq!(unquote("\""), "\"");
        let v = ObjectVersion::new(Some("\"abc\"".into()), None, "s3://b/k").unwrap();
        assert_eq!(v.to_update().e_tag.as_deref(), Some("abc"));
        assert!(matches!(
            ObjectVersion::new(None, None, "s3://b/k"),
            Err(ArchiveError::MissingETag(url)) if url == "s3://b/k"
        ));
    }
}
