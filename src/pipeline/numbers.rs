//! Our WhatsApp numbers: which phone_number_ids this deployment manages, and
//! what the platform told us about each (quality, messaging tier), plus the
//! counters persisted at the last checkpoint.
//!
//! Invariants: the set of numbers is immutable per `Numbers` value (a config
//! reload builds a new one); platform facts are applied newest-LSN-wins, so
//! replay is idempotent. Live counters are the persisted base plus the
//! shards' deltas since start (see `ShardState::counters`).

use std::collections::HashMap;
use std::sync::Arc;

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

#[derive(Default)]
pub struct Numbers {
    entries: Vec<Arc<NumberEntry>>,
    by_id: HashMap<String, usize>,
    by_display: HashMap<String, usize>,
}

impl Numbers {
    pub fn new(infos: Vec<NumberInfo>, persisted: Vec<NumberRecord>) -> Numbers {
        let mut persisted: HashMap<String, NumberRecord> = persisted
            .into_iter()
            .map(|r| (r.number_id.clone(), r))
            .collect();
        let mut numbers = Numbers::default();
        for info in infos {
            let record = persisted
                .remove(&info.phone_number_id)
                .unwrap_or_else(|| NumberRecord {
                    number_id: info.phone_number_id.clone(),
                    ..Default::default()
                });
            let i = numbers.entries.len();
            numbers.by_id.insert(info.phone_number_id.clone(), i);
            numbers
                .by_display
                .insert(info.display_phone_number.clone(), i);
            numbers.entries.push(Arc::new(NumberEntry {
                info,
                state: Mutex::new(record),
            }));
        }
        numbers
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

    pub fn is_managed(&self, phone_number_id: &str) -> bool {
        self.by_id.contains_key(phone_number_id)
    }

    pub fn number_for_display(&self, display_phone_number: &str) -> Option<String> {
        self.by_display
            .get(display_phone_number)
            .map(|i| self.entries[*i].info.phone_number_id.clone())
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

    /// Records for the checkpoint: persisted base plus `deltas` (the shards'
    /// counters since start, summed).
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
}
