//! rkyv encoding shared by the journal and the store.
//!
//! Invariants:
//! - Bytes read back from disk are untrusted: they are copied into a 16-byte
//!   aligned buffer and validated (`rkyv::access`) before use. Nothing here
//!   uses unchecked access.
//! - The archive format is pinned in Cargo.toml (little endian, aligned,
//!   32-bit relative pointers) so files move between machines unchanged.
//! - A stored (sled) value starts with a 16-byte header naming its record kind
//!   and version, so the format can evolve record by record, and the LSN of
//!   the journal record that wrote it, so idempotent replay can tell "this very
//!   record again" from "a duplicate" without decoding the value.

use rkyv::{
    api::high::{HighDeserializer, HighSerializer, HighValidator},
    bytecheck::CheckBytes,
    rancor::BoxedError,
    ser::allocator::ArenaHandle,
    util::AlignedVec,
    Archive, Deserialize, Serialize,
};

/// Length of the header in front of every stored value.
pub const STORED_HEADER_LEN: usize = 16;
const STORED_MAGIC: [u8; 4] = *b"SWB\x01";

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("record failed validation: {0}")]
    Invalid(String),
    #[error("unknown record kind {0}")]
    UnknownKind(u16),
    #[error("unknown version {version} of record kind {kind}")]
    UnknownVersion { kind: u16, version: u16 },
    #[error("stored value is {0} bytes, shorter than its header")]
    Truncated(usize),
    #[error("stored value has a bad header")]
    BadHeader,
    #[error("stored value is record kind {found}, expected {expected}")]
    WrongKind { found: u16, expected: u16 },
}

/// A type this module can encode.
pub trait Encode:
    for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, BoxedError>>
{
}
impl<T> Encode for T where
    T: for<'a> Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, BoxedError>>
{
}

/// A stored record type this module can validate and decode.
pub trait Decode: Sized {
    fn decode_stored(bytes: &[u8], kind: u16, version: u16) -> Result<Self, CodecError>;
}

impl<T> Decode for T
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, BoxedError>>
        + Deserialize<T, HighDeserializer<BoxedError>>,
{
    fn decode_stored(bytes: &[u8], kind: u16, version: u16) -> Result<Self, CodecError> {
        decode_stored::<T>(bytes, kind, version)
    }
}

/// Encode `value` on its own (journal payloads).
pub fn to_aligned<T: Encode>(value: &T) -> Result<AlignedVec, CodecError> {
    rkyv::to_bytes::<BoxedError>(value).map_err(|e| CodecError::Invalid(e.to_string()))
}

/// Copy `bytes` into an aligned buffer (sled and journal bytes have no
/// alignment guarantee).
pub fn aligned_copy(bytes: &[u8]) -> AlignedVec {
    let mut buf = AlignedVec::<16>::with_capacity(bytes.len());
    buf.extend_from_slice(bytes);
    buf
}

/// Validate and decode a payload written by [`to_aligned`].
pub fn from_unaligned<T>(bytes: &[u8]) -> Result<T, CodecError>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, BoxedError>>
        + Deserialize<T, HighDeserializer<BoxedError>>,
{
    let buf = aligned_copy(bytes);
    rkyv::from_bytes::<T, BoxedError>(&buf).map_err(|e| CodecError::Invalid(e.to_string()))
}

/// The header of a stored value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredHeader {
    pub kind: u16,
    pub version: u16,
    /// LSN of the journal record that wrote the value (0 for state written at
    /// a checkpoint, which carries its own LSNs inside).
    pub lsn: u64,
}

fn stored_header(h: StoredHeader) -> [u8; STORED_HEADER_LEN] {
    let mut b = [0u8; STORED_HEADER_LEN];
    b[..4].copy_from_slice(&STORED_MAGIC);
    b[4..6].copy_from_slice(&h.kind.to_le_bytes());
    b[6..8].copy_from_slice(&h.version.to_le_bytes());
    b[8..16].copy_from_slice(&h.lsn.to_le_bytes());
    b
}

/// Encode a value for sled: header, then the rkyv archive.
pub fn encode_stored<T: Encode>(header: StoredHeader, value: &T) -> Result<AlignedVec, CodecError> {
    let mut buf = AlignedVec::<16>::with_capacity(256);
    buf.extend_from_slice(&stored_header(header));
    rkyv::api::high::to_bytes_in::<_, BoxedError>(value, buf)
        .map_err(|e| CodecError::Invalid(e.to_string()))
}

/// The header of a stored value, checked but without touching the payload.
pub fn stored_header_of(bytes: &[u8]) -> Result<StoredHeader, CodecError> {
    if bytes.len() < STORED_HEADER_LEN {
        return Err(CodecError::Truncated(bytes.len()));
    }
    if bytes[..4] != STORED_MAGIC {
        return Err(CodecError::BadHeader);
    }
    let kind = u16::from_le_bytes([bytes[4], bytes[5]]);
    let version = u16::from_le_bytes([bytes[6], bytes[7]]);
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&bytes[8..16]);
    Ok(StoredHeader {
        kind,
        version,
        lsn: u64::from_le_bytes(lsn),
    })
}

/// Validate a stored value of `kind`/`version` and hand its archived form to
/// `f`: zero-copy apart from the one aligned copy.
pub fn with_stored<T, R>(
    bytes: &[u8],
    kind: u16,
    version: u16,
    f: impl FnOnce(&T::Archived) -> R,
) -> Result<R, CodecError>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, BoxedError>>,
{
    let StoredHeader {
        kind: found,
        version: found_version,
        ..
    } = stored_header_of(bytes)?;
    if found != kind {
        return Err(CodecError::WrongKind {
            found,
            expected: kind,
        });
    }
    if found_version != version {
        return Err(CodecError::UnknownVersion {
            kind,
            version: found_version,
        });
    }
    let buf = aligned_copy(bytes);
    let archived = rkyv::access::<T::Archived, BoxedError>(&buf[STORED_HEADER_LEN..])
        .map_err(|e| CodecError::Invalid(e.to_string()))?;
    Ok(f(archived))
}

/// Validate and decode a stored value into its owned form.
pub fn decode_stored<T>(bytes: &[u8], kind: u16, version: u16) -> Result<T, CodecError>
where
    T: Archive,
    T::Archived: for<'a> CheckBytes<HighValidator<'a, BoxedError>>
        + Deserialize<T, HighDeserializer<BoxedError>>,
{
    with_stored::<T, _>(bytes, kind, version, |a| {
        rkyv::deserialize::<T, BoxedError>(a)
    })?
    .map_err(|e| CodecError::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CustomerRef, Direction, Event, MessageEvent};

    fn sample() -> MessageEvent {
        MessageEvent {
            number_id: "106540352242922".into(),
            waba_id: "102290129340398".into(),
            route: 7,
            direction: Direction::In,
            customer: CustomerRef {
                wa_id: Some("16505551234".into()),
                home: "16505551234".into(),
                ..Default::default()
            },
            wamid: "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA=".into(),
            kind: "text".into(),
            timestamp: 1749416383,
            timestamp_valid: true,
            received_at_ms: 1749416383123,
            text: Some("가격이 얼마예요? 🙏🏽".into()),
            media: None,
            context_id: None,
            referral: None,
            system: None,
            raw: r#"{"id":"x"}"#.into(),
        }
    }

    #[test]
    fn event_roundtrip_from_unaligned_bytes() {
        let ev = Event::Message(sample());
        let bytes = ev.encode().unwrap();
        // Shift by one byte to prove decode does not rely on the caller's alignment.
        let mut shifted = vec![0u8];
        shifted.extend_from_slice(&bytes);
        let back = Event::decode(ev.kind(), ev.version(), &shifted[1..]).unwrap();
        assert_eq!(back, ev);
    }

    #[test]
    fn stored_roundtrip_and_header_checks() {
        let value = sample();
        let bytes = encode_stored(
            StoredHeader {
                kind: 9,
                version: 1,
                lsn: 42,
            },
            &value,
        )
        .unwrap();
        assert_eq!(
            stored_header_of(&bytes).unwrap(),
            StoredHeader {
                kind: 9,
                version: 1,
                lsn: 42
            }
        );
        let back: MessageEvent = decode_stored(&bytes, 9, 1).unwrap();
        assert_eq!(back, value);
        let text = with_stored::<MessageEvent, _>(&bytes, 9, 1, |a| {
            a.text.as_ref().map(|t| t.to_string())
        })
        .unwrap();
        assert_eq!(text.as_deref(), Some("가격이 얼마예요? 🙏🏽"));
        assert!(matches!(
            decode_stored::<MessageEvent>(&bytes, 8, 1),
            Err(CodecError::WrongKind { .. })
        ));
        assert!(matches!(
            decode_stored::<MessageEvent>(&bytes, 9, 2),
            Err(CodecError::UnknownVersion { .. })
        ));
        assert!(matches!(
            stored_header_of(&bytes[..10]),
            Err(CodecError::Truncated(10))
        ));
    }

    #[test]
    fn corrupt_stored_bytes_are_rejected_not_trusted() {
        let bytes = encode_stored(
            StoredHeader {
                kind: 9,
                version: 1,
                lsn: 1,
            },
            &sample(),
        )
        .unwrap();
        // Any single corrupted byte either still validates or is an error: never a panic.
        for i in STORED_HEADER_LEN..bytes.len() {
            let mut flipped = bytes.to_vec();
            flipped[i] ^= 0xa5;
            let _ = decode_stored::<MessageEvent>(&flipped, 9, 1);
        }
        // Structurally broken archives are rejected.
        let mut garbage = bytes.to_vec();
        for b in &mut garbage[STORED_HEADER_LEN..] {
            *b = 0xff;
        }
        assert!(decode_stored::<MessageEvent>(&garbage, 9, 1).is_err());
        assert!(decode_stored::<MessageEvent>(&bytes[..bytes.len() - 3], 9, 1).is_err());
        let mut bad_header = bytes.to_vec();
        bad_header[1] = b'x';
        assert!(matches!(
            decode_stored::<MessageEvent>(&bad_header, 9, 1),
            Err(CodecError::BadHeader)
        ));
    }

    #[test]
    fn every_event_kind_roundtrips() {
        use crate::event::*;
        let h = [3u8; 16];
        let events = vec![
            Event::Message(sample()),
            Event::Status(StatusEvent {
                number_id: "1".into(),
                waba_id: "2".into(),
                route: 1,
                customer: CustomerRef::default(),
                wamid: "wamid.X".into(),
                status: "read".into(),
                timestamp: 5,
                timestamp_valid: true,
                received_at_ms: 6,
                errors: vec![ErrorInfo {
                    code: 131047,
                    title: Some("Re-engagement message".into()),
                    ..Default::default()
                }],
                pricing: Some(Pricing {
                    billable: Some(true),
                    model: Some("PMP".into()),
                    kind: Some("regular".into()),
                    category: Some("marketing".into()),
                }),
                conversation_id: None,
                raw: "{}".into(),
            }),
            Event::Account(AccountEvent {
                waba_id: "w".into(),
                field: "phone_number_quality_update".into(),
                number_id: None,
                route: 2,
                dedupe: h,
                event: Some("FLAGGED".into()),
                detail: Some("TIER_1K".into()),
                timestamp: 1,
                received_at_ms: 2,
                raw: "{}".into(),
            }),
            Event::Preference(PreferenceEvent {
                number_id: "1".into(),
                waba_id: "w".into(),
                route: 3,
                customer: CustomerRef::default(),
                category: "marketing_messages".into(),
                value: "stop".into(),
                timestamp: 1,
                received_at_ms: 2,
                dedupe: h,
                raw: "{}".into(),
            }),
            Event::Unrouted(UnroutedEvent {
                number_id: "9".into(),
                waba_id: "w".into(),
                field: "messages".into(),
                item: "message".into(),
                route: 4,
                dedupe: h,
                received_at_ms: 1,
                raw: "{}".into(),
            }),
            Event::Invalid(InvalidEvent {
                reason: "missing_sender".into(),
                waba_id: "w".into(),
                field: "messages".into(),
                number_id: Some("1".into()),
                route: 5,
                dedupe: h,
                received_at_ms: 1,
                raw: "{}".into(),
            }),
        ];
        for ev in events {
            let bytes = ev.encode().unwrap();
            assert_eq!(Event::decode(ev.kind(), ev.version(), &bytes).unwrap(), ev);
        }
        assert!(matches!(
            Event::decode(99, 1, &[]),
            Err(CodecError::UnknownKind(99))
        ));
    }
}
