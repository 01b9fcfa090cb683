//! A pooled connection that goes back to the pool only when its work finished cleanly, and
//! the mapping of driver errors to [`StoreError`].

use std::ops::{Deref, DerefMut};

use deadpool_postgres::{Object, Pool, PoolError, TimeoutType};

use crate::store::StoreError;

/// A connection checked out of the pool. Unless [`Conn::done`] is called (an error, a timeout
/// that dropped the work mid-statement, a panic), it is closed rather than reused: its session
/// may be mid-transaction, waiting for a lock or broken.
pub(super) struct Conn {
    object: Option<Object>,
    clean: bool,
}

impl Conn {
    /// Checks a connection out, waiting at most the pool's wait timeout.
    pub(super) async fn get(pool: &Pool) -> Result<Self, StoreError> {
        let object = pool.get().await.map_err(pool_error)?;
        Ok(Self {
            object: Some(object),
            clean: false,
        })
    }

    /// The work finished: the connection may serve again.
    pub(super) fn done(mut self) {
        self.clean = true;
    }
}

impl Deref for Conn {
    type Target = Object;
    fn deref(&self) -> &Object {
        self.object.as_ref().expect("present until drop")
    }
}

impl DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut Object {
        self.object.as_mut().expect("present until drop")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(object) = self.object.take() {
            if !self.clean {
                // Detached from the pool and dropped: the connection closes, and the server
                // ends its session (rolling back, releasing its advisory locks).
                drop(Object::take(object));
            }
        }
    }
}

/// A driver error as a store error: the server being unreachable, shutting down, out of
/// connections or too slow is `Unavailable` (retry later); anything else is `Backend`.
pub(super) fn sql_error(err: tokio_postgres::Error) -> StoreError {
    let message = match std::error::Error::source(&err) {
        Some(cause) => format!("{err}: {cause}"),
        None => err.to_string(),
    };
    let unavailable = match err.code() {
        Some(state) => {
            let code = state.code();
            // 08: connection exception; 53: insufficient resources (too many connections);
            // 57P01-03: shutting down or starting up; 57014: statement timeout; 40001/40P01:
            // serialization failure or deadlock, which a retry resolves.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P")
                || code == "57014"
                || code == "40001"
                || code == "40P01"
        }
        // No SQLSTATE: the socket failed, the connection is closed, or connecting failed
        // (a TLS handshake refused included: the server cannot be used until it is fixed).
        None => {
            err.is_closed()
                || message.starts_with("error connecting")
                || message.starts_with("error communicating")
                || message.starts_with("error performing TLS handshake")
                || message.starts_with("timeout")
        }
    };
    if unavailable {
        StoreError::Unavailable(format!("PostgreSQL: {message}"))
    } else {
        StoreError::Backend(format!("PostgreSQL: {message}"))
    }
}

fn pool_error(err: PoolError) -> StoreError {
    match err {
        PoolError::Backend(err) => sql_error(err),
        PoolError::Timeout(TimeoutType::Wait) => {
            StoreError::Unavailable("no PostgreSQL connection free within the timeout".into())
        }
        PoolError::Timeout(_) => {
            StoreError::Unavailable("PostgreSQL did not accept a connection in time".into())
        }
        PoolError::Closed => StoreError::Unavailable("the connection pool is closed".into()),
        other => StoreError::Backend(format!("connection pool: {other}")),
    }
}
