//! A bounded in-memory front for the store's answers index: a Bloom filter
//! of the request keys it holds.
//!
//! On a first run nearly every row's request is new, and looking it up in
//! the answers index (a random seek in a B-tree that outgrows SQLite's page
//! cache on large lists) cost about 3 µs of the 33 µs a row took at 1 M rows.
//! A key the filter has never seen cannot be in the index, so that lookup is
//! skipped; a key it may have seen is looked up as before. The filter's size
//! is fixed: on a list larger than it was sized for, more lookups happen,
//! never a wrong answer. Each generation of fresh answers (see `answers.rs`)
//! has a small filter of its own, sized by its keys, so that a lookup visits
//! only the generations that may hold its key.

use std::collections::BTreeMap;

use super::Store;
use crate::wechat::RequestKey;

/// 8 MiB: by the Bloom filter formula, about 1 % false positives at 5 M
/// keys and 5 % at 10 M. At 4 MiB (20 % at 10 M) the lookups of false
/// positives made 10 M rows 6–9 % slower than this, for 4 MiB less memory.
const BITS: usize = 1 << 26;
/// Bits per key of a generation's filter: 3 % false positives.
const GENERATION_BITS_PER_KEY: usize = 8;
/// Bits set per key, taken from the key's own bytes (a SHA-256 prefix).
const PROBES: usize = 3;

/// A Bloom filter whose probes are read from the key's bytes at `offset`.
pub(super) struct Bloom {
    words: Vec<u64>,
    offset: usize,
}

impl Bloom {
    /// `bits` rounded up to a multiple of 64.
    fn new(bits: usize, offset: usize) -> Bloom {
        Bloom {
            words: vec![0; bits.div_ceil(64).max(1)],
            offset,
        }
    }

    fn positions(&self, key: &RequestKey) -> impl Iterator<Item = usize> + use<> {
        let (offset, bits) = (self.offset, (self.words.len() * 64) as u64);
        let key = *key;
        (0..PROBES).map(move |i| {
            let at = offset + i * 4;
            let bytes: [u8; 4] = key[at..at + 4].try_into().expect("4 bytes");
            // A hash scaled onto `0..bits`, without a division.
            ((u64::from(u32::from_le_bytes(bytes)) * bits) >> 32) as usize
        })
    }

    fn insert(&mut self, key: &RequestKey) {
        for bit in self.positions(key) {
            self.words[bit / 64] |= 1 << (bit % 64);
        }
    }

    /// False when `key` was certainly never inserted.
    fn may_contain(&self, key: &RequestKey) -> bool {
        self.positions(key)
            .all(|bit| self.words[bit / 64] & (1 << (bit % 64)) != 0)
    }

    /// An empty filter for a generation of `keys` keys.
    fn for_generation(keys: usize) -> Bloom {
        // The first two bytes choose the slice: the probes read past them.
        Bloom::new(keys.max(1) * GENERATION_BITS_PER_KEY, 4)
    }

    /// A filter of one generation's `keys`.
    pub(super) fn of_generation<'k>(keys: impl ExactSizeIterator<Item = &'k RequestKey>) -> Bloom {
        let mut bloom = Bloom::for_generation(keys.len());
        for key in keys {
            bloom.insert(key);
        }
        bloom
    }
}

/// Filters of the keys in the answers index: one of them all, and one per
/// generation of `answers_fresh`, dropped once the generation has moved.
pub struct KeyFilter {
    all: Bloom,
    generations: BTreeMap<i64, Bloom>,
}

impl KeyFilter {
    fn new() -> KeyFilter {
        KeyFilter {
            all: Bloom::new(BITS, 0),
            generations: BTreeMap::new(),
        }
    }

    pub fn insert(&mut self, key: &RequestKey) {
        self.all.insert(key);
    }

    /// False when `key` was certainly never inserted.
    pub fn may_contain(&self, key: &RequestKey) -> bool {
        self.all.may_contain(key)
    }

    /// False when `key` is certainly not in generation `generation`.
    pub fn generation_may_contain(&self, generation: i64, key: &RequestKey) -> bool {
        self.generations
            .get(&generation)
            .is_none_or(|bloom| bloom.may_contain(key))
    }

    pub(super) fn add_generation(&mut self, generation: i64, bloom: Bloom) {
        self.generations.insert(generation, bloom);
    }

    /// Generations up to `generation` moved into the index in full.
    pub fn forget_generations_through(&mut self, generation: i64) {
        self.generations = self.generations.split_off(&(generation + 1));
    }

    /// A filter of every key in the store's answers index.
    pub fn of(store: &Store) -> rusqlite::Result<KeyFilter> {
        let mut filter = KeyFilter::new();
        let mut stmt = store.conn.prepare("SELECT key FROM answers")?;
        read_keys(&mut stmt, [], |key| filter.all.insert(&key))?;
        // A generation's keys are read once, and its filter sized by them.
        let mut stmt = store
            .conn
            .prepare_cached("SELECT key FROM answers_fresh WHERE gen = ?1")?;
        let mut keys = Vec::new();
        for generation in store.gens.not_moved_in_full() {
            keys.clear();
            read_keys(&mut stmt, [generation], |key| keys.push(key))?;
            if keys.is_empty() {
                continue;
            }
            keys.iter().for_each(|key| filter.all.insert(key));
            filter
                .generations
                .insert(generation, Bloom::of_generation(keys.iter()));
        }
        for key in store.pending_answers.keys() {
            filter.all.insert(key);
        }
        Ok(filter)
    }
}

/// Calls `each` with every key that `stmt` returns; a damaged key of
/// another length is skipped.
fn read_keys(
    stmt: &mut rusqlite::Statement<'_>,
    params: impl rusqlite::Params,
    mut each: impl FnMut(RequestKey),
) -> rusqlite::Result<()> {
    let mut rows = stmt.query(params)?;
    while let Some(row) = rows.next()? {
        if let Ok(key) = RequestKey::try_from(row.get_ref(0)?.as_blob()?) {
            each(key);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> RequestKey {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(n.to_le_bytes());
        digest[..16].try_into().unwrap()
    }

    #[test]
    fn every_inserted_key_is_found_and_most_others_are_not() {
        let mut filter = KeyFilter::new();
        for n in 0..100_000 {
            filter.insert(&key(n));
        }
        assert!((0..100_000).all(|n| filter.may_contain(&key(n))));
        let false_positives = (100_000..200_000)
            .filter(|n| filter.may_contain(&key(*n)))
            .count();
        assert!(false_positives < 10, "{false_positives}");
    }

    #[test]
    fn a_generation_finds_its_keys_until_forgotten() {
        let mut filter = KeyFilter::new();
        let keys: Vec<_> = (0..40_000).map(key).collect();
        for (generation, keys) in keys.chunks(10_000).enumerate() {
            filter.add_generation(generation as i64, Bloom::of_generation(keys.iter()));
        }
        assert!(
            keys[10_000..20_000]
                .iter()
                .all(|k| filter.generation_may_contain(1, k))
        );
        let strangers = keys[20_000..]
            .iter()
            .filter(|k| filter.generation_may_contain(1, k))
            .count();
        // 8 bits per key: 3 % of 20,000 by the formula.
        assert!(strangers < 900, "{strangers}");
        filter.forget_generations_through(2);
        assert!(
            keys.iter().all(|k| filter.generation_may_contain(1, k)),
            "unknown: may hold"
        );
        assert!(
            keys[30_000..]
                .iter()
                .all(|k| filter.generation_may_contain(3, k))
        );
    }
}
