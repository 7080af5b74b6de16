//! redb failures, converted to `StoreError` at the crate edge.

use eventstore::StoreError;

pub(crate) fn backend(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend(Box::new(e.into()))
}

pub(crate) fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}
