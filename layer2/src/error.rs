//! sqlx failures, converted to `StoreError` at the crate edge: "unreachable" kinds
//! become `Unavailable` so the relay can say so plainly.

use eventstore::StoreError;

pub(crate) fn db(e: sqlx::Error) -> StoreError {
    let unreachable = match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            // connection exceptions, admin/crash shutdown, cannot connect now, too many
            // connections
            c.starts_with("08") || c.starts_with("57P") || c == "53300"
        }),
        _ => false,
    };
    if unreachable {
        StoreError::Unavailable(Box::new(e))
    } else {
        StoreError::Backend(Box::new(e))
    }
}
