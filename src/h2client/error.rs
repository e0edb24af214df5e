//! Set-up faults of the HTTP/2 client. None goes away by retrying: the configuration has to
//! change. (Faults of a connection or a request at run time are not errors here but answers:
//! the pool retries connects with backoff, and a request ends in `StreamError`.)

use std::fmt;

#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The endpoint is not `https://host[:port]`, or its host is no TLS server name.
    InvalidEndpoint { reason: String },
    /// The extra trusted roots held no usable certificate.
    InvalidCaPem { reason: String },
    /// rustls refused the client configuration.
    TlsSetup { reason: String },
}

impl Error {
    /// Whether trying again unchanged could succeed: never for configuration faults.
    pub fn retry_can_help(&self) -> bool {
        false
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::InvalidEndpoint { reason } => write!(f, "endpoint: {reason}"),
            Error::InvalidCaPem { reason } => write!(f, "ca_pem: {reason}"),
            Error::TlsSetup { reason } => write!(f, "TLS set-up: {reason}"),
        }
    }
}

impl std::error::Error for Error {}
