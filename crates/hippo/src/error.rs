//! The library's one error type. Backend errors (SQLite, HTTP, candle) are
//! converted here so they never leak into public signatures; each error has a
//! [`ErrorKind`] that the edges (HTTP, CLI, Python) map exhaustively.
//!
//! SQLite's disk-full, I/O, read-only and busy codes become
//! `ErrorKind::Unavailable` (HTTP 503): the transaction was rolled back and
//! the in-memory indexes change only after a commit, so a refused write
//! leaves no trace (tested with a file-size limit that makes real writes fail
//! in the kernel: `crates/hippo-cli/tests/it/faults.rs`).

use std::fmt;

/// What went wrong, in terms a caller can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The request is malformed or violates a limit; nothing was changed.
    InvalidInput,
    /// A text or metadata exceeds its size limit; nothing was changed.
    TooLarge,
    /// The addressed memory (or other object) does not exist in the caller's scope.
    NotFound,
    /// The request conflicts with the current state (e.g. a vector of another model).
    Conflict,
    /// A dependency (embedding endpoint, disk) is unavailable; retrying may help.
    Unavailable,
    /// A bug or corruption; details are logged, not returned.
    Internal,
}

/// The message of [`Error::concurrent_change`].
const CONCURRENT_CHANGE: &str =
    "the memory was changed by another request at the same time; try again";

/// The message of [`Error::request_committed_elsewhere`].
const COMMITTED_ELSEWHERE: &str =
    "a request with this Idempotency-Key was committed by another attempt";

/// A boxed cause.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The library error: a kind plus a message safe to show to clients.
#[derive(Debug, thiserror::Error)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<BoxError>,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl Error {
    /// A new error of `kind` with a client-safe `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }
    /// Invalid input (a 400-class error).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }
    /// Over a size limit (a 413-class error).
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::TooLarge, message)
    }
    /// Not found in the caller's scope.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    /// Internal error wrapping a cause that is logged but not shown to clients.
    pub fn internal(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error {
            kind: ErrorKind::Internal,
            message: message.into(),
            source: Some(source.into()),
        }
    }
    /// Unavailable dependency wrapping a cause.
    pub fn unavailable(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error {
            kind: ErrorKind::Unavailable,
            message: message.into(),
            source: Some(source.into()),
        }
    }
    /// The memory changed between the read a change was computed from and
    /// its write (see `store::Update::expected`); reading again and
    /// retrying is right.
    pub fn concurrent_change() -> Self {
        Error::new(ErrorKind::Conflict, CONCURRENT_CHANGE)
    }

    /// Whether this is [`Error::concurrent_change`].
    pub fn is_concurrent_change(&self) -> bool {
        self.kind == ErrorKind::Conflict && self.message == CONCURRENT_CHANGE
    }

    /// A write of an idempotent request was refused because another attempt
    /// with the same key committed first (see `audit::RequestMark`).
    pub fn request_committed_elsewhere() -> Self {
        Error::new(ErrorKind::Conflict, COMMITTED_ELSEWHERE)
    }

    /// Whether this is [`Error::request_committed_elsewhere`].
    pub fn is_request_committed_elsewhere(&self) -> bool {
        self.kind == ErrorKind::Conflict && self.message == COMMITTED_ELSEWHERE
    }

    /// The classification of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// The message, safe to return to clients.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// The message followed by the chain of causes, for logs.
    pub fn detail(&self) -> String {
        let mut out = self.message.clone();
        let mut cur: Option<&(dyn std::error::Error + 'static)> =
            self.source.as_deref().map(|e| e as _);
        while let Some(e) = cur {
            out.push_str(": ");
            out.push_str(&e.to_string());
            cur = e.source();
        }
        out
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as C;
        // The disk refusing (full, failing, read-only) or the file busy past
        // its timeout: the write did not happen and a retry may succeed.
        match e.sqlite_error_code() {
            Some(
                C::DiskFull
                | C::SystemIoFailure
                | C::ReadOnly
                | C::CannotOpen
                | C::DatabaseBusy
                | C::DatabaseLocked,
            ) => Error::unavailable(
                "storage unavailable (disk full, I/O error or busy): nothing was changed; retry later",
                e,
            ),
            _ => Error::internal("storage error", e),
        }
    }
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::internal("embedding model error", e)
    }
}

/// Result alias used throughout the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
