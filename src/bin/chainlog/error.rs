//! The tool's errors and their exit codes.

use std::fmt;
use std::io;

/// Exit code: an integrity problem was found.
pub const EXIT_INTEGRITY: u8 = 1;
/// Exit code: bad usage, bad input or an I/O error.
pub const EXIT_USAGE: u8 = 2;

/// Everything that ends a command early.
#[derive(Debug)]
pub enum CliError {
    /// The command line is incomplete or inconsistent.
    Usage(String),
    /// An input line was rejected.
    Input {
        /// 1-based line number in the input.
        line: u64,
        /// Why it was rejected.
        reason: String,
        /// What happened to the records before it.
        appended: String,
    },
    /// The library refused.
    Log(chainlog::Error),
    /// The library refused after some records were appended.
    AfterAppending {
        /// The error.
        error: chainlog::Error,
        /// What was appended before it.
        appended: String,
    },
    /// An I/O error outside the library.
    Io {
        /// What was being done.
        doing: String,
        /// The error.
        source: io::Error,
    },
    /// Integrity problems were found (a message has already been printed,
    /// or this is it).
    Integrity(String),
    /// stdout was closed by the reader (`chainlog cat | head`): stop quietly.
    BrokenPipe,
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Log(e) | CliError::AfterAppending { error: e, .. } if e.is_corruption() => {
                EXIT_INTEGRITY
            }
            CliError::Integrity(_) | CliError::Log(chainlog::Error::Unverified { .. }) => {
                EXIT_INTEGRITY
            }
            _ => EXIT_USAGE,
        }
    }

    /// An I/O error while doing `doing`.
    pub fn io(doing: impl Into<String>, source: io::Error) -> Self {
        CliError::Io {
            doing: doing.into(),
            source,
        }
    }

    /// A failed write to stdout: a closed pipe ends the command quietly.
    pub fn output(source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::io("writing to stdout", source)
        }
    }
}

impl From<chainlog::Error> for CliError {
    fn from(e: chainlog::Error) -> Self {
        CliError::Log(e)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(msg) | CliError::Integrity(msg) => f.write_str(msg),
            CliError::Input {
                line,
                reason,
                appended,
            } => write!(f, "line {line}: {reason}; {appended}"),
            CliError::Log(e) => write_log_error(f, e),
            CliError::AfterAppending { error, appended } => {
                write_log_error(f, error)?;
                write!(f, "; {appended}")
            }
            CliError::Io { doing, source } => write!(f, "{doing}: {source}"),
            CliError::BrokenPipe => f.write_str("stdout was closed"),
        }
    }
}

fn write_log_error(f: &mut fmt::Formatter<'_>, e: &chainlog::Error) -> fmt::Result {
    write!(f, "{e}")?;
    match e {
        chainlog::Error::NotFound(_) => f.write_str(" (create one with `chainlog init`)"),
        chainlog::Error::Corrupted { .. }
        | chainlog::Error::ChecksumMismatch { .. }
        | chainlog::Error::Unverified { .. } => {
            f.write_str(" (run `chainlog verify` for a full report)")
        }
        _ => Ok(()),
    }
}
