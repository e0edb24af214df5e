//! What managing keys can fail with.

use std::fmt;
use std::io;

#[derive(Debug)]
#[non_exhaustive]
pub enum KeyError {
    /// A key with that name exists.
    Exists(String),
    /// No stored key has that name.
    NotFound(String),
    /// The key comes from the configuration (`[api] keys`, `CLARION_API_KEYS`): change it there.
    FromConfig(String),
    /// A field of the request is invalid.
    Invalid {
        field: &'static str,
        message: String,
    },
    /// `MAX_KEYS` are stored.
    TooMany,
    /// The keys' file does not parse.
    Corrupt(String),
    /// Reading or writing the file failed (retryable: the disk, a full file system).
    Io(io::Error),
    /// The keys' thread is gone or busy (the server is stopping): retryable.
    Unavailable,
}

impl KeyError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, KeyError::Io(_) | KeyError::Unavailable)
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Exists(n) => write!(f, "a key named `{n}` exists"),
            KeyError::NotFound(n) => write!(f, "no stored key is named `{n}`"),
            KeyError::FromConfig(n) => write!(
                f,
                "`{n}` comes from [api] keys or CLARION_API_KEYS: remove it there"
            ),
            KeyError::Invalid { field, message } => write!(f, "{field}: {message}"),
            KeyError::TooMany => write!(
                f,
                "{} keys are stored: revoke one first",
                super::store::MAX_KEYS
            ),
            KeyError::Corrupt(why) => write!(f, "the keys' file does not parse: {why}"),
            KeyError::Io(e) => write!(f, "reading or writing the keys' file: {e}"),
            KeyError::Unavailable => write!(f, "the server is stopping: try again"),
        }
    }
}

impl std::error::Error for KeyError {}
