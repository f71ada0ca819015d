//! `chainlog keygen` and `chainlog checkpoint`: Ed25519 signing keys and
//! signed checkpoints, and loading keys and checkpoints for `verify`.
//!
//! Key files hold one line in the formats of Go's
//! `golang.org/x/mod/sumdb/note`: the public (verifier) key
//! `<name>+<key id>+<base64>`, the secret key `PRIVATE+KEY+<name>+<key id>+<base64>`.
//! A secret key is created with mode 0600 and refused when group or others
//! may read or write it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use chainlog::hash::checkpoint::{Checkpoint, CheckpointError, NoteSigner, NoteVerifier};
use chainlog::storage::{write_file_atomic, FsStorage};
use chainlog::{Log, Options};
use clap::Args;

use crate::error::CliError;
use crate::Global;

/// Key names when neither `--name` nor a usable host name is there.
const DEFAULT_KEY_NAME: &str = "chainlog";
/// Largest key or checkpoint file read: both are a few hundred bytes.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// Where `keygen` and `witness keygen` write a key pair.
#[derive(Debug, Args)]
pub struct KeyFiles {
    /// Where to write the secret (signing) key; created with mode 0600.
    #[arg(long, value_name = "FILE")]
    pub secret_key: PathBuf,
    /// Where to write the public (verifier) key.
    #[arg(long, value_name = "FILE")]
    pub public_key: PathBuf,
}

/// `chainlog keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    #[command(flatten)]
    files: KeyFiles,
    /// The key's name, part of every signature: no spaces or '+'.
    /// Default: the host name (or `chainlog`).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
}

/// `chainlog checkpoint`.
#[derive(Debug, Args)]
pub struct CheckpointArgs {
    /// The secret key to sign with (from `chainlog keygen`; mode 0600).
    #[arg(long, value_name = "FILE")]
    secret_key: PathBuf,
    /// Write the signed checkpoint to FILE (atomically) instead of stdout.
    /// Keep it outside the log's directory.
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Origin prefix: the checkpoint's origin line is `<PREFIX>/<log id>`.
    #[arg(long, value_name = "PREFIX", default_value = "chainlog")]
    origin: String,
    #[cfg(feature = "server")]
    #[command(flatten)]
    witness: crate::witness::CosignArgs,
}

/// The host name, when it is a valid key name.
fn host_name() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|path| fs::read_to_string(path).ok())
        .map(|name| name.trim().to_string())
        .find(|name| NoteSigner::from_seed(name, [0; 32]).is_ok())
}

/// Creates `path` with `mode`, refusing to replace an existing file, writes
/// `text` and syncs it.
pub(crate) fn write_new(path: &Path, mode: u32, text: &str, what: &str) -> Result<(), CliError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => already_exists(path),
            _ => CliError::io(format!("creating {what} {}", path.display()), e),
        })?;
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        let _ = fs::remove_file(path);
        return Err(CliError::io(
            format!("writing {what} {}", path.display()),
            e,
        ));
    }
    sync_parent(path)
}

/// Makes a new file's directory entry durable.
fn sync_parent(path: &Path) -> Result<(), CliError> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| CliError::io(format!("syncing directory {}", parent.display()), e))
}

fn already_exists(path: &Path) -> CliError {
    CliError::Usage(format!(
        "{} already exists; keygen never overwrites a key (remove it or choose another path)",
        path.display()
    ))
}

/// Runs `chainlog keygen`.
pub fn keygen(global: &Global, args: KeygenArgs) -> Result<ExitCode, CliError> {
    let name = match args.name {
        Some(name) => name,
        None => host_name().unwrap_or_else(|| DEFAULT_KEY_NAME.to_string()),
    };
    check_new_key_paths(&args.files)?;
    let signer = NoteSigner::from_seed(&name, random_seed()?)
        .map_err(|e| CliError::Usage(format!("key name {name:?}: {e}")))?;
    write_key_pair(
        global,
        &args.files,
        &signer.to_secret_text(),
        &signer.verifier().to_text(),
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Refuses key paths that are the same file or exist already.
pub(crate) fn check_new_key_paths(files: &KeyFiles) -> Result<(), CliError> {
    let (secret, public) = (files.secret_key.as_path(), files.public_key.as_path());
    if secret == public {
        return Err(CliError::Usage(
            "--secret-key and --public-key must be different files".into(),
        ));
    }
    for path in [secret, public] {
        if fs::symlink_metadata(path).is_ok() {
            return Err(already_exists(path));
        }
    }
    Ok(())
}

/// 32 bytes from the system's random number generator: a key seed.
pub(crate) fn random_seed() -> Result<[u8; 32], CliError> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed)
        .map_err(|e| CliError::io("reading the system's random number generator", e.into()))?;
    Ok(seed)
}

/// Writes a new key pair: the secret key (mode 0600) and the public key
/// (0644), and prints where (unless quiet) and the public key.
pub(crate) fn write_key_pair(
    global: &Global,
    files: &KeyFiles,
    secret_text: &str,
    public_text: &str,
) -> Result<(), CliError> {
    let secret = (files.secret_key.as_path(), secret_text);
    let public = (files.public_key.as_path(), public_text);
    write_new(secret.0, 0o600, &format!("{}\n", secret.1), "secret key")?;
    if let Err(e) = write_new(public.0, 0o644, &format!("{}\n", public.1), "public key") {
        // Leave no half-made pair behind: a rerun then starts clean.
        let _ = fs::remove_file(secret.0);
        return Err(e);
    }
    if !global.quiet {
        outln!(
            "secret key: {} (mode 0600; keep it private and outside the log's directory)",
            secret.0.display()
        )?;
        outln!("public key: {}", public.0.display())?;
        outln!("{}", public.1)?;
    }
    Ok(())
}

/// Reads a small text file (a key or a checkpoint).
pub(crate) fn read_small_text(path: &Path, what: &str) -> Result<String, CliError> {
    let io_error = |e| CliError::io(format!("reading {what} {}", path.display()), e);
    let file = File::open(path).map_err(io_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_KEY_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(CliError::Usage(format!(
            "{what} {} is larger than {MAX_KEY_FILE_BYTES} bytes: not a {what}",
            path.display()
        )));
    }
    String::from_utf8(bytes).map_err(|_| {
        CliError::Usage(format!(
            "{what} {} is not UTF-8 text: not a {what}",
            path.display()
        ))
    })
}

/// Loads a secret key, refusing one that group or others may read or write.
pub fn load_signer(path: &Path) -> Result<NoteSigner, CliError> {
    let text = read_secret_text(path)?;
    NoteSigner::parse(&text).map_err(|e| {
        let hint = if NoteVerifier::parse(&text).is_ok() {
            " (this is a public key; pass the secret key, which starts with PRIVATE+KEY+)"
        } else {
            ""
        };
        CliError::Usage(format!("secret key {}: {e}{hint}", path.display()))
    })
}

/// Reads a secret key file, refusing one that group or others may read or write.
pub(crate) fn read_secret_text(path: &Path) -> Result<String, CliError> {
    let metadata = fs::metadata(path)
        .map_err(|e| CliError::io(format!("reading secret key {}", path.display()), e))?;
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CliError::Usage(format!(
            "secret key {} has mode {mode:04o}: group or others may read or write it; \
             restrict it with `chmod 600 {}` (and consider the key exposed if others could read it)",
            path.display(),
            path.display()
        )));
    }
    read_small_text(path, "secret key")
}

/// Loads a public (verifier) key.
pub fn load_verifier(path: &Path) -> Result<NoteVerifier, CliError> {
    let text = read_small_text(path, "public key")?;
    NoteVerifier::parse(&text).map_err(|e| {
        let hint = if text.starts_with("PRIVATE+KEY+") {
            " (this is a secret key; pass the public key from `chainlog keygen --public-key`)"
        } else {
            ""
        };
        CliError::Usage(format!("public key {}: {e}{hint}", path.display()))
    })
}

/// The key names on a signed note's signature lines, for messages.
fn signers_of(note: &str) -> Vec<String> {
    let Some((_, sigs)) = note.rsplit_once("\n\n") else {
        return Vec::new();
    };
    sigs.lines()
        .filter_map(|line| line.strip_prefix("\u{2014} "))
        .filter_map(|rest| rest.split(' ').next())
        .map(str::to_string)
        .collect()
}

/// Reads a signed checkpoint and checks its signature. A note that is not a
/// checkpoint is bad input (exit 2); a checkpoint that `verifier` did not
/// sign, or whose signature fails, is an integrity failure (exit 1).
pub fn open_checkpoint(path: &Path, verifier: &NoteVerifier) -> Result<Checkpoint, CliError> {
    let note = read_small_text(path, "checkpoint")?;
    Checkpoint::open(&note, verifier).map_err(|e| {
        let shown = path.display();
        match e {
            CheckpointError::NotSignedByKey { .. } => {
                let signers = signers_of(&note);
                let by = if signers.is_empty() {
                    String::new()
                } else {
                    format!(" (it is signed by {})", signers.join(", "))
                };
                CliError::Integrity(format!(
                    "checkpoint {shown}: {e}{by}; it cannot vouch for this log"
                ))
            }
            CheckpointError::BadSignature(_) => CliError::Integrity(format!(
                "checkpoint {shown}: {e}; it cannot vouch for this log"
            )),
            _ => CliError::Usage(format!("checkpoint {shown}: {e}")),
        }
    })
}

/// Checks an origin prefix: C2SP origins are schema-less URLs without
/// spaces or '+'.
fn check_origin_prefix(prefix: &str) -> Result<(), CliError> {
    if prefix.is_empty()
        || prefix
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '+')
    {
        return Err(CliError::Usage(format!(
            "--origin {prefix:?}: an origin prefix is non-empty, without spaces, control characters or '+' (e.g. audit.example.com/chainlog)"
        )));
    }
    Ok(())
}

/// Whether `path` would land inside the log directory `dir`.
fn inside_log_dir(path: &Path, dir: &Path) -> bool {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match (fs::canonicalize(parent), fs::canonicalize(dir)) {
        (Ok(parent), Ok(dir)) => parent.starts_with(dir),
        _ => false,
    }
}

/// The size of the checkpoint in `path` (the previous one written there)
/// when `signer` signed it for the same log and it is not larger: the size
/// the witnesses most likely cosigned last. 0 otherwise.
#[cfg(feature = "server")]
fn previous_size(path: &Path, signer: &NoteSigner, new: &Checkpoint) -> u64 {
    let Ok(text) = read_small_text(path, "checkpoint") else {
        return 0;
    };
    match Checkpoint::open(&text, &signer.verifier()) {
        Ok(old) if old.origin == new.origin && old.size <= new.size => old.size,
        _ => 0,
    }
}

/// Runs `chainlog checkpoint`.
pub fn checkpoint(global: &Global, args: CheckpointArgs) -> Result<ExitCode, CliError> {
    let dir = global.dir()?;
    check_origin_prefix(&args.origin)?;
    let signer = load_signer(&args.secret_key)?;
    let log = Log::open(dir, Options::for_reading())?;
    let checkpoint = log.checkpoint(&args.origin)?;
    let note = checkpoint
        .sign(&signer)
        .map_err(|e| CliError::Usage(format!("signing the checkpoint: {e}")))?;
    #[cfg(feature = "server")]
    let note = {
        let previous = args
            .output
            .as_deref()
            .map_or(0, |p| previous_size(p, &signer, &checkpoint));
        crate::witness::cosign(global, &log, &checkpoint, note, &args.witness, previous)?
    };
    let Some(output) = args.output else {
        let mut out = io::stdout().lock();
        out.write_all(note.as_bytes())
            .and_then(|()| out.flush())
            .map_err(CliError::output)?;
        return Ok(ExitCode::SUCCESS);
    };
    let Some(name) = output.file_name().and_then(|n| n.to_str()) else {
        return Err(CliError::Usage(format!(
            "--output {}: not a file name",
            output.display()
        )));
    };
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !global.quiet && inside_log_dir(&output, dir) {
        eprintln!(
            "chainlog: warning: {} is inside the log's directory; whoever can rewrite the log can then replace the checkpoint too, so keep or publish it elsewhere",
            output.display()
        );
    }
    write_file_atomic(&FsStorage, parent, name, note.as_bytes())?;
    if !global.quiet {
        let head = checkpoint
            .head
            .map_or_else(|| "-".to_string(), |h| h.to_string());
        outln!(
            "wrote checkpoint to {}: {} records, origin {}, head {head}, signed by {}+{:08x}",
            output.display(),
            checkpoint.size,
            checkpoint.origin,
            signer.name(),
            signer.id()
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
