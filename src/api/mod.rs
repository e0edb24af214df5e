//! The HTTP API's resources: one file per resource for parsing and validation, plus the error
//! shape and the status view. Routing and transport live in `crate::http`.

pub mod batch;
pub mod dead_letters;
pub mod error;
pub mod fields;
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz;
pub mod keys;
pub mod notifications;
pub mod status;
pub mod users;
pub mod validate;
