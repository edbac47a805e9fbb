//! Typed, borrowing views of the webhook items we read fields from, and the
//! rules that turn them into event fields (readable text, media, referral).
//!
//! Invariants:
//! - Views are built only from the lenient types of `lenient.rs`: unknown
//!   fields are skipped, wrong types read as absent. They are a reading aid;
//!   the item's raw JSON is what gets stored.
//! - Strings borrow from the body until the final event is built.
//! - The containers below `entry` (`Entry`, `Change`, `ValueKeys`) are read
//!   by hand so that duplicate keys never fail them (first wins; `ValueKeys`
//!   keeps all). Only the top level is derived: a duplicate `object` or
//!   `entry` there is the body's fault and a 400.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::lenient::{Arr, Flag, Int, Key, Keys, List, Obj, Seq, Str};
use crate::event::{ErrorInfo, Media, Pricing, Referral, SystemChange};

/// The request body's top level.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct Envelope<'a> {
    #[serde(borrow)]
    pub object: Str<'a>,
    #[serde(borrow)]
    pub entry: Arr<Entry<'a>>,
}

/// One `entry[]` element; `None` when it is not an object. Read by hand
/// rather than derived so that duplicate keys (first wins) cannot fail the
/// whole body.
pub(crate) struct Entry<'a>(pub Option<EntryView<'a>>);

pub(crate) struct EntryView<'a> {
    pub id: Str<'a>,
    pub time: Int,
    pub changes: Arr<Change<'a>>,
}

/// One `changes[]` element; `None` when it is not an object.
pub(crate) struct Change<'a>(pub Option<ChangeView<'a>>);

pub(crate) struct ChangeView<'a> {
    pub field: Str<'a>,
    /// `None` when absent or `null`.
    pub value: Option<&'a RawValue>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Entry<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Entry<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entry<'a>, A::Error> {
                let (mut id, mut time, mut changes) = (None, None, None);
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    match k.as_ref() {
                        "id" if id.is_none() => id = Some(map.next_value()?),
                        "time" if time.is_none() => time = Some(map.next_value()?),
                        "changes" if changes.is_none() => changes = Some(map.next_value()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Entry(Some(EntryView {
                    id: id.unwrap_or_default(),
                    time: time.unwrap_or_default(),
                    changes: changes.unwrap_or_default(),
                })))
            }
            absent_for!(Entry(None); bool, i64, u64, f64, str, unit, seq);
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Change<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Change<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Change<'a>, A::Error> {
                let (mut field, mut value) = (None, None);
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    match k.as_ref() {
                        "field" if field.is_none() => field = Some(map.next_value()?),
                        "value" if value.is_none() => {
                            value = Some(map.next_value::<Option<&'de RawValue>>()?)
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(Change(Some(ChangeView {
                    field: field.unwrap_or_default(),
                    value: value.flatten(),
                })))
            }
            absent_for!(Change(None); bool, i64, u64, f64, str, unit, seq);
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// Keys of a change's `value` whose arrays hold the items we split into
/// events; they are split in the same pass that reads the value's keys.
const ITEM_KEYS: &[&str] = &["messages", "statuses", "message_echoes", "user_preferences"];

/// A `value` member: raw JSON, or an item array already split into raw
/// elements.
pub(crate) enum Child<'a> {
    Raw(&'a RawValue),
    Items(Seq<'a>),
}

/// The members of a change's `value`, in body order, duplicates kept.
#[derive(Default)]
pub(crate) struct ValueKeys<'a>(pub Vec<(Cow<'a, str>, Child<'a>)>);

impl<'a> ValueKeys<'a> {
    /// Read the members of `value` (an object, already known to be valid JSON).
    pub fn of(value: &'a RawValue) -> ValueKeys<'a> {
        // Only nesting beyond serde_json's limits could fail: read as empty.
        serde_json::from_str(value.get()).unwrap_or_default()
    }

    /// The first raw member named `key`.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find_map(|(k, c)| match c {
            Child::Raw(raw) if k == key => Some(*raw),
            _ => None,
        })
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ValueKeys<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = ValueKeys<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ValueKeys<'a>, A::Error> {
                let mut out = Vec::new();
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    let child = if ITEM_KEYS.contains(&k.as_ref()) {
                        Child::Items(map.next_value()?)
                    } else {
                        Child::Raw(map.next_value()?)
                    };
                    out.push((k, child));
                }
                Ok(ValueKeys(out))
            }
            absent_for!(ValueKeys(Vec::new()); bool, i64, u64, f64, str, unit, seq);
        }
        d.deserialize_any(V(PhantomData))
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct MetadataView<'a> {
    #[serde(borrow)]
    pub display_phone_number: Str<'a>,
    #[serde(borrow)]
    pub phone_number_id: Str<'a>,
}

/// A value-level `contacts[]` element: who the customer is.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct ContactView<'a> {
    #[serde(borrow)]
    pub wa_id: Str<'a>,
    #[serde(borrow)]
    pub user_id: Str<'a>,
    #[serde(borrow)]
    pub parent_user_id: Str<'a>,
    #[serde(borrow)]
    pub profile: Obj<ProfileView<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct ProfileView<'a> {
    #[serde(borrow)]
    pub name: Str<'a>,
    #[serde(borrow)]
    pub username: Str<'a>,
}

/// A `messages[]` or `message_echoes[]` element (also the `edit.message`
/// inside an edit).
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct MessageView<'a> {
    #[serde(borrow)]
    pub id: Str<'a>,
    #[serde(borrow)]
    pub from: Str<'a>,
    #[serde(borrow)]
    pub from_user_id: Str<'a>,
    #[serde(borrow)]
    pub from_parent_user_id: Str<'a>,
    #[serde(borrow)]
    pub to: Str<'a>,
    #[serde(borrow)]
    pub to_user_id: Str<'a>,
    #[serde(borrow)]
    pub to_parent_user_id: Str<'a>,
    pub timestamp: Int,
    #[serde(borrow, rename = "type")]
    pub kind: Str<'a>,
    #[serde(borrow)]
    pub text: Obj<BodyView<'a>>,
    #[serde(borrow)]
    pub image: Obj<MediaView<'a>>,
    #[serde(borrow)]
    pub audio: Obj<MediaView<'a>>,
    #[serde(borrow)]
    pub video: Obj<MediaView<'a>>,
    #[serde(borrow)]
    pub document: Obj<MediaView<'a>>,
    #[serde(borrow)]
    pub sticker: Obj<MediaView<'a>>,
    #[serde(borrow)]
    pub interactive: Obj<InteractiveView<'a>>,
    #[serde(borrow)]
    pub button: Obj<ButtonView<'a>>,
    #[serde(borrow)]
    pub reaction: Obj<ReactionView<'a>>,
    #[serde(borrow)]
    pub location: Obj<LocationView<'a>>,
    #[serde(borrow)]
    pub order: Obj<BodyView<'a>>,
    #[serde(borrow)]
    pub system: Obj<SystemView<'a>>,
    #[serde(borrow)]
    pub contacts: List<Obj<CardView<'a>>>,
    #[serde(borrow)]
    pub context: Obj<ContextView<'a>>,
    #[serde(borrow)]
    pub referral: Obj<ReferralView<'a>>,
    #[serde(borrow)]
    pub edit: Obj<EditView<'a>>,
}

/// Objects whose readable text sits in `body` or `text` (`text`, `order`,
/// and, for unknown types, whatever object is named by `type`).
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct BodyView<'a> {
    #[serde(borrow)]
    pub body: Str<'a>,
    #[serde(borrow)]
    pub text: Str<'a>,
    #[serde(borrow)]
    pub caption: Str<'a>,
    #[serde(borrow)]
    pub title: Str<'a>,
}

impl BodyView<'_> {
    fn readable(&self) -> Option<&str> {
        self.body
            .non_empty()
            .or(self.text.non_empty())
            .or(self.caption.non_empty())
            .or(self.title.non_empty())
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct MediaView<'a> {
    #[serde(borrow)]
    pub id: Str<'a>,
    #[serde(borrow)]
    pub mime_type: Str<'a>,
    #[serde(borrow)]
    pub sha256: Str<'a>,
    #[serde(borrow)]
    pub filename: Str<'a>,
    #[serde(borrow)]
    pub url: Str<'a>,
    #[serde(borrow)]
    pub caption: Str<'a>,
    pub voice: Flag,
    pub animated: Flag,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct InteractiveView<'a> {
    #[serde(borrow)]
    pub button_reply: Obj<BodyView<'a>>,
    #[serde(borrow)]
    pub list_reply: Obj<BodyView<'a>>,
    #[serde(borrow)]
    pub nfm_reply: Obj<BodyView<'a>>,
    #[serde(borrow)]
    pub call_permission_reply: Obj<PermissionView<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct PermissionView<'a> {
    #[serde(borrow)]
    pub response: Str<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct ButtonView<'a> {
    #[serde(borrow)]
    pub text: Str<'a>,
    #[serde(borrow)]
    pub payload: Str<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct ReactionView<'a> {
    #[serde(borrow)]
    pub emoji: Str<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct LocationView<'a> {
    #[serde(borrow)]
    pub latitude: Str<'a>,
    #[serde(borrow)]
    pub longitude: Str<'a>,
    #[serde(borrow)]
    pub name: Str<'a>,
    #[serde(borrow)]
    pub address: Str<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct SystemView<'a> {
    #[serde(borrow, rename = "type")]
    pub kind: Str<'a>,
    #[serde(borrow)]
    pub body: Str<'a>,
    #[serde(borrow)]
    pub wa_id: Str<'a>,
    #[serde(borrow)]
    pub new_wa_id: Str<'a>,
    #[serde(borrow)]
    pub user_id: Str<'a>,
    #[serde(borrow)]
    pub new_user_id: Str<'a>,
}

/// A vCard in a `contacts` message.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct CardView<'a> {
    #[serde(borrow)]
    pub name: Obj<CardNameView<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct CardNameView<'a> {
    #[serde(borrow)]
    pub formatted_name: Str<'a>,
    #[serde(borrow)]
    pub first_name: Str<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct ContextView<'a> {
    #[serde(borrow)]
    pub id: Str<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct ReferralView<'a> {
    #[serde(borrow)]
    pub source_url: Str<'a>,
    #[serde(borrow)]
    pub source_id: Str<'a>,
    #[serde(borrow)]
    pub source_type: Str<'a>,
    #[serde(borrow)]
    pub headline: Str<'a>,
    #[serde(borrow)]
    pub body: Str<'a>,
    #[serde(borrow)]
    pub media_type: Str<'a>,
    #[serde(borrow)]
    pub ctwa_clid: Str<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct EditView<'a> {
    #[serde(borrow)]
    pub message: Obj<Box<MessageView<'a>>>,
}

/// A `statuses[]` element.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct StatusView<'a> {
    #[serde(borrow)]
    pub id: Str<'a>,
    #[serde(borrow)]
    pub status: Str<'a>,
    pub timestamp: Int,
    #[serde(borrow)]
    pub recipient_id: Str<'a>,
    #[serde(borrow)]
    pub recipient_user_id: Str<'a>,
    #[serde(borrow)]
    pub parent_recipient_user_id: Str<'a>,
    #[serde(borrow)]
    pub errors: List<Obj<ErrorView<'a>>>,
    #[serde(borrow)]
    pub pricing: Obj<PricingView<'a>>,
    #[serde(borrow)]
    pub conversation: Obj<ContextView<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct ErrorView<'a> {
    pub code: Int,
    #[serde(borrow)]
    pub title: Str<'a>,
    #[serde(borrow)]
    pub message: Str<'a>,
    #[serde(borrow)]
    pub error_data: Obj<ErrorDataView<'a>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct ErrorDataView<'a> {
    #[serde(borrow)]
    pub details: Str<'a>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct PricingView<'a> {
    pub billable: Flag,
    #[serde(borrow)]
    pub pricing_model: Str<'a>,
    #[serde(borrow, rename = "type")]
    pub kind: Str<'a>,
    #[serde(borrow)]
    pub category: Str<'a>,
}

/// A `user_preferences[]` element.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct PreferenceView<'a> {
    #[serde(borrow)]
    pub wa_id: Str<'a>,
    #[serde(borrow)]
    pub user_id: Str<'a>,
    #[serde(borrow)]
    pub parent_user_id: Str<'a>,
    #[serde(borrow)]
    pub category: Str<'a>,
    #[serde(borrow)]
    pub value: Str<'a>,
    pub timestamp: Int,
}

/// Message types whose readable text (or its absence) we know; anything else
/// goes through the generic lookup of the object named by `type`.
const KNOWN_KINDS: &[&str] = &[
    "text",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "location",
    "contacts",
    "interactive",
    "button",
    "reaction",
    "order",
    "system",
    "unsupported",
    "edit",
    "revoke",
    "request_welcome",
    "errors",
];

impl<'a> MessageView<'a> {
    pub fn media_view(&self) -> Option<&MediaView<'a>> {
        match self.kind.get()? {
            "image" => self.image.get(),
            "audio" => self.audio.get(),
            "video" => self.video.get(),
            "document" => self.document.get(),
            "sticker" => self.sticker.get(),
            _ => None,
        }
    }

    /// The readable text of the message; empty strings count as none (an
    /// empty reaction emoji is an un-reaction). `raw` is the item's JSON, used
    /// only for types we do not know.
    pub fn text(&self, raw: &RawValue) -> Option<String> {
        self.text_at_depth(Some(raw), 0)
    }

    fn text_at_depth(&self, raw: Option<&RawValue>, depth: u8) -> Option<String> {
        let kind = self.kind.get().unwrap_or("");
        let borrowed: Option<&str> = match kind {
            "text" => self.text.get().and_then(BodyView::readable),
            "image" | "video" | "document" | "sticker" => {
                self.media_view().and_then(|m| m.caption.non_empty())
            }
            "interactive" => self.interactive.get().and_then(|i| {
                i.button_reply
                    .get()
                    .and_then(|b| b.title.non_empty())
                    .or_else(|| i.list_reply.get().and_then(|l| l.title.non_empty()))
                    .or_else(|| i.nfm_reply.get().and_then(|n| n.body.non_empty()))
                    .or_else(|| {
                        i.call_permission_reply
                            .get()
                            .and_then(|c| c.response.non_empty())
                    })
            }),
            "button" => self
                .button
                .get()
                .and_then(|b| b.text.non_empty().or(b.payload.non_empty())),
            "reaction" => self.reaction.get().and_then(|r| r.emoji.non_empty()),
            "location" => return self.location.get().and_then(location_text),
            "order" => self.order.get().and_then(BodyView::readable),
            "system" => self.system.get().and_then(|s| s.body.non_empty()),
            "contacts" => return cards_text(&self.contacts),
            // An edit's text is the new content.
            "edit" if depth == 0 => {
                return self
                    .edit
                    .get()
                    .and_then(|e| e.message.get())
                    .and_then(|m| m.text_at_depth(None, depth + 1));
            }
            k if KNOWN_KINDS.contains(&k) => None,
            _ => return self.unknown_kind_text(kind, raw),
        };
        borrowed.map(str::to_owned)
    }

    /// Future types: the object named by `type` (`{"type":"x","x":{"body":..}}`),
    /// else a `text` object, if either holds readable text.
    fn unknown_kind_text(&self, kind: &str, raw: Option<&RawValue>) -> Option<String> {
        let named = raw
            .filter(|_| !kind.is_empty())
            .and_then(|raw| Keys::of(raw).get(kind))
            .and_then(|sub| super::lenient::view::<BodyView>(sub).ok().flatten())
            .and_then(|b| b.readable().map(str::to_owned));
        named.or_else(|| {
            self.text
                .get()
                .and_then(BodyView::readable)
                .map(str::to_owned)
        })
    }

    pub fn media(&self) -> Option<Media> {
        self.media_view().map(|m| Media {
            id: m.id.owned(),
            mime_type: m.mime_type.owned(),
            sha256: m.sha256.owned(),
            filename: m.filename.owned(),
            url: m.url.owned(),
            voice: m.voice.0.unwrap_or(false),
            animated: m.animated.0.unwrap_or(false),
        })
    }

    pub fn referral(&self) -> Option<Referral> {
        self.referral.get().map(|r| Referral {
            source_url: r.source_url.owned(),
            source_id: r.source_id.owned(),
            source_type: r.source_type.owned(),
            headline: r.headline.owned(),
            body: r.body.owned(),
            media_type: r.media_type.owned(),
            ctwa_clid: r.ctwa_clid.owned(),
        })
    }

    pub fn system(&self) -> Option<SystemChange> {
        self.system.get().map(|s| SystemChange {
            kind: s.kind.owned().unwrap_or_default(),
            body: s.body.owned(),
            new_wa_id: s.wa_id.owned().or_else(|| s.new_wa_id.owned()),
            new_user_id: s.user_id.owned().or_else(|| s.new_user_id.owned()),
        })
    }

    pub fn context_id(&self) -> Option<String> {
        self.context.get().and_then(|c| c.id.owned())
    }
}

/// "name, address" when either is given, else "lat,long".
fn location_text(l: &LocationView) -> Option<String> {
    match (l.name.non_empty(), l.address.non_empty()) {
        (Some(n), Some(a)) => Some(format!("{n}, {a}")),
        (Some(x), None) | (None, Some(x)) => Some(x.to_owned()),
        (None, None) => match (l.latitude.non_empty(), l.longitude.non_empty()) {
            (Some(lat), Some(long)) => Some(format!("{lat},{long}")),
            _ => None,
        },
    }
}

/// The shared cards' names, comma separated.
fn cards_text(cards: &List<Obj<CardView>>) -> Option<String> {
    let names: Vec<&str> = cards
        .0
        .iter()
        .filter_map(|c| c.get()?.name.get())
        .filter_map(|n| n.formatted_name.non_empty().or(n.first_name.non_empty()))
        .collect();
    (!names.is_empty()).then(|| names.join(", "))
}

impl StatusView<'_> {
    pub fn errors(&self) -> Vec<ErrorInfo> {
        self.errors
            .0
            .iter()
            .filter_map(|e| e.get())
            .map(ErrorView::info)
            .collect()
    }

    pub fn pricing(&self) -> Option<Pricing> {
        self.pricing.get().map(|p| Pricing {
            billable: p.billable.0,
            model: p.pricing_model.owned(),
            kind: p.kind.owned(),
            category: p.category.owned(),
        })
    }
}

impl ErrorView<'_> {
    pub fn info(&self) -> ErrorInfo {
        ErrorInfo {
            code: self.code.0.unwrap_or(0),
            title: self.title.owned(),
            message: self.message.owned(),
            details: self.error_data.get().and_then(|d| d.details.owned()),
        }
    }
}
