//! Locking shared by the adapters and the core.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, going on past a poisoned lock. Every mutex in pxed guards data
/// that each change leaves consistent (a map insert, a field store), so a
/// panic while one request held it must not stop every later request.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
