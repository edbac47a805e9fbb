//! The sensitive-word list in force, and its hot reload.
//!
//! [`FilterSet`] holds the current [`Filter`] behind an `ArcSwap`: a check
//! loads it without a lock, a reload swaps in a whole new filter, and a check
//! already running finishes on the filter it started with.
//!
//! Invariants: a list that fails to load (unreadable, not UTF-8, a term with
//! no letter) never replaces the one in force; reloads are serialised, so the
//! list in force is always the one read last; the file's stamp (modification
//! time, length) is taken *before* it is read, so an edit that races a read is
//! seen by the next poll rather than lost.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use super::{Filter, FilterError, Match};
use crate::telemetry::names;

/// How often [`FilterSet::spawn_watcher`] looks at the file by default.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// What the watcher compares to notice an edit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp_of(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

/// The list in force, reloadable from its file.
pub struct FilterSet {
    path: Option<PathBuf>,
    current: ArcSwap<Filter>,
    /// Stamp of the file as last read; its lock serialises reloads.
    stamp: Mutex<Option<Stamp>>,
}

impl std::fmt::Debug for FilterSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterSet")
            .field("path", &self.path)
            .field("terms", &self.current.load().len())
            .finish()
    }
}

impl crate::outbound::TermCheck for FilterSet {
    fn blocked_term(&self, text: &str) -> Option<String> {
        self.check(text).map(|m| m.term)
    }
}

impl FilterSet {
    /// Load the list from `path` (None: the empty list, nothing refused).
    /// A bad file is an error here: the daemon should not start without the
    /// list compliance configured.
    pub fn new(path: Option<PathBuf>) -> Result<FilterSet, FilterError> {
        let (filter, stamp) = match &path {
            None => (Filter::default(), None),
            Some(p) => {
                let stamp = stamp_of(p);
                (Filter::load(p)?, stamp)
            }
        };
        metrics::gauge!(names::FILTER_TERMS).set(filter.len() as f64);
        Ok(FilterSet {
            path,
            current: ArcSwap::from_pointee(filter),
            stamp: Mutex::new(stamp),
        })
    }

    /// The file the list comes from.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The filter in force (keep it for a batch; it never changes).
    pub fn current(&self) -> Arc<Filter> {
        self.current.load_full()
    }

    /// Check `text` against the list in force.
    pub fn check(&self, text: &str) -> Option<Match> {
        self.current.load().check(text)
    }

    /// Read the file again and put the new list in force; on any error the
    /// old list stays and the error names the file (and line). Returns the
    /// number of distinct terms now in force. Without a file: Ok, nothing
    /// changes.
    pub fn reload(&self) -> Result<usize, FilterError> {
        let Some(path) = &self.path else {
            return Ok(self.current.load().len());
        };
        let mut stamp = self.stamp.lock();
        *stamp = stamp_of(path);
        match Filter::load(path) {
            Ok(filter) => {
                let terms = filter.len();
                self.current.store(Arc::new(filter));
                metrics::gauge!(names::FILTER_TERMS).set(terms as f64);
                metrics::counter!(names::FILTER_RELOADS, "result" => "ok").increment(1);
                tracing::info!(path = %path.display(), terms, "sensitive-word list reloaded");
                Ok(terms)
            }
            Err(e) => {
                metrics::counter!(names::FILTER_RELOADS, "result" => "error").increment(1);
                tracing::warn!(error = %e, "sensitive-word list not reloaded; the previous list stays in force");
                Err(e)
            }
        }
    }

    /// Poll the file every `interval` on a thread of its own and reload when
    /// its modification time or length changes. The thread stops when the
    /// returned guard is dropped. Without a file there is nothing to watch
    /// and no thread.
    pub fn spawn_watcher(self: &Arc<Self>, interval: Duration) -> std::io::Result<WatcherGuard> {
        let Some(path) = self.path.clone() else {
            return Ok(WatcherGuard {
                stop: None,
                thread: None,
            });
        };
        let (stop, stopped) = mpsc::channel::<()>();
        let set = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name("filter-watch".into())
            .spawn(move || loop {
                match stopped.recv_timeout(interval) {
                    Err(RecvTimeoutError::Timeout) => set.poll(&path),
                    // The guard was dropped.
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                }
            })?;
        Ok(WatcherGuard {
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The file as it is now is the one last read (test hook for the watcher).
    #[cfg(test)]
    pub(super) fn has_seen_file(&self) -> bool {
        self.path
            .as_deref()
            .is_some_and(|p| *self.stamp.lock() == stamp_of(p))
    }

    fn poll(&self, path: &Path) {
        let now = stamp_of(path);
        {
            let mut seen = self.stamp.lock();
            if *seen == now {
                return;
            }
            if now.is_none() {
                // Gone (or mid-replace): keep the list, reload when it is back.
                tracing::warn!(path = %path.display(), "sensitive-word list file is gone; the previous list stays in force");
                *seen = None;
                return;
            }
        }
        // Errors are logged and counted by reload; the stamp it took stops a
        // bad file from being retried until it changes again.
        let _ = self.reload();
    }
}

/// Stops the watcher thread when dropped (and waits for it).
#[derive(Debug)]
pub struct WatcherGuard {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
