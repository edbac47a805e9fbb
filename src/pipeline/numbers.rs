//! Our WhatsApp numbers: which phone_number_ids this deployment manages, and
//! what the platform told us about each (quality, messaging tier), plus the
//! counters persisted at the last checkpoint.
//!
//! Invariants: a set of numbers is immutable ([`NumberSet`]); a config reload
//! swaps in a new one ([`Numbers::reconfigure`]) that keeps the entries of the
//! numbers it keeps; platform facts are applied newest-LSN-wins, so
//! replay is idempotent. Live counters are the persisted base plus the
//! shards' deltas since start (see `ShardState::counters`).

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

use crate::event::Lsn;
use crate::store::records::{NumberCounters, NumberRecord};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberInfo {
    pub phone_number_id: String,
    pub display_phone_number: String,
    pub app: String,
    pub name: Option<String>,
    pub waba_id: Option<String>,
}

pub struct NumberEntry {
    pub info: NumberInfo,
    state: Mutex<NumberRecord>,
}

impl NumberEntry {
    /// Platform facts and the counters persisted at the last checkpoint.
    pub fn record(&self) -> NumberRecord {
        self.state.lock().clone()
    }
}

/// One immutable set of numbers (what a config named).
#[derive(Default)]
pub struct NumberSet {
    entries: Vec<Arc<NumberEntry>>,
    by_id: HashMap<String, usize>,
    by_display: HashMap<String, usize>,
}

impl NumberSet {
    fn build(entries: Vec<Arc<NumberEntry>>) -> NumberSet {
        let mut set = NumberSet::default();
        for entry in entries {
            let i = set.entries.len();
            set.by_id.insert(entry.info.phone_number_id.clone(), i);
            set.by_display
                .insert(entry.info.display_phone_number.clone(), i);
            set.entries.push(entry);
        }
        set
    }

    pub fn get(&self, phone_number_id: &str) -> Option<&Arc<NumberEntry>> {
        self.by_id.get(phone_number_id).map(|i| &self.entries[*i])
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<NumberEntry>> {
        self.entries.iter()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records for the checkpoint: persisted base plus `deltas` (the shards'
    /// counters since start, summed), in the order of [`NumberSet::iter`].
    pub fn checkpoint_records(
        &self,
        deltas: &HashMap<String, NumberCounters>,
    ) -> Vec<NumberRecord> {
        self.entries
            .iter()
            .map(|e| {
                let mut rec = e.record();
                if let Some(d) = deltas.get(&e.info.phone_number_id) {
                    rec.counters.add(d);
                }
                rec
            })
            .collect()
    }
}

/// What a [`Numbers::reconfigure`] changed, by phone_number_id.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NumberChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    /// Still managed, with a new display number, app, name or WABA id.
    pub changed: Vec<String>,
}

impl NumberChanges {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// The numbers in force. A config reload swaps in a whole new set; readers
/// take the set once (`snapshot`) for anything that must be consistent.
pub struct Numbers {
    set: ArcSwap<NumberSet>,
    /// Serialises reconfigurations.
    reconfiguring: Mutex<()>,
}

impl Default for Numbers {
    fn default() -> Self {
        Numbers {
            set: ArcSwap::from_pointee(NumberSet::default()),
            reconfiguring: Mutex::new(()),
        }
    }
}

fn entry_for(info: NumberInfo, persisted: &mut HashMap<String, NumberRecord>) -> Arc<NumberEntry> {
    let record = persisted
        .remove(&info.phone_number_id)
        .unwrap_or_else(|| NumberRecord {
            number_id: info.phone_number_id.clone(),
            ..Default::default()
        });
    Arc::new(NumberEntry {
        info,
        state: Mutex::new(record),
    })
}

fn by_id(persisted: Vec<NumberRecord>) -> HashMap<String, NumberRecord> {
    persisted
        .into_iter()
        .map(|r| (r.number_id.clone(), r))
        .collect()
}

impl Numbers {
    pub fn new(infos: Vec<NumberInfo>, persisted: Vec<NumberRecord>) -> Numbers {
        let mut persisted = by_id(persisted);
        let entries = infos
            .into_iter()
            .map(|info| entry_for(info, &mut persisted))
            .collect();
        Numbers {
            set: ArcSwap::from_pointee(NumberSet::build(entries)),
            reconfiguring: Mutex::new(()),
        }
    }

    /// A config reload: `infos` become the managed numbers. A number kept
    /// with the same info keeps its entry (platform facts, counters); one
    /// whose info changed keeps its record under the new info; a new one
    /// starts from what `persisted` holds for it (it may have been managed
    /// before). A removed number's updates are unrouted from now on.
    pub fn reconfigure(
        &self,
        infos: Vec<NumberInfo>,
        persisted: Vec<NumberRecord>,
    ) -> NumberChanges {
        let _serial = self.reconfiguring.lock();
        let old = self.set.load_full();
        let mut persisted = by_id(persisted);
        let mut changes = NumberChanges::default();
        let mut entries = Vec::with_capacity(infos.len());
        for info in infos {
            let id = info.phone_number_id.clone();
            match old.get(&id) {
                Some(e) if e.info == info => entries.push(e.clone()),
                Some(e) => {
                    changes.changed.push(id);
                    entries.push(Arc::new(NumberEntry {
                        info,
                        state: Mutex::new(e.record()),
                    }));
                }
                None => {
                    changes.added.push(id);
                    entries.push(entry_for(info, &mut persisted));
                }
            }
        }
        let new = NumberSet::build(entries);
        changes.removed = old
            .iter()
            .map(|e| e.info.phone_number_id.clone())
            .filter(|id| !new.by_id.contains_key(id))
            .collect();
        self.set.store(Arc::new(new));
        changes
    }

    /// The set in force (it never changes; a reload swaps in another).
    pub fn snapshot(&self) -> Arc<NumberSet> {
        self.set.load_full()
    }

    pub fn get(&self, phone_number_id: &str) -> Option<Arc<NumberEntry>> {
        self.set.load().get(phone_number_id).cloned()
    }

    pub fn len(&self) -> usize {
        self.set.load().len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.load().is_empty()
    }

    pub fn is_managed(&self, phone_number_id: &str) -> bool {
        self.set.load().by_id.contains_key(phone_number_id)
    }

    pub fn number_for_display(&self, display_phone_number: &str) -> Option<String> {
        let set = self.set.load();
        set.by_display
            .get(display_phone_number)
            .map(|i| set.entries[*i].info.phone_number_id.clone())
    }

    /// A `phone_number_quality_update`: `event` (FLAGGED, UNFLAGGED,
    /// THROUGHPUT_UPGRADE, ...) and the messaging tier it names.
    pub fn apply_quality(
        &self,
        number_id: &str,
        lsn: Lsn,
        event: Option<&str>,
        tier: Option<&str>,
        at: i64,
    ) {
        let Some(entry) = self.get(number_id) else {
            return;
        };
        let mut state = entry.state.lock();
        if lsn <= state.updated_lsn {
            return;
        }
        if let Some(e) = event {
            state.quality_event = Some(e.to_string());
        }
        if let Some(t) = tier {
            state.messaging_tier = Some(t.to_string());
        }
        state.quality_updated_at = Some(at);
        state.updated_lsn = lsn;
    }

    /// Records for the checkpoint of the numbers in force.
    pub fn checkpoint_records(
        &self,
        deltas: &HashMap<String, NumberCounters>,
    ) -> Vec<NumberRecord> {
        self.snapshot().checkpoint_records(deltas)
    }
}

impl crate::whatsapp::NumberDirectory for Numbers {
    fn is_managed(&self, phone_number_id: &str) -> bool {
        Numbers::is_managed(self, phone_number_id)
    }

    fn number_for_display(&self, display_phone_number: &str) -> Option<String> {
        Numbers::number_for_display(self, display_phone_number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, display: &str) -> NumberInfo {
        NumberInfo {
            phone_number_id: id.into(),
            display_phone_number: display.into(),
            app: "main".into(),
            name: None,
            waba_id: None,
        }
    }

    #[test]
    fn lookup_by_id_and_display_and_quality_is_newest_wins() {
        let persisted = vec![NumberRecord {
            number_id: "1".into(),
            counters: NumberCounters {
                inbound_messages: 10,
                ..Default::default()
            },
            ..Default::default()
        }];
        let n = Numbers::new(
            vec![info("1", "15550001"), info("2", "15550002")],
            persisted,
        );
        assert!(n.is_managed("2") && !n.is_managed("3"));
        assert_eq!(n.number_for_display("15550002").as_deref(), Some("2"));
        n.apply_quality("1", 7, Some("FLAGGED"), Some("TIER_1K"), 100);
        n.apply_quality("1", 6, Some("UNFLAGGED"), None, 90);
        let rec = n.get("1").unwrap().record();
        assert_eq!(
            (rec.quality_event.as_deref(), rec.messaging_tier.as_deref()),
            (Some("FLAGGED"), Some("TIER_1K"))
        );
        let mut deltas = HashMap::new();
        deltas.insert(
            "1".to_string(),
            NumberCounters {
                inbound_messages: 5,
                ..Default::default()
            },
        );
        let recs = n.checkpoint_records(&deltas);
        assert_eq!(recs[0].counters.inbound_messages, 15);
        assert_eq!(recs[1].counters.inbound_messages, 0);
    }

    #[test]
    fn reconfigure_keeps_kept_entries_and_reports_changes() {
        let n = Numbers::new(vec![info("1", "15550001"), info("2", "15550002")], vec![]);
        n.apply_quality("1", 7, Some("FLAGGED"), None, 100);
        let kept = n.get("1").unwrap();
        let persisted = vec![NumberRecord {
            number_id: "3".into(),
            messaging_tier: Some("TIER_10K".into()),
            ..Default::default()
        }];
        let mut renamed = info("2", "15550009");
        renamed.name = Some("sales".into());
        let changes = n.reconfigure(
            vec![info("1", "15550001"), renamed, info("3", "15550003")],
            persisted,
        );
        assert_eq!(
            changes,
            NumberChanges {
                added: vec!["3".into()],
                removed: vec![],
                changed: vec!["2".into()],
            }
        );
        assert!(Arc::ptr_eq(&kept, &n.get("1").unwrap()));
        assert_eq!(
            n.get("3").unwrap().record().messaging_tier.as_deref(),
            Some("TIER_10K")
        );
        assert_eq!(n.number_for_display("15550009").as_deref(), Some("2"));
        assert_eq!(n.number_for_display("15550002"), None);

        let changes = n.reconfigure(vec![info("3", "15550003")], vec![]);
        assert_eq!(changes.removed, vec!["1".to_string(), "2".to_string()]);
        assert!(!n.is_managed("1") && n.is_managed("3") && n.len() == 1);
        // Updates for a number no longer managed change nothing.
        n.apply_quality("1", 9, Some("GREEN"), None, 200);
        assert_eq!(kept.record().quality_event.as_deref(), Some("FLAGGED"));
    }
}
