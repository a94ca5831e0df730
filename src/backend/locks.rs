//! Per-key async locks (one per session, or per runtime), shared by both backends: operations on
//! one key are serialised, operations on different keys run side by side, and the map holds only
//! the locks someone is using.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A lock per key, created on first use and dropped once nobody holds or waits for it.
#[derive(Debug, Default)]
pub struct KeyedLocks {
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl KeyedLocks {
    /// Waits for the lock of `key`; the guard releases it when dropped.
    pub async fn lock(&self, key: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            // A std mutex, never held across an await.
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            locks.entry(key.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Keys with a lock in use (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.locks.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn one_key_is_serialised_and_other_keys_are_not() {
        let locks = Arc::new(KeyedLocks::default());
        let held = locks.lock("a").await;
        let waiter = {
            let locks = locks.clone();
            tokio::spawn(async move { drop(locks.lock("a").await) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "a second holder of one key must wait");
        let other = tokio::time::timeout(Duration::from_secs(1), locks.lock("b")).await;
        assert!(other.is_ok(), "another key must not wait");
        drop(other);
        drop(held);
        tokio::time::timeout(Duration::from_secs(1), waiter).await.unwrap().unwrap();
        // Unused locks are dropped at the next use, so the map does not grow with every key.
        drop(locks.lock("c").await);
        assert_eq!(locks.len(), 1);
    }
}
