//! Comparing a stored index with the one rebuilt from its segment, part by
//! part as a reader would trust it (the verifier's `index_mismatch`).

use super::{
    DirectoryEntry, Field, Section, HEADER_FIELDS_BYTES, SECTION_COUNT, SECTION_ENTRY_BYTES,
};
use crate::le::u32_at;

/// How a stored index file compares with the index rebuilt from its segment
/// (see [`compare`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum IndexComparison {
    /// Every part a reader trusts is as rebuilt.
    Same,
    /// Only parts a reader rejects by their CRC differ: torn, never trusted.
    Torn,
    /// A part a reader trusts differs: which part, and its byte offset.
    Differs {
        /// The header, a section, or one posting list.
        part: String,
        /// Where that part starts in the stored file.
        offset: u64,
    },
}

const SECTION_NAMES: [&str; SECTION_COUNT] = [
    "offsets",
    "first seqs",
    "times",
    "actor directory",
    "event directory",
    "node directory",
    "postings",
];

/// The (offset, length, CRC) of section `i` in a file's table, if it lies in the file.
fn section_of(file: &[u8], i: usize) -> Option<(usize, &[u8], u32)> {
    let entry = HEADER_FIELDS_BYTES + i * SECTION_ENTRY_BYTES;
    let table = file.get(entry..entry + 12)?;
    let at = u32_at(table, 0) as usize;
    let len = u32_at(table, 4) as usize;
    Some((at, file.get(at..at.checked_add(len)?)?, u32_at(table, 8)))
}

/// Compares a stored index (whose header passed its CRC and describes the
/// segment) with `expected`, the index rebuilt from the segment with the
/// stored `block_bytes`. Only what a reader would trust counts: a section
/// read whole is trusted when its CRC matches, a posting list when its own
/// CRC in a trusted directory matches. The encoding is deterministic, so a
/// truthful index is byte-equal to the rebuilt one in every trusted part.
pub(crate) fn compare(stored: &[u8], expected: &[u8]) -> IndexComparison {
    let differs = |part: &str, offset: usize| IndexComparison::Differs {
        part: part.to_string(),
        offset: offset as u64,
    };
    // The header fields after magic, version and reserved bytes.
    let fields = 12..HEADER_FIELDS_BYTES;
    if stored.get(fields.clone()) != expected.get(fields) {
        return differs("header", 12);
    }
    let mut torn = false;
    let mut trusted_dirs = [false; 3];
    for (i, name) in SECTION_NAMES
        .iter()
        .enumerate()
        .take(Section::Postings as usize)
    {
        let (Some((at, got, crc)), Some((_, want, _))) =
            (section_of(stored, i), section_of(expected, i))
        else {
            torn = true; // a reader rejects a section outside the file
            continue;
        };
        let trusted = crc32c::crc32c(got) == crc;
        if !trusted {
            torn = true;
        } else if got != want {
            return differs(name, at);
        }
        if (Section::ActorDirectory as usize..=Section::NodeDirectory as usize).contains(&i) {
            trusted_dirs[i - Section::ActorDirectory as usize] = trusted;
        }
    }
    let postings = Section::Postings as usize;
    let (Some((stored_at, got, _)), Some((_, want, _))) =
        (section_of(stored, postings), section_of(expected, postings))
    else {
        return IndexComparison::Torn;
    };
    if got == want {
        return if torn {
            IndexComparison::Torn
        } else {
            IndexComparison::Same
        };
    }
    // The postings section's own CRC is never read: each list is trusted by
    // the CRC its (trusted, hence as rebuilt) directory entry gives.
    for field in Field::ALL {
        if !trusted_dirs[field.slot()] {
            continue;
        }
        let Some((_, dir, _)) = section_of(expected, field.section() as usize) else {
            continue;
        };
        let mut pos = 0;
        while let Some(entry) = DirectoryEntry::decode(dir, &mut pos) {
            let range = entry.at as usize..(entry.at as usize + entry.len as usize);
            let stored_list = got.get(range.clone());
            if stored_list == want.get(range.clone()) {
                continue;
            }
            match stored_list {
                Some(list) if crc32c::crc32c(list) == entry.crc => {
                    let part = format!("posting list of {} {:?}", field.name(), entry.value);
                    return differs(&part, stored_at + range.start);
                }
                _ => torn = true,
            }
        }
    }
    if torn {
        IndexComparison::Torn
    } else {
        IndexComparison::Same
    }
}
