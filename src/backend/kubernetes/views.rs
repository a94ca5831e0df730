//! What `/list` and the runtime gauges read: one entry per runtime, its JSON serialised once and
//! rebuilt only when one of its objects (record, Secret, pod) changed. The watches mark a runtime
//! dirty under the same lock as they apply the event to the cache, so a read that refreshes the
//! dirty entries first never serves a view older than the cache it was built from; a listing is
//! then a walk over ready strings, oldest first, and the gauges are counters kept per status.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::runtime::{ListFilter, ListPage as Page, Runtime, Status};

/// One runtime as listed: its status (for filters and gauges) and its JSON, ready to send.
#[derive(Debug, Clone)]
pub struct Entry {
    pub status: Status,
    pub json: Arc<str>,
}

/// Listing order: oldest first, ties by runtime id (stable pagination, and V1's "oldest" logic).
type Order = (String, String);

#[derive(Debug, Default)]
pub struct State {
    dirty: HashSet<String>,
    rebuild_all: bool,
    order: HashMap<String, Order>,
    entries: BTreeMap<Order, Entry>,
    counts: HashMap<Status, usize>,
}

impl State {
    /// A runtime's objects changed: its entry is rebuilt before the next read.
    pub fn mark(&mut self, runtime_id: &str) {
        if !self.dirty.contains(runtime_id) {
            self.dirty.insert(runtime_id.to_string());
        }
    }

    /// A watch re-listed: any runtime may have changed while it was disconnected.
    pub fn mark_all(&mut self) {
        self.rebuild_all = true;
    }

    fn put(&mut self, runtime_id: &str, view: Option<Runtime>) {
        if let Some(key) = self.order.remove(runtime_id) {
            if let Some(old) = self.entries.remove(&key) {
                self.count(old.status, false);
            }
        }
        let Some(view) = view else { return };
        let json = match serde_json::to_string(&view) {
            Ok(json) => Arc::from(json),
            Err(e) => {
                tracing::error!(runtime_id, error = %e, "cannot serialise a runtime view");
                return;
            }
        };
        let key = (view.created_at, view.runtime_id);
        self.count(view.status, true);
        self.order.insert(runtime_id.to_string(), key.clone());
        self.entries.insert(key, Entry { status: view.status, json });
    }

    fn count(&mut self, status: Status, add: bool) {
        let n = self.counts.entry(status).or_default();
        *n = if add { *n + 1 } else { n.saturating_sub(1) };
    }
}

#[derive(Debug, Default)]
pub struct Views {
    state: Mutex<State>,
}

impl Views {
    /// The lock the watches hold while they apply an event to the cache and mark what it touched.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rebuilds the dirty entries (`build` reads the cache; `all_ids` lists every runtime id the
    /// records have, for a rebuild after a re-list), then reads the fresh state.
    pub fn read<T>(
        &self,
        build: impl Fn(&str) -> Option<Runtime>,
        all_ids: impl FnOnce() -> Vec<String>,
        read: impl FnOnce(&State) -> T,
    ) -> T {
        let mut state = self.lock();
        let mut dirty = std::mem::take(&mut state.dirty);
        if std::mem::take(&mut state.rebuild_all) {
            dirty.extend(state.order.keys().cloned());
            dirty.extend(all_ids());
        }
        for id in dirty {
            state.put(&id, build(&id));
        }
        read(&state)
    }
}

impl State {
    /// The page `offset..offset + limit` of the runtimes `filter` selects, oldest first.
    pub fn page(&self, filter: &ListFilter, offset: usize, limit: Option<usize>) -> Page {
        let mut page = Page::default();
        let limit = limit.unwrap_or(usize::MAX);
        for entry in self.entries.values().filter(|e| filter.matches(e.status)) {
            if page.total >= offset && page.runtimes.len() < limit {
                page.runtimes.push(entry.json.clone());
            }
            page.total += 1;
        }
        page
    }

    /// The JSON of one runtime, if it has a view.
    pub fn json_of(&self, runtime_id: &str) -> Option<Arc<str>> {
        let key = self.order.get(runtime_id)?;
        self.entries.get(key).map(|e| e.json.clone())
    }

    /// Runtimes per status, kept as entries change.
    pub fn count_of(&self, status: Status) -> usize {
        self.counts.get(&status).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::PodStatus;

    fn view(id: &str, created_at: &str, status: Status) -> Runtime {
        Runtime {
            runtime_id: id.into(),
            session_id: format!("s-{id}"),
            url: String::new(),
            session_api_key: "k".into(),
            status,
            pod_status: PodStatus::Ready,
            work_hosts: Default::default(),
            vscode_url: None,
            restart_count: 0,
            restart_reasons: Vec::new(),
            status_detail: None,
            created_at: created_at.into(),
            image: "img".into(),
            resource_factor: 1.0,
        }
    }

    fn ids(page: &Page) -> Vec<String> {
        page.runtimes
            .iter()
            .map(|j| {
                let v: serde_json::Value = serde_json::from_str(j).unwrap();
                v["runtime_id"].as_str().unwrap().to_string()
            })
            .collect()
    }

    #[test]
    fn only_dirty_entries_are_rebuilt_and_pages_are_oldest_first() {
        let views = Views::default();
        let cache: Mutex<HashMap<String, Runtime>> = Mutex::new(
            [
                ("b".to_string(), view("b", "2026-01-02T00:00:00Z", Status::Running)),
                ("a".to_string(), view("a", "2026-01-03T00:00:00Z", Status::Paused)),
                ("c".to_string(), view("c", "2026-01-01T00:00:00Z", Status::Running)),
            ]
            .into(),
        );
        let built = Mutex::new(Vec::new());
        let build = |id: &str| {
            built.lock().unwrap().push(id.to_string());
            cache.lock().unwrap().get(id).cloned()
        };
        let all = || vec!["a".to_string(), "b".to_string(), "c".to_string()];
        views.lock().mark_all();
        let page = views.read(build, all, |s| s.page(&ListFilter::All, 0, None));
        assert_eq!((ids(&page), page.total), (vec!["c".into(), "b".into(), "a".into()], 3));
        assert_eq!(built.lock().unwrap().len(), 3);

        // Nothing changed: nothing is rebuilt.
        built.lock().unwrap().clear();
        let page = views.read(build, all, |s| s.page(&ListFilter::Active, 1, Some(5)));
        assert_eq!((ids(&page), page.total), (vec!["b".into()], 2));
        assert!(built.lock().unwrap().is_empty());

        // One runtime paused, one gone: only those two are rebuilt; counts follow.
        cache.lock().unwrap().get_mut("c").unwrap().status = Status::Paused;
        cache.lock().unwrap().remove("b");
        views.lock().mark("c");
        views.lock().mark("b");
        let counts = views.read(build, all, |s| {
            (s.count_of(Status::Paused), s.count_of(Status::Running), s.entries.len())
        });
        assert_eq!(counts, (2, 0, 2));
        let mut rebuilt = built.lock().unwrap().clone();
        rebuilt.sort();
        assert_eq!(rebuilt, ["b", "c"]);
        let page = views.read(build, all, |s| s.page(&ListFilter::All, 0, Some(1)));
        assert_eq!((ids(&page), page.total), (vec!["c".into()], 2));
    }

    #[test]
    fn one_runtime_reads_its_current_json() {
        let views = Views::default();
        let current = Mutex::new(view("a", "2026-01-01T00:00:00Z", Status::Running));
        let build = |id: &str| (id == "a").then(|| current.lock().unwrap().clone());
        let status_of = |views: &Views| {
            views.read(build, Vec::new, |s| {
                let json: serde_json::Value = serde_json::from_str(&s.json_of("a")?).unwrap();
                Some(json["status"].as_str()?.to_string())
            })
        };
        views.lock().mark("a");
        assert_eq!(status_of(&views).as_deref(), Some("running"));
        current.lock().unwrap().status = Status::Paused;
        views.lock().mark("a");
        assert_eq!(status_of(&views).as_deref(), Some("paused"));
        assert!(views.read(build, Vec::new, |s| s.json_of("nobody")).is_none());
    }
}
