//! Connections kept per replica and reused across passes, so a converged operator does not log in
//! to SQL Server again on every pass. A connection that failed is dropped, never returned; the
//! next checkout logs in afresh.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Idle connections by key (replica, database scope, credentials).
pub struct Pool<K, C> {
    idle: Mutex<HashMap<K, Vec<C>>>,
    logins: AtomicU64,
    /// Idle connections kept per key; more are closed on return.
    max_idle: usize,
}

impl<K, C> Default for Pool<K, C> {
    fn default() -> Self {
        Self { idle: Mutex::new(HashMap::new()), logins: AtomicU64::new(0), max_idle: 2 }
    }
}

impl<K, C> std::fmt::Debug for Pool<K, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("logins", &self.logins.load(Ordering::Relaxed)).finish_non_exhaustive()
    }
}

impl<K: Eq + Hash + Clone, C> Pool<K, C> {
    /// An idle connection for `key`, or a new one from `connect` (a login).
    pub async fn checkout<E, F, Fut>(&self, key: &K, connect: F) -> Result<C, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<C, E>>,
    {
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).get_mut(key).and_then(Vec::pop);
        if let Some(connection) = idle {
            return Ok(connection);
        }
        self.logins.fetch_add(1, Ordering::Relaxed);
        connect().await
    }

    /// Give a connection that worked back for the next checkout.
    pub fn checkin(&self, key: K, connection: C) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let connections = idle.entry(key).or_default();
        if connections.len() < self.max_idle {
            connections.push(connection);
        }
    }

    /// Logins (new connections) so far.
    pub fn logins(&self) -> u64 {
        self.logins.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_are_reused_and_failed_ones_replaced() {
        let pool: Pool<&str, u32> = Pool::default();
        let mut next = 0;
        let mut connect = || {
            next += 1;
            let id = next;
            async move { Ok::<_, ()>(id) }
        };
        let first = pool.checkout(&"sql1", &mut connect).await.unwrap();
        pool.checkin("sql1", first);
        // A second pass reuses the connection: no new login.
        let again = pool.checkout(&"sql1", &mut connect).await.unwrap();
        assert_eq!((again, pool.logins()), (1, 1));
        // It failed and was not returned (a failed query drops it): the next checkout logs in.
        let _failed = again;
        let fresh = pool.checkout(&"sql1", &mut connect).await.unwrap();
        assert_eq!((fresh, pool.logins()), (2, 2));
        // Another replica has its own connections.
        let other = pool.checkout(&"sql2", &mut connect).await.unwrap();
        assert_eq!((other, pool.logins()), (3, 3));
    }
}
