//! Any bytes as a value read back from sled: the header check and the
//! validated rkyv access of every stored record type must reject garbage
//! without panicking (stored bytes are untrusted).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::codec::{decode_stored, stored_header_of};
use switchboard::store::records::{
    kind, ConversationRecord, CustomerRecord, DedupeMark, Loc, MessageIndex, NumberRecord,
    OutboxEntry, PendingMark, TimelineEntries,
};

fuzz_target!(|data: &[u8]| {
    let Ok(h) = stored_header_of(data) else {
        return;
    };
    let (k, v) = (h.kind, h.version);
    let _ = match k {
        kind::MESSAGE => decode_stored::<MessageIndex>(data, k, v).map(|_| ()),
        kind::STATUS..=kind::INVALID => decode_stored::<Loc>(data, k, v).map(|_| ()),
        kind::DEDUPE => decode_stored::<DedupeMark>(data, k, v).map(|_| ()),
        kind::CONVERSATION => decode_stored::<ConversationRecord>(data, k, v).map(|_| ()),
        kind::CUSTOMER => decode_stored::<CustomerRecord>(data, k, v).map(|_| ()),
        kind::OUTBOX => decode_stored::<OutboxEntry>(data, k, v).map(|_| ()),
        kind::PENDING => decode_stored::<PendingMark>(data, k, v).map(|_| ()),
        kind::TIMELINE_CHUNK | kind::TIMELINE_TAIL => {
            decode_stored::<TimelineEntries>(data, k, v).map(|_| ())
        }
        _ => decode_stored::<NumberRecord>(data, kind::NUMBER, v).map(|_| ()),
    };
});
