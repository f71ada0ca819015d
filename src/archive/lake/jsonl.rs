//! The `.jsonl.gz` objects: the export's JSON Lines, gzip-compressed.

use std::io::{BufRead, BufReader, Write};

use flate2::bufread::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use super::rows::{LakeRow, RowError};

/// Gzips `lines` (one row per line, each ending in `\n`). The gzip header
/// carries no file name and no time, so the same rows give the same bytes.
pub fn gzip_lines(lines: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::with_capacity(lines.len() / 6), Compression::default());
    gz.write_all(lines)?;
    gz.finish()
}

/// The rows of a `.jsonl.gz` object, and the SHA-256 of each line as
/// stored (without its `\n`), in object order.
pub fn read_jsonl_gz(bytes: &[u8]) -> Result<Vec<(LakeRow, [u8; 32])>, RowError> {
    use sha2::{Digest as _, Sha256};
    let mut reader = BufReader::new(MultiGzDecoder::new(bytes));
    let mut rows = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line)? == 0 {
            return Ok(rows);
        }
        let index = rows.len() as u64;
        let Some(text) = line.strip_suffix(b"\n") else {
            return Err(RowError::Field {
                row: index,
                column: "line",
                reason: "the last line does not end with a newline (cut short?)".into(),
            });
        };
        let row = LakeRow::from_json_line(text, index)?;
        rows.push((row, Sha256::digest(text).into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_round_trip_and_corruption() {
        let line = br#"{"seq":1,"timestamp":"2026-03-09T00:00:00Z","event":"a.b","actor":"x","node":null,"resource":null,"ip":null,"outcome":"success","context":{},"hash":"0202020202020202020202020202020202020202020202020202020202020202","received_at":null,"origin":null,"appender":null}"#;
        let mut lines = line.to_vec();
        lines.push(b'\n');
        lines.extend_from_slice(&lines.clone());
        let gz = gzip_lines(&lines).unwrap();
        assert_eq!(gz, gzip_lines(&lines).unwrap(), "deterministic");
        let rows = read_jsonl_gz(&gz).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0.seq, 1);
        // A flipped byte fails gzip's CRC-32 or the JSON; a cut stream fails.
        let mut flipped = gz.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x40;
        assert!(read_jsonl_gz(&flipped).is_err());
        assert!(read_jsonl_gz(&gz[..gz.len() - 9]).is_err());
    }
}
