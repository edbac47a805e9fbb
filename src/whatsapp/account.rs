//! Account-level changes (quality, templates, account, calls, unknown fields)
//! → one [`AccountEvent`] per change.
//!
//! Invariants:
//! - Exactly one event per change; its `raw` is the change's whole `value`,
//!   its dedupe key hashes (entry id, field, value), so Meta's retries of the
//!   same change collapse and nothing in the value is lost.
//! - `event` and `detail` are a convenience for listing and alerting, read
//!   from a small per-field table with generic fallbacks; an unknown field
//!   still gets `event`/`decision`/`status` if it has one.
//! - Routes by the WABA id (`entry[].id`), so one account's changes apply in
//!   order on one shard.

use serde_json::value::RawValue;

use super::lenient::{leaf_int, leaf_str, path, view};
use super::payload::{dedupe_hash, route_of, NumberDirectory};
use super::views::{MetadataView, ValueKeys};
use crate::event::AccountEvent;

/// Where the change sits.
pub(crate) struct AccountInput<'a> {
    pub waba_id: &'a str,
    pub field: &'a str,
    pub entry_time: Option<i64>,
    pub received_at_ms: i64,
}

type Paths = &'static [&'static [&'static str]];

/// Where each field keeps its headline.
fn headline_paths(field: &str) -> Paths {
    match field {
        "phone_number_quality_update"
        | "message_template_status_update"
        | "account_update"
        | "security"
        | "flows" => &[&["event"]],
        "phone_number_name_update" | "account_review_update" => &[&["decision"]],
        "message_template_quality_update" => &[&["new_quality_score"]],
        "template_category_update" => &[&["new_category"]],
        "calls" => &[&["calls", "event"]],
        _ => &[],
    }
}

const GENERIC_HEADLINE: Paths = &[&["event"], &["decision"], &["status"]];

/// Where each field keeps a useful second detail.
fn detail_paths(field: &str) -> Paths {
    match field {
        "phone_number_quality_update" => &[
            &["current_limit"],
            &["max_daily_conversations_per_business"],
        ],
        "message_template_status_update"
        | "message_template_quality_update"
        | "message_template_components_update"
        | "template_category_update" => &[&["message_template_name"], &["message_template_id"]],
        "account_update" => &[
            &["ban_info", "waba_ban_state"],
            &["violation_info", "violation_type"],
            &["restriction_info", "restriction_type"],
            &["disconnection_info", "reason"],
            &["partner_client_certification_info", "status"],
            &["volume_tier_info", "tier"],
            &["country"],
        ],
        "phone_number_name_update" => &[&["requested_verified_name"], &["rejection_reason"]],
        "calls" => &[
            &["calls", "status"],
            &["calls", "direction"],
            &["errors", "code"],
        ],
        "business_capability_update" => &[
            &["max_daily_conversation_per_phone"],
            &["max_daily_conversations_per_business"],
            &["max_phone_numbers_per_business"],
        ],
        "flows" => &[&["flow_id"]],
        _ => &[],
    }
}

const GENERIC_DETAIL: Paths = &[&["reason"]];

fn first_str(value: &RawValue, paths: Paths) -> Option<String> {
    paths
        .iter()
        .filter_map(|p| path(value, p).and_then(leaf_str))
        .find(|s| !s.is_empty())
}

/// Build the change's account event. `headline` overrides the table (used
/// for a number-scoped value's `unhandled_keys`) and also names the dedupe
/// tag, so it never collides with the value's other events.
pub(crate) fn account_event(
    input: &AccountInput,
    value: &RawValue,
    keys: &ValueKeys,
    numbers: &dyn NumberDirectory,
    headline: Option<(&str, String)>,
) -> AccountEvent {
    let (event, detail, tag) = match headline {
        Some((event, detail)) => (
            Some(event.to_owned()),
            Some(detail),
            format!("{}.{event}", input.field),
        ),
        None => {
            let event = first_str(value, headline_paths(input.field))
                .or_else(|| first_str(value, GENERIC_HEADLINE))
                .or_else(|| keys.has("errors").then(|| "errors".to_owned()));
            let detail = first_str(value, detail_paths(input.field))
                .or_else(|| first_str(value, GENERIC_DETAIL));
            (event, detail, input.field.to_owned())
        }
    };
    let timestamp = input
        .entry_time
        .or_else(|| keys.get("timestamp").and_then(leaf_int))
        .or_else(|| path(value, &["calls", "timestamp"]).and_then(leaf_int))
        .unwrap_or_else(|| input.received_at_ms.div_euclid(1000));
    AccountEvent {
        waba_id: input.waba_id.to_owned(),
        field: input.field.to_owned(),
        number_id: number_of(keys, numbers),
        route: route_of(input.waba_id),
        dedupe: dedupe_hash(&[
            input.waba_id.as_bytes(),
            tag.as_bytes(),
            value.get().as_bytes(),
        ]),
        event,
        detail,
        timestamp,
        received_at_ms: input.received_at_ms,
        raw: value.get().to_owned(),
    }
}

/// Our number, when the value names one we manage: by `metadata`, else by
/// display number (top level or in `metadata`).
fn number_of(keys: &ValueKeys, numbers: &dyn NumberDirectory) -> Option<String> {
    let meta: Option<MetadataView> = keys.get("metadata").and_then(|m| view(m).ok().flatten());
    let by_id = meta
        .as_ref()
        .and_then(|m| m.phone_number_id.non_empty())
        .filter(|id| numbers.is_managed(id))
        .map(str::to_owned);
    by_id.or_else(|| {
        let display = keys
            .get("display_phone_number")
            .and_then(leaf_str)
            .or_else(|| meta.as_ref().and_then(|m| m.display_phone_number.owned()))?;
        numbers.number_for_display(&display)
    })
}
