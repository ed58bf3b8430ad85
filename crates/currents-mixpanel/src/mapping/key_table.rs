//! What becomes of each property key of a known event type, decided once.
//!
//! Deciding it per property (rename, envelope check, a search of the type's
//! export list, a search of its schema) was the mapping's largest cost. Every
//! key Braze's tables mention gets a small number here, and each type a bit
//! per number saying whether it is sent; a lookup is then one hash and one
//! comparison. Keys the tables never mention are new fields, always sent.

use std::sync::LazyLock;

use currents_model::EventType;

use super::{output_key_for, rules};

/// What happens to one property key of a known type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyFate {
    /// Sent under this (possibly renamed) key.
    Sent(&'static str),
    /// Not sent: not on the type's export list, or an envelope key.
    Dropped,
    /// Sent under its own key: for a known type, a key no table mentions
    /// (a field Braze added since).
    SentAsIs,
}

/// The fate of `key` in an event of type `event_type`.
pub(super) fn fate(event_type: EventType, key: &str) -> KeyFate {
    let table = &*TABLE;
    let Some(idx) = table.index_of(key) else {
        return KeyFate::SentAsIs;
    };
    let bit = event_type as usize * table.n_names + idx;
    if table.sent[bit / 64] & (1 << (bit % 64)) != 0 {
        KeyFate::Sent(table.output[idx])
    } else {
        KeyFate::Dropped
    }
}

static TABLE: LazyLock<KeyTable> = LazyLock::new(KeyTable::build);

struct KeyTable {
    /// Every key the tables mention.
    names: Vec<&'static str>,
    n_names: usize,
    /// The key each name is sent under (the rename, or itself).
    output: Vec<&'static str>,
    /// Open-addressing hash index: `index + 1` into `names`, 0 when empty.
    slots: Vec<u16>,
    /// Bit `type * n_names + name`: whether that type sends that key.
    sent: Vec<u64>,
}

impl KeyTable {
    fn build() -> KeyTable {
        let mut names: Vec<&'static str> = EventType::ALL
            .iter()
            .flat_map(|event_type| event_type.fields().iter().map(|field| field.name))
            .chain(EventType::ALL.iter().flat_map(|event_type| {
                match rules::lookup_known(*event_type).properties {
                    rules::PropertyList::All => &[][..],
                    rules::PropertyList::Only(keys) => keys,
                }
                .iter()
                .copied()
            }))
            .chain(super::ENVELOPE_KEYS)
            .chain(super::RENAMES.iter().flat_map(|(from, to)| [*from, *to]))
            .collect();
        names.sort_unstable();
        names.dedup();
        let n_names = names.len();
        assert!(
            n_names < usize::from(u16::MAX),
            "too many keys for u16 slots"
        );

        let n_slots = (n_names * 4).next_power_of_two();
        let mut slots = vec![0u16; n_slots];
        for (idx, name) in names.iter().enumerate() {
            let mut slot = slot_of(name, n_slots);
            while slots[slot] != 0 {
                slot = (slot + 1) & (n_slots - 1);
            }
            slots[slot] = (idx + 1) as u16;
        }

        let n_types = EventType::ALL.len();
        let mut sent = vec![0u64; (n_types * n_names).div_ceil(64)];
        let mut output = Vec::with_capacity(n_names);
        for name in &names {
            output.push(super::renamed(name).unwrap_or(name));
        }
        for event_type in EventType::ALL {
            let list = rules::lookup_known(event_type).properties;
            for (idx, name) in names.iter().enumerate() {
                if output_key_for(Some(event_type), list, name).is_some() {
                    let bit = event_type as usize * n_names + idx;
                    sent[bit / 64] |= 1 << (bit % 64);
                }
            }
        }
        KeyTable {
            names,
            n_names,
            output,
            slots,
            sent,
        }
    }

    fn index_of(&self, key: &str) -> Option<usize> {
        let mask = self.slots.len() - 1;
        let mut slot = slot_of(key, self.slots.len());
        loop {
            let entry = usize::from(self.slots[slot]);
            if entry == 0 {
                return None;
            }
            if self.names[entry - 1] == key {
                return Some(entry - 1);
            }
            slot = (slot + 1) & mask;
        }
    }
}

/// A multiplicative hash of a key's length and its first and last eight
/// bytes: enough to tell these keys apart, and cheap. A collision or a
/// hostile key only costs more probes, never a wrong answer.
fn slot_of(key: &str, n_slots: usize) -> usize {
    let bytes = key.as_bytes();
    let (head, tail) = if bytes.len() >= 8 {
        let first: [u8; 8] = bytes[..8].try_into().expect("8 bytes");
        let last: [u8; 8] = bytes[bytes.len() - 8..].try_into().expect("8 bytes");
        (u64::from_le_bytes(first), u64::from_le_bytes(last))
    } else {
        let mut word = [0u8; 8];
        word[..bytes.len()].copy_from_slice(bytes);
        (u64::from_le_bytes(word), 0)
    };
    let hash =
        (head ^ tail.rotate_left(31) ^ bytes.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (hash >> 32) as usize & (n_slots - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fate_matches_the_rules() {
        let table = &*TABLE;
        let mut probes: Vec<&str> = table.names.clone();
        probes.extend([
            "",
            "x",
            "unknown_field",
            "campaign_nam",
            "canvas_step_message_variation_idx",
        ]);
        for event_type in EventType::ALL {
            let list = rules::lookup_known(event_type).properties;
            for key in &probes {
                let expected = match output_key_for(Some(event_type), list, key) {
                    Some(output) if table.index_of(key).is_none() => {
                        assert_eq!(output, *key);
                        KeyFate::SentAsIs
                    }
                    Some(output) => KeyFate::Sent(output),
                    None => KeyFate::Dropped,
                };
                assert_eq!(fate(event_type, key), expected, "{event_type:?} {key:?}");
            }
        }
    }

    #[test]
    fn every_name_is_found_at_its_index() {
        let table = &*TABLE;
        for (idx, name) in table.names.iter().enumerate() {
            assert_eq!(table.index_of(name), Some(idx));
        }
        assert!(
            table.names.len() > 200,
            "the tables mention hundreds of keys"
        );
    }
}
