//! Customers and the identity index, shared by all shards.
//!
//! A customer is talked to through several of our numbers, so its record is
//! not owned by one shard: it lives here behind striped locks. Invariants:
//! - A customer's id is the identity it was first seen under (user id when
//!   present, else phone number) and never changes; later identities (a new
//!   number, a user id that appears later) are aliases in the index.
//! - Every update is idempotent under replay: profile fields carry the LSN
//!   that set them (newest wins), first-seen facts are set once, times are
//!   max/min.
//! - Lock order: a customer stripe, then identity stripes; never two
//!   customer stripes at once.

use std::collections::{BTreeMap, BTreeSet};

use parking_lot::RwLock;

use crate::event::{CustomerRef, Lsn, Referral, SystemChange};
use crate::store::records::{CustomerRecord, MarketingPreference};

const STRIPES: usize = 64;

fn stripe(key: &str) -> usize {
    crc32c::crc32c(key.as_bytes()) as usize % STRIPES
}

// B-trees, not hash maps: see `ShardState` on resize stalls.
#[derive(Default)]
struct CustomerStripe {
    map: BTreeMap<String, CustomerRecord>,
    dirty: BTreeSet<String>,
}

/// The few fields a conversation listing shows of its customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerSummary {
    pub id: String,
    pub wa_id: Option<String>,
    pub user_id: Option<String>,
    pub name: Option<String>,
}

pub struct Directory {
    customers: Box<[RwLock<CustomerStripe>]>,
    identities: Box<[RwLock<BTreeMap<String, String>>]>,
}

impl Default for Directory {
    fn default() -> Self {
        Directory {
            customers: (0..STRIPES)
                .map(|_| RwLock::new(CustomerStripe::default()))
                .collect(),
            identities: (0..STRIPES).map(|_| RwLock::new(BTreeMap::new())).collect(),
        }
    }
}

impl Directory {
    /// Build from records persisted at the last checkpoint.
    pub fn load(records: Vec<CustomerRecord>) -> Directory {
        let dir = Directory::default();
        for rec in records {
            for identity in &rec.identities {
                dir.identities[stripe(identity)]
                    .write()
                    .insert(identity.clone(), rec.id.clone());
            }
            dir.customers[stripe(&rec.id)]
                .write()
                .map
                .insert(rec.id.clone(), rec);
        }
        dir
    }

    pub fn len(&self) -> usize {
        self.customers.iter().map(|s| s.read().map.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The customer an identity already leads to.
    pub fn lookup(&self, identity: &str) -> Option<String> {
        self.identities[stripe(identity)]
            .read()
            .get(identity)
            .cloned()
    }

    /// The home id for a payload's customer: a known customer's id when any
    /// of its identities is known, else the identity a new customer would be
    /// keyed by. Empty when the payload names nobody.
    pub fn home_for(&self, who: &CustomerRef) -> String {
        for identity in who.identities() {
            if let Some(home) = self.lookup(identity) {
                return home;
            }
        }
        who.identities().next().unwrap_or_default().to_string()
    }

    /// A customer by id, or by any identity that leads to it.
    pub fn get(&self, id_or_identity: &str) -> Option<CustomerRecord> {
        if let Some(c) = self.customers[stripe(id_or_identity)]
            .read()
            .map
            .get(id_or_identity)
        {
            return Some(c.clone());
        }
        let home = self.lookup(id_or_identity)?;
        self.customers[stripe(&home)].read().map.get(&home).cloned()
    }

    pub fn summary(&self, id: &str) -> Option<CustomerSummary> {
        let stripe = self.customers[stripe(id)].read();
        let c = stripe.map.get(id)?;
        Some(CustomerSummary {
            id: c.id.clone(),
            wa_id: c.wa_id.clone(),
            user_id: c.user_id.clone(),
            name: c.name.clone(),
        })
    }

    /// Record that `who` (whose `home` is set) was seen at `seen_at`, with
    /// the profile the payload carried. Creates the customer when new.
    pub fn observe(&self, lsn: Lsn, who: &CustomerRef, seen_at: i64, referral: Option<&Referral>) {
        if who.home.is_empty() {
            return;
        }
        let mut new_identities = Vec::new();
        {
            let mut s = self.customers[stripe(&who.home)].write();
            let c = s
                .map
                .entry(who.home.clone())
                .or_insert_with(|| CustomerRecord {
                    id: who.home.clone(),
                    first_seen_at: seen_at,
                    last_seen_at: seen_at,
                    ..Default::default()
                });
            if lsn > c.updated_lsn {
                // Newest profile wins; absent fields do not erase known ones.
                set_if_some(&mut c.name, &who.name);
                set_if_some(&mut c.username, &who.username);
                set_if_some(&mut c.parent_user_id, &who.parent_user_id);
                c.updated_lsn = lsn;
            }
            // Identities are filled, never overwritten here: only the system
            // messages that announce a change replace them.
            if c.wa_id.is_none() {
                c.wa_id.clone_from(&who.wa_id);
            }
            if c.user_id.is_none() {
                c.user_id.clone_from(&who.user_id);
            }
            c.first_seen_at = c.first_seen_at.min(seen_at);
            c.last_seen_at = c.last_seen_at.max(seen_at);
            if c.referral.is_none() {
                if let Some(r) = referral {
                    c.referral = Some(r.clone());
                    c.referral_at = Some(seen_at);
                }
            }
            for identity in who.identities() {
                if !c.identities.iter().any(|i| i == identity) {
                    c.identities.push(identity.to_string());
                    new_identities.push(identity.to_string());
                }
            }
            if !s.dirty.contains(&who.home) {
                s.dirty.insert(who.home.clone());
            }
        }
        for identity in new_identities {
            self.identities[stripe(&identity)]
                .write()
                .entry(identity)
                .or_insert_with(|| who.home.clone());
        }
    }

    /// Apply a `system` message: the customer `home` changed number or user id.
    /// The new identity now leads to this customer (it wins over any earlier
    /// owner of that identity); the old one stays as an alias.
    pub fn apply_system(&self, home: &str, change: &SystemChange) {
        if home.is_empty() {
            return;
        }
        let mut added = Vec::new();
        {
            let mut s = self.customers[stripe(home)].write();
            let Some(c) = s.map.get_mut(home) else { return };
            if let Some(new) = change.new_wa_id.as_deref().filter(|n| !n.is_empty()) {
                c.wa_id = Some(new.to_string());
                added.push(new.to_string());
            }
            if let Some(new) = change.new_user_id.as_deref().filter(|n| !n.is_empty()) {
                c.user_id = Some(new.to_string());
                added.push(new.to_string());
            }
            for identity in &added {
                if !c.identities.contains(identity) {
                    c.identities.push(identity.clone());
                }
            }
            s.dirty.insert(home.to_string());
        }
        for identity in added {
            self.identities[stripe(&identity)]
                .write()
                .insert(identity, home.to_string());
        }
    }

    /// A marketing preference from `user_preferences`; the latest by payload
    /// timestamp wins.
    pub fn apply_preference(&self, home: &str, category: &str, value: &str, timestamp: i64) {
        let mut s = self.customers[stripe(home)].write();
        let Some(c) = s.map.get_mut(home) else { return };
        if c.marketing
            .as_ref()
            .is_some_and(|m| m.timestamp > timestamp)
        {
            return;
        }
        c.marketing = Some(MarketingPreference {
            category: category.into(),
            value: value.into(),
            timestamp,
        });
        s.dirty.insert(home.to_string());
    }

    /// Records changed since the last call, for the checkpoint.
    pub fn take_dirty(&self) -> Vec<CustomerRecord> {
        let mut out = Vec::new();
        for s in self.customers.iter() {
            let mut s = s.write();
            let dirty = std::mem::take(&mut s.dirty);
            out.extend(dirty.iter().filter_map(|id| s.map.get(id).cloned()));
        }
        out
    }
}

fn set_if_some(field: &mut Option<String>, new: &Option<String>) {
    if let Some(v) = new {
        if field.as_deref() != Some(v.as_str()) {
            *field = Some(v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(wa: Option<&str>, user: Option<&str>, name: Option<&str>, home: &str) -> CustomerRef {
        CustomerRef {
            wa_id: wa.map(Into::into),
            user_id: user.map(Into::into),
            name: name.map(Into::into),
            home: home.into(),
            ..Default::default()
        }
    }

    #[test]
    fn customer_keyed_by_user_id_when_present_and_phone_kept_as_attribute() {
        let d = Directory::default();
        let w = who(Some("821000000002"), Some("KR.2"), Some("Minho"), "");
        let home = d.home_for(&w);
        assert_eq!(home, "KR.2");
        d.observe(
            1,
            &CustomerRef {
                home: home.clone(),
                ..w
            },
            100,
            None,
        );
        let c = d.get("821000000002").expect("phone leads to the customer");
        assert_eq!(
            (c.id.as_str(), c.wa_id.as_deref(), c.name.as_deref()),
            ("KR.2", Some("821000000002"), Some("Minho"))
        );
    }

    #[test]
    fn later_user_id_becomes_alias_of_phone_keyed_customer() {
        let d = Directory::default();
        d.observe(
            1,
            &who(Some("15550001"), None, Some("A"), "15550001"),
            100,
            None,
        );
        let w = who(Some("15550001"), Some("US.9"), Some("A2"), "");
        assert_eq!(d.home_for(&w), "15550001");
        d.observe(
            2,
            &CustomerRef {
                home: "15550001".into(),
                ..w
            },
            200,
            None,
        );
        assert_eq!(d.lookup("US.9").as_deref(), Some("15550001"));
        let c = d.get("15550001").unwrap();
        assert_eq!(
            (c.user_id.as_deref(), c.name.as_deref(), c.last_seen_at),
            (Some("US.9"), Some("A2"), 200)
        );
    }

    #[test]
    fn profile_updates_are_idempotent_and_newest_lsn_wins() {
        let d = Directory::default();
        d.observe(5, &who(Some("1"), None, Some("new"), "1"), 100, None);
        d.observe(3, &who(Some("1"), None, Some("old"), "1"), 50, None);
        d.observe(5, &who(Some("1"), None, Some("new"), "1"), 100, None);
        let c = d.get("1").unwrap();
        assert_eq!(
            (
                c.name.as_deref(),
                c.first_seen_at,
                c.last_seen_at,
                c.identities.len()
            ),
            (Some("new"), 50, 100, 1)
        );
    }

    #[test]
    fn first_referral_is_kept() {
        let d = Directory::default();
        let r1 = Referral {
            source_id: Some("ad1".into()),
            ..Default::default()
        };
        let r2 = Referral {
            source_id: Some("ad2".into()),
            ..Default::default()
        };
        d.observe(1, &who(Some("1"), None, None, "1"), 10, Some(&r1));
        d.observe(2, &who(Some("1"), None, None, "1"), 20, Some(&r2));
        let c = d.get("1").unwrap();
        assert_eq!(c.referral.unwrap().source_id.as_deref(), Some("ad1"));
        assert_eq!(c.referral_at, Some(10));
    }

    #[test]
    fn changed_number_merges_into_the_same_customer() {
        let d = Directory::default();
        d.observe(
            1,
            &who(Some("972987654321"), None, None, "972987654321"),
            10,
            None,
        );
        d.apply_system(
            "972987654321",
            &SystemChange {
                kind: "user_changed_number".into(),
                new_wa_id: Some("972912345678".into()),
                ..Default::default()
            },
        );
        assert_eq!(
            d.home_for(&who(Some("972912345678"), None, None, "")),
            "972987654321"
        );
        let c = d.get("972912345678").unwrap();
        assert_eq!(c.wa_id.as_deref(), Some("972912345678"));
        assert!(c.identities.contains(&"972987654321".to_string()));
    }

    #[test]
    fn dirty_records_are_handed_out_once_and_survive_reload() {
        let d = Directory::default();
        d.observe(1, &who(Some("1"), Some("U.1"), None, "U.1"), 10, None);
        d.apply_preference("U.1", "marketing_messages", "stop", 30);
        d.apply_preference("U.1", "marketing_messages", "resume", 20);
        let dirty = d.take_dirty();
        assert_eq!(dirty.len(), 1);
        assert!(d.take_dirty().is_empty());
        assert_eq!(dirty[0].marketing.as_ref().unwrap().value, "stop");
        let reloaded = Directory::load(dirty);
        assert_eq!(reloaded.lookup("1").as_deref(), Some("U.1"));
    }
}
