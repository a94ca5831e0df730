//! What the gateway knows of each runtime's traffic: its open requests and WebSockets (limited per
//! runtime) and when its last activity was written to the backend. Writes are throttled to one
//! per interval per runtime (on Kubernetes each is a patch of the record); a runtime with a
//! request or WebSocket open counts as active at every interval, so a long request or a quiet
//! event stream never lets it look idle.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::runtime::Backend;

#[derive(Debug, Default)]
struct Seen {
    open: usize,
    written: Option<Instant>,
}

/// Whether a runtime's activity should be written now.
pub fn due(written: Option<Instant>, now: Instant, interval: Duration) -> bool {
    written.is_none_or(|w| now.duration_since(w) >= interval)
}

pub struct Activity {
    backend: Arc<dyn Backend>,
    interval: Duration,
    max_open: usize,
    seen: Mutex<HashMap<String, Seen>>,
}

/// Held while a request (to the end of its response body) or a WebSocket is open.
pub struct Open {
    activity: Arc<Activity>,
    runtime_id: String,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.activity.end(&self.runtime_id);
    }
}

impl Activity {
    pub fn new(backend: Arc<dyn Backend>, interval: Duration, max_open: usize) -> Arc<Activity> {
        Arc::new(Activity { backend, interval, max_open, seen: Mutex::default() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Seen>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request to `runtime_id` begins; `None` when the runtime already has its maximum of
    /// open requests.
    pub fn begin(self: &Arc<Self>, runtime_id: &str) -> Option<Open> {
        let write = {
            let mut seen = self.lock();
            let entry = seen.entry(runtime_id.to_string()).or_default();
            if entry.open >= self.max_open {
                return None;
            }
            entry.open += 1;
            self.claim_write(entry)
        };
        if write {
            self.write(runtime_id);
        }
        Some(Open { activity: self.clone(), runtime_id: runtime_id.to_string() })
    }

    fn end(&self, runtime_id: &str) {
        let write = {
            let mut seen = self.lock();
            let Some(entry) = seen.get_mut(runtime_id) else { return };
            entry.open = entry.open.saturating_sub(1);
            self.claim_write(entry)
        };
        if write {
            self.write(runtime_id);
        }
    }

    fn claim_write(&self, entry: &mut Seen) -> bool {
        let now = Instant::now();
        let write = due(entry.written, now, self.interval);
        if write {
            entry.written = Some(now);
        }
        write
    }

    fn write(&self, runtime_id: &str) {
        let backend = self.backend.clone();
        let id = runtime_id.to_string();
        tokio::spawn(async move {
            if let Err(e) = backend.record_activity(&id, jiff::Timestamp::now()).await {
                tracing::debug!(runtime_id = %id, error = %e, "could not record sandbox activity");
            }
        });
    }

    /// Open requests to a runtime (for tests and the limit).
    pub fn open(&self, runtime_id: &str) -> usize {
        self.lock().get(runtime_id).map_or(0, |s| s.open)
    }

    /// Every interval: runtimes with something open are active now; idle entries are forgotten.
    pub async fn run(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let tick = (self.interval / 2).max(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
            let due_now: Vec<String> = {
                let mut seen = self.lock();
                let now = Instant::now();
                seen.retain(|_, s| s.open > 0 || !due(s.written, now, self.interval));
                seen.iter_mut()
                    .filter(|(_, s)| s.open > 0)
                    .filter_map(|(id, s)| self.claim_write(s).then(|| id.clone()))
                    .collect()
            };
            for id in due_now {
                self.write(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_due_once_per_interval() {
        let now = Instant::now();
        let minute = Duration::from_secs(60);
        assert!(due(None, now, minute));
        assert!(!due(Some(now), now + Duration::from_secs(59), minute));
        assert!(due(Some(now), now + minute, minute));
    }
}
