//! Webhook body → [`Event`]s: the one place that reads Meta's payload shape.
//!
//! The body is read with serde_json, borrowing from it, in three passes:
//! one over the body reads `object`, `entry[]` and `changes[]` and keeps each
//! change's `value` as a raw slice; one over each value reads its members and
//! splits the item arrays (`messages`, `statuses`, ...) into raw slices; one
//! over each item reads it through a lenient typed view (`views.rs`). Every
//! event's `raw` is the exact slice of the body it came from (escapes kept).
//!
//! Invariants:
//! - Never panics and never rejects a well-formed body because of one bad
//!   part: only a body that is not a JSON object, has a wrong `object`, or
//!   has no `entry` array is an error (the caller answers 400). Everything
//!   below `entry[]` that cannot be applied becomes an [`InvalidEvent`].
//! - Nothing in a well-formed delivery is dropped silently: unknown fields
//!   survive in `raw`; unknown keys of a number-scoped `value` become one
//!   extra event (`unhandled_keys`); unknown `field`s become account events.
//! - Work is linear in the body, except matching the items of one change
//!   against that change's `contacts[]` (items × contacts).
//! - `route` is left 0 (and `CustomerRef::home` empty) on message, status and
//!   preference events: the pipeline's router decides them. Account events
//!   route by the WABA id, unrouted events by their number id, invalid events
//!   by their dedupe hash (all crc32c).
//!
//! Decisions worth knowing:
//! - A sender whose `from` is not a phone number but who has a valid
//!   `from_user_id` is kept, keyed by the user id, with no phone.
//! - The single `contacts[]` entry is used for a message whose sender it does
//!   not name only when it does not contradict the sender (a different
//!   `wa_id` or `user_id`): a wrong contact would merge two customers.
//! - Statuses need a usable recipient (`missing_recipient` /
//!   `invalid_recipient` otherwise, e.g. group statuses) and match contacts
//!   strictly, without that fallback.
//! - `calls` changes: `statuses[]` (call statuses) become status events;
//!   the rest of the value (`calls[]`, `errors[]`) one account event.
//! - An item array that is not an array (`"messages": {}`) gives one
//!   `not_an_array` invalid event per value whose `raw` is the whole value
//!   (the array is split while the value is read, so its own bytes are not
//!   kept).
//! - Memory stays linear too: every event's `raw` is a distinct part of the
//!   body, except the one account / unhandled-keys / not-an-array event a
//!   value can give, which holds the value.
//! - Invalid-item reasons: `not_an_object`, `unreadable_item` (serde refused
//!   the item: duplicate keys, a lone UTF-16 surrogate), `missing_id`,
//!   `missing_sender` / `invalid_sender`, `missing_recipient` /
//!   `invalid_recipient` (echoes, statuses), `missing_status`,
//!   `missing_value` (preferences), `not_an_array`, `malformed_entry`,
//!   `malformed_change`.

use ring::digest;
use serde_json::value::RawValue;

use super::account::{account_event, AccountInput};
use super::lenient::{is_object, view, Arr, Keys, List, Obj, Seq};
use super::views::{
    Child, ContactView, EntryView, Envelope, ErrorView, MessageView, MetadataView, PreferenceView,
    StatusView, ValueKeys,
};
use crate::event::{
    AccountEvent, ContentHash, CustomerRef, Direction, Event, InvalidEvent, MessageEvent,
    PreferenceEvent, StatusEvent, UnroutedEvent,
};

/// Which of our numbers exist, as the parser needs to know.
pub trait NumberDirectory {
    /// Whether `phone_number_id` is one of the numbers this deployment serves.
    fn is_managed(&self, phone_number_id: &str) -> bool;
    /// Our phone_number_id for a display number (account-level changes such
    /// as quality updates name the number only this way).
    fn number_for_display(&self, display_phone_number: &str) -> Option<String>;
}

/// The events of one webhook body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub events: Vec<Event>,
    /// How many `changes[]` elements the body held (valid or not).
    pub changes: usize,
}

/// Why a whole body is refused; the caller answers 400 with the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// Not JSON, not an object, `entry` missing or not an array.
    #[error("malformed webhook body: {0}")]
    Malformed(String),
    /// `object` is not `whatsapp_business_account`.
    #[error("webhook object is {0:?}, expected \"whatsapp_business_account\"")]
    WrongObject(String),
}

/// The dedupe key of content without an id: SHA-256 over `parts` joined by
/// 0x00, first 16 bytes. The pipeline reuses it.
pub fn dedupe_hash(parts: &[&[u8]]) -> ContentHash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            ctx.update(&[0]);
        }
        ctx.update(part);
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&ctx.finish().as_ref()[..16]);
    out
}

/// Split a webhook body into events. `received_at_ms` is the arrival time
/// (Unix milliseconds), used where the payload has no usable timestamp.
pub fn parse_delivery(
    body: &[u8],
    numbers: &dyn NumberDirectory,
    received_at_ms: i64,
) -> Result<Delivery, PayloadError> {
    let first = body
        .iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(&b'{') {
        // Give serde's description (with position) when it is not JSON at all.
        return Err(PayloadError::Malformed(
            match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
                Err(e) => format!("not JSON: {e}"),
                Ok(_) => "body is not a JSON object".to_owned(),
            },
        ));
    }
    // One UTF-8 check up front; every later read borrows `&str` slices.
    let text = std::str::from_utf8(body)
        .map_err(|e| PayloadError::Malformed(format!("not UTF-8: {e}")))?;
    let envelope: Envelope = serde_json::from_str(text)
        .map_err(|e| PayloadError::Malformed(format!("not valid JSON: {e}")))?;
    match envelope.object.get() {
        Some("whatsapp_business_account") => {}
        Some(other) => return Err(PayloadError::WrongObject(clip(other, 100).to_owned())),
        None => return Err(PayloadError::Malformed("`object` is missing".to_owned())),
    }
    let entries = match envelope.entry {
        Arr::Items(entries) => entries,
        Arr::Absent => return Err(PayloadError::Malformed("`entry` is missing".to_owned())),
        Arr::NotArray => {
            return Err(PayloadError::Malformed(
                "`entry` is not an array".to_owned(),
            ))
        }
    };
    let mut parser = Parser {
        text,
        numbers,
        received_at_ms,
        events: Vec::new(),
        changes: 0,
        entry_raws: None,
        change_raws: None,
    };
    for (i, entry) in entries.into_iter().enumerate() {
        parser.entry(i, entry.0);
    }
    Ok(Delivery {
        events: parser.events,
        changes: parser.changes,
    })
}

/// The elements of the array `raw`, if it is one.
fn elements(raw: &RawValue) -> Vec<&RawValue> {
    match serde_json::from_str::<Seq>(raw.get()) {
        Ok(Arr::Items(items)) => items,
        _ => Vec::new(),
    }
}

/// At most `max` bytes of `s`, cut on a character boundary.
fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A phone number as Meta writes one: 1..=20 ASCII digits.
pub(crate) fn is_phone(s: &str) -> bool {
    (1..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// A business-scoped user id: non-empty, ≤ 64 chars, no whitespace or control
/// characters (ids become storage keys).
pub(crate) fn is_user_id(s: &str) -> bool {
    // The byte check first: 64 characters are at most 256 bytes.
    (1..=256).contains(&s.len())
        && s.chars().count() <= 64
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

pub(crate) fn route_of(key: &str) -> u32 {
    crc32c::crc32c(key.as_bytes())
}

/// The entry and change an item belongs to.
#[derive(Clone, Copy)]
struct Ctx<'c> {
    waba_id: &'c str,
    entry_time: Option<i64>,
    field: &'c str,
}

/// Which number-scoped field a `value` belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Scope {
    Messages,
    Echoes,
    Preferences,
    Calls,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ItemKind {
    Inbound,
    Echo,
    Status,
    Preference,
}

impl ItemKind {
    /// `UnroutedEvent::item`.
    fn name(self) -> &'static str {
        match self {
            ItemKind::Inbound | ItemKind::Echo => "message",
            ItemKind::Status => "status",
            ItemKind::Preference => "user_preference",
        }
    }
}

/// The number a number-scoped value is for.
struct Number<'v> {
    id: &'v str,
    managed: bool,
}

/// Why no customer could be named.
enum NoCustomer {
    Missing,
    Invalid,
}

struct Parser<'n> {
    /// The whole body, to look up the raw JSON of malformed parts.
    text: &'n str,
    numbers: &'n dyn NumberDirectory,
    received_at_ms: i64,
    events: Vec<Event>,
    changes: usize,
    /// Raw `entry[]` elements, read on the first malformed entry or change.
    entry_raws: Option<Vec<&'n RawValue>>,
    /// Raw `changes[]` elements of one entry (entries are visited in order,
    /// so one slot keeps the lookups linear overall).
    change_raws: Option<(usize, Vec<&'n RawValue>)>,
}

impl<'n> Parser<'n> {
    fn received_secs(&self) -> i64 {
        self.received_at_ms.div_euclid(1000)
    }

    /// The exact JSON of `entry[i]`, or of its `changes[j]`.
    ///
    /// The single pass over the body keeps only what valid entries and
    /// changes need; the raw JSON of a malformed one is looked up here, with
    /// each level read at most once per delivery. Falls back to the whole body
    /// if the lookup fails (it cannot: the same text was read already).
    fn raw_of(&mut self, i: usize, j: Option<usize>) -> &'n str {
        let text = self.text;
        let entries = self.entry_raws.get_or_insert_with(|| {
            serde_json::from_str::<Keys>(text)
                .ok()
                .and_then(|top| top.get("entry"))
                .map(elements)
                .unwrap_or_default()
        });
        let Some(&entry) = entries.get(i) else {
            return text;
        };
        let Some(j) = j else { return entry.get() };
        if self
            .change_raws
            .as_ref()
            .is_none_or(|(cached, _)| *cached != i)
        {
            let changes = Keys::of(entry)
                .get("changes")
                .map(elements)
                .unwrap_or_default();
            self.change_raws = Some((i, changes));
        }
        match self
            .change_raws
            .as_ref()
            .and_then(|(_, changes)| changes.get(j))
        {
            Some(change) => change.get(),
            None => text,
        }
    }

    fn entry(&mut self, i: usize, entry: Option<EntryView>) {
        let no_entry = Ctx {
            waba_id: "",
            entry_time: None,
            field: "",
        };
        let Some(entry) = entry else {
            let raw = self.raw_of(i, None);
            return self.invalid(no_entry, "malformed_entry", None, raw);
        };
        let waba_id = entry.id.get().unwrap_or("");
        let Arr::Items(changes) = entry.changes else {
            let raw = self.raw_of(i, None);
            let ctx = Ctx {
                waba_id,
                ..no_entry
            };
            return self.invalid(ctx, "malformed_entry", None, raw);
        };
        for (j, change) in changes.into_iter().enumerate() {
            self.changes += 1;
            let field = change
                .0
                .as_ref()
                .and_then(|c| c.field.non_empty())
                .unwrap_or("");
            let ctx = Ctx {
                waba_id,
                entry_time: entry.time.0,
                field,
            };
            match change
                .0
                .as_ref()
                .and_then(|c| c.value)
                .filter(|v| is_object(v))
            {
                Some(value) if !field.is_empty() => self.change(ctx, value),
                _ => {
                    let raw = self.raw_of(i, Some(j));
                    self.invalid(ctx, "malformed_change", None, raw);
                }
            }
        }
    }

    fn change(&mut self, ctx: Ctx, value: &RawValue) {
        let keys = ValueKeys::of(value);
        match ctx.field {
            "messages" => self.number_scoped(ctx, Scope::Messages, value, &keys),
            "smb_message_echoes" => self.number_scoped(ctx, Scope::Echoes, value, &keys),
            "user_preferences" => self.number_scoped(ctx, Scope::Preferences, value, &keys),
            "calls" => self.number_scoped(ctx, Scope::Calls, value, &keys),
            _ => self.account(ctx, value, &keys, None),
        }
    }

    fn account(
        &mut self,
        ctx: Ctx,
        value: &RawValue,
        keys: &ValueKeys,
        event: Option<(&str, String)>,
    ) {
        let input = AccountInput {
            waba_id: ctx.waba_id,
            field: ctx.field,
            entry_time: ctx.entry_time,
            received_at_ms: self.received_at_ms,
        };
        let ev = account_event(&input, value, keys, self.numbers, event);
        self.events.push(Event::Account(ev));
    }

    /// A value that belongs to one of our numbers: items per number, plus
    /// value-level errors and anything we do not know.
    fn number_scoped(&mut self, ctx: Ctx, scope: Scope, value: &RawValue, keys: &ValueKeys) {
        let meta: Option<MetadataView> = keys.get("metadata").and_then(|m| view(m).ok().flatten());
        let id = meta
            .as_ref()
            .and_then(|m| m.phone_number_id.non_empty())
            .unwrap_or("");
        let number = Number {
            id,
            managed: !id.is_empty() && self.numbers.is_managed(id),
        };
        let contacts: Vec<ContactView> = match keys.get("contacts") {
            Some(raw) if number.managed => {
                serde_json::from_str::<List<Obj<ContactView>>>(raw.get())
                    .map(|l| l.0.into_iter().filter_map(|c| c.0).collect())
                    .unwrap_or_default()
            }
            _ => Vec::new(),
        };
        let mut unhandled: Vec<&str> = Vec::new();
        let mut not_an_array: Option<ItemKind> = None;
        for (key, child) in &keys.0 {
            let key = key.as_ref();
            let kind = match (scope, key) {
                (_, "messaging_product" | "metadata" | "contacts") => continue,
                (Scope::Messages, "messages") => ItemKind::Inbound,
                (Scope::Messages | Scope::Calls, "statuses") => ItemKind::Status,
                (Scope::Echoes, "message_echoes") => ItemKind::Echo,
                (Scope::Preferences, "user_preferences") => ItemKind::Preference,
                (Scope::Messages | Scope::Echoes | Scope::Preferences, "errors") => {
                    if let Child::Raw(raw) = child {
                        self.value_errors(ctx, &number, raw);
                    }
                    continue;
                }
                _ => {
                    unhandled.push(key);
                    continue;
                }
            };
            match child {
                Child::Items(Arr::Items(items)) => {
                    for item in items {
                        if number.managed {
                            self.item(ctx, kind, &number, &contacts, item);
                        } else {
                            self.unrouted(ctx, &number, kind.name(), item);
                        }
                    }
                }
                Child::Items(Arr::Absent) => {}
                Child::Items(Arr::NotArray) | Child::Raw(_) => {
                    not_an_array.get_or_insert(kind);
                }
            }
        }
        // The array's own bytes were not kept (it was split while reading the
        // value): the whole value stands in for it, once per value however
        // many keys are wrong (duplicate keys must not multiply the value).
        match not_an_array {
            Some(_) if number.managed => {
                self.invalid(ctx, "not_an_array", Some(number.id), value.get())
            }
            Some(kind) => self.unrouted(ctx, &number, kind.name(), value),
            None => {}
        }
        if unhandled.is_empty() {
            return;
        }
        if scope == Scope::Calls {
            // `calls[]` and call errors are account-level: one event for the value.
            return self.account(ctx, value, keys, None);
        }
        if !number.managed {
            return self.unrouted(ctx, &number, "unhandled_keys", value);
        }
        let detail = clip(&unhandled.join(","), 200).to_owned();
        self.account(ctx, value, keys, Some(("unhandled_keys", detail)));
    }

    /// `value.errors[]`: one account event (or unrouted) for the array.
    fn value_errors(&mut self, ctx: Ctx, number: &Number, raw: &RawValue) {
        if !number.managed {
            return self.unrouted(ctx, number, "errors", raw);
        }
        let first_code = serde_json::from_str::<List<Obj<ErrorView>>>(raw.get())
            .ok()
            .and_then(|l| l.0.into_iter().find_map(|e| e.0?.code.0));
        let tag = format!("{}.errors", ctx.field);
        let dedupe = dedupe_hash(&[ctx.waba_id.as_bytes(), tag.as_bytes(), raw.get().as_bytes()]);
        self.events.push(Event::Account(AccountEvent {
            waba_id: ctx.waba_id.to_owned(),
            field: ctx.field.to_owned(),
            number_id: Some(number.id.to_owned()),
            route: route_of(ctx.waba_id),
            dedupe,
            event: Some("errors".to_owned()),
            detail: first_code.map(|c| c.to_string()),
            timestamp: ctx.entry_time.unwrap_or_else(|| self.received_secs()),
            received_at_ms: self.received_at_ms,
            raw: raw.get().to_owned(),
        }));
    }

    fn item(
        &mut self,
        ctx: Ctx,
        kind: ItemKind,
        number: &Number,
        contacts: &[ContactView],
        raw: &RawValue,
    ) {
        match kind {
            ItemKind::Inbound => self.message(ctx, Direction::In, number, contacts, raw),
            ItemKind::Echo => self.message(ctx, Direction::Out, number, contacts, raw),
            ItemKind::Status => self.status(ctx, number, contacts, raw),
            ItemKind::Preference => self.preference(ctx, number, contacts, raw),
        }
    }

    fn message(
        &mut self,
        ctx: Ctx,
        direction: Direction,
        number: &Number,
        contacts: &[ContactView],
        raw: &RawValue,
    ) {
        let v: MessageView = match view(raw) {
            Ok(Some(v)) => v,
            Ok(None) => return self.invalid(ctx, "not_an_object", Some(number.id), raw.get()),
            Err(_) => return self.invalid(ctx, "unreadable_item", Some(number.id), raw.get()),
        };
        let Some(wamid) = v.id.non_empty() else {
            return self.invalid(ctx, "missing_id", Some(number.id), raw.get());
        };
        let (phone, user, parent) = match direction {
            Direction::In => (&v.from, &v.from_user_id, &v.from_parent_user_id),
            Direction::Out => (&v.to, &v.to_user_id, &v.to_parent_user_id),
        };
        let customer = match customer(phone.get(), user.get(), parent.get(), contacts, true) {
            Ok(c) => c,
            Err(why) => {
                let reason = match (direction, why) {
                    (Direction::In, NoCustomer::Missing) => "missing_sender",
                    (Direction::In, NoCustomer::Invalid) => "invalid_sender",
                    (Direction::Out, NoCustomer::Missing) => "missing_recipient",
                    (Direction::Out, NoCustomer::Invalid) => "invalid_recipient",
                };
                return self.invalid(ctx, reason, Some(number.id), raw.get());
            }
        };
        let (timestamp, timestamp_valid) = match v.timestamp.0 {
            Some(t) => (t, true),
            None => (self.received_secs(), false),
        };
        self.events.push(Event::Message(MessageEvent {
            number_id: number.id.to_owned(),
            waba_id: ctx.waba_id.to_owned(),
            route: 0,
            direction,
            customer,
            wamid: wamid.to_owned(),
            kind: v.kind.owned().unwrap_or_default(),
            timestamp,
            timestamp_valid,
            received_at_ms: self.received_at_ms,
            text: v.text(raw),
            media: v.media(),
            context_id: v.context_id(),
            referral: v.referral(),
            system: v.system(),
            raw: raw.get().to_owned(),
        }));
    }

    fn status(&mut self, ctx: Ctx, number: &Number, contacts: &[ContactView], raw: &RawValue) {
        let v: StatusView = match view(raw) {
            Ok(Some(v)) => v,
            Ok(None) => return self.invalid(ctx, "not_an_object", Some(number.id), raw.get()),
            Err(_) => return self.invalid(ctx, "unreadable_item", Some(number.id), raw.get()),
        };
        let Some(wamid) = v.id.non_empty() else {
            return self.invalid(ctx, "missing_id", Some(number.id), raw.get());
        };
        let Some(status) = v.status.non_empty() else {
            return self.invalid(ctx, "missing_status", Some(number.id), raw.get());
        };
        let customer = match customer(
            v.recipient_id.get(),
            v.recipient_user_id.get(),
            v.parent_recipient_user_id.get(),
            contacts,
            false,
        ) {
            Ok(c) => c,
            Err(NoCustomer::Missing) => {
                return self.invalid(ctx, "missing_recipient", Some(number.id), raw.get())
            }
            Err(NoCustomer::Invalid) => {
                return self.invalid(ctx, "invalid_recipient", Some(number.id), raw.get())
            }
        };
        let (timestamp, timestamp_valid) = match v.timestamp.0 {
            Some(t) => (t, true),
            None => (self.received_secs(), false),
        };
        self.events.push(Event::Status(StatusEvent {
            number_id: number.id.to_owned(),
            waba_id: ctx.waba_id.to_owned(),
            route: 0,
            customer,
            wamid: wamid.to_owned(),
            status: status.to_owned(),
            timestamp,
            timestamp_valid,
            received_at_ms: self.received_at_ms,
            errors: v.errors(),
            pricing: v.pricing(),
            conversation_id: v.conversation.get().and_then(|c| c.id.owned()),
            raw: raw.get().to_owned(),
        }));
    }

    fn preference(&mut self, ctx: Ctx, number: &Number, contacts: &[ContactView], raw: &RawValue) {
        let v: PreferenceView = match view(raw) {
            Ok(Some(v)) => v,
            Ok(None) => return self.invalid(ctx, "not_an_object", Some(number.id), raw.get()),
            Err(_) => return self.invalid(ctx, "unreadable_item", Some(number.id), raw.get()),
        };
        let Some(value) = v.value.non_empty() else {
            return self.invalid(ctx, "missing_value", Some(number.id), raw.get());
        };
        let customer = match customer(
            v.wa_id.get(),
            v.user_id.get(),
            v.parent_user_id.get(),
            contacts,
            true,
        ) {
            Ok(c) => c,
            Err(NoCustomer::Missing) => {
                return self.invalid(ctx, "missing_sender", Some(number.id), raw.get())
            }
            Err(NoCustomer::Invalid) => {
                return self.invalid(ctx, "invalid_sender", Some(number.id), raw.get())
            }
        };
        self.events.push(Event::Preference(PreferenceEvent {
            number_id: number.id.to_owned(),
            waba_id: ctx.waba_id.to_owned(),
            route: 0,
            customer,
            category: v.category.owned().unwrap_or_default(),
            value: value.to_owned(),
            timestamp: v.timestamp.0.unwrap_or_else(|| self.received_secs()),
            received_at_ms: self.received_at_ms,
            dedupe: dedupe_hash(&[
                ctx.waba_id.as_bytes(),
                ctx.field.as_bytes(),
                raw.get().as_bytes(),
            ]),
            raw: raw.get().to_owned(),
        }));
    }

    fn unrouted(&mut self, ctx: Ctx, number: &Number, item: &str, raw: &RawValue) {
        self.events.push(Event::Unrouted(UnroutedEvent {
            number_id: number.id.to_owned(),
            waba_id: ctx.waba_id.to_owned(),
            field: ctx.field.to_owned(),
            item: item.to_owned(),
            route: route_of(number.id),
            dedupe: dedupe_hash(&[b"unrouted", raw.get().as_bytes()]),
            received_at_ms: self.received_at_ms,
            raw: raw.get().to_owned(),
        }));
    }

    fn invalid(&mut self, ctx: Ctx, reason: &str, number_id: Option<&str>, raw: &str) {
        let dedupe = dedupe_hash(&[b"invalid", raw.as_bytes()]);
        self.events.push(Event::Invalid(InvalidEvent {
            reason: reason.to_owned(),
            waba_id: ctx.waba_id.to_owned(),
            field: ctx.field.to_owned(),
            number_id: number_id.filter(|n| !n.is_empty()).map(str::to_owned),
            route: crc32c::crc32c(&dedupe),
            dedupe,
            received_at_ms: self.received_at_ms,
            raw: raw.to_owned(),
        }));
    }
}

/// Name the customer from the item's phone / user id / parent id and the
/// change's contacts. `single_fallback`: use a lone contact that names
/// neither id, as long as it does not contradict them.
fn customer(
    phone: Option<&str>,
    user: Option<&str>,
    parent: Option<&str>,
    contacts: &[ContactView],
    single_fallback: bool,
) -> Result<CustomerRef, NoCustomer> {
    let phone_ok = phone.filter(|p| is_phone(p));
    let user_ok = user.filter(|u| is_user_id(u));
    if phone_ok.is_none() && user_ok.is_none() {
        return Err(if phone.is_none() && user.is_none() {
            NoCustomer::Missing
        } else {
            NoCustomer::Invalid
        });
    }
    let names = |c: &&ContactView| {
        (phone_ok.is_some() && c.wa_id.get() == phone_ok)
            || (user_ok.is_some() && c.user_id.get() == user_ok)
    };
    let contradicts = |c: &ContactView| {
        matches!((c.wa_id.get(), phone_ok), (Some(a), Some(b)) if a != b)
            || matches!((c.user_id.get(), user_ok), (Some(a), Some(b)) if a != b)
    };
    let contact = contacts.iter().find(names).or_else(|| match contacts {
        [only] if single_fallback && !contradicts(only) => Some(only),
        _ => None,
    });
    let profile = contact.and_then(|c| c.profile.get());
    Ok(CustomerRef {
        // A contact's phone only when the item gave none: a garbage `from`
        // usually comes with the same garbage `wa_id`.
        wa_id: phone_ok
            .or_else(|| {
                contact
                    .filter(|_| phone.is_none())
                    .and_then(|c| c.wa_id.get())
                    .filter(|p| is_phone(p))
            })
            .map(str::to_owned),
        user_id: user_ok
            .or_else(|| {
                contact
                    .and_then(|c| c.user_id.get())
                    .filter(|u| is_user_id(u))
            })
            .map(str::to_owned),
        parent_user_id: parent
            .filter(|p| is_user_id(p))
            .or_else(|| {
                contact
                    .and_then(|c| c.parent_user_id.get())
                    .filter(|p| is_user_id(p))
            })
            .map(str::to_owned),
        name: profile.and_then(|p| p.name.owned()),
        username: profile.and_then(|p| p.username.owned()),
        home: String::new(),
    })
}
