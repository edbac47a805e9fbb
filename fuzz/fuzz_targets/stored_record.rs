//! Any bytes as a value read back from sled: the header check and the
//! validated rkyv access of every stored record type must reject garbage
//! without panicking (stored bytes are untrusted).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::codec::{decode_stored, stored_header_of};
use switchboard::event::{AccountEvent, InvalidEvent, PreferenceEvent, StatusEvent, UnroutedEvent};
use switchboard::store::records::{
    kind, ConversationRecord, CustomerRecord, DedupeMark, NumberRecord, StoredMessage,
};

fuzz_target!(|data: &[u8]| {
    let Ok(h) = stored_header_of(data) else { return };
    let (k, v) = (h.kind, h.version);
    let _ = match k {
        kind::MESSAGE => decode_stored::<StoredMessage>(data, k, v).map(|_| ()),
        kind::STATUS => decode_stored::<StatusEvent>(data, k, v).map(|_| ()),
        kind::ACCOUNT => decode_stored::<AccountEvent>(data, k, v).map(|_| ()),
        kind::PREFERENCE => decode_stored::<PreferenceEvent>(data, k, v).map(|_| ()),
        kind::UNROUTED => decode_stored::<UnroutedEvent>(data, k, v).map(|_| ()),
        kind::INVALID => decode_stored::<InvalidEvent>(data, k, v).map(|_| ()),
        kind::DEDUPE => decode_stored::<DedupeMark>(data, k, v).map(|_| ()),
        kind::CONVERSATION => decode_stored::<ConversationRecord>(data, k, v).map(|_| ()),
        kind::CUSTOMER => decode_stored::<CustomerRecord>(data, k, v).map(|_| ()),
        _ => decode_stored::<NumberRecord>(data, kind::NUMBER, v).map(|_| ()),
    };
});
