//! [`Remembered`]: ids (128-bit hashes) remembered until a time, in 16
//! bytes each.
//!
//! The de-duplication of events and the once-only firing of triggers each
//! remember one id per event or record for days (`retention.dedup_ms`,
//! `retention.fired_ms`): millions of ids, the largest single piece of
//! state of a cart + price drop run. An entry packs 88 bits of the id (the
//! probability that two of a billion ids share them is below 1e-8) and the
//! time it is kept until, as 40 bits of milliseconds after a per-map base
//! (35 years), into 16 bytes; the table's hash is taken from the id's own
//! bits, never recomputed from its text.

use std::collections::HashMap;

use hashbrown::HashTable;

use crate::model::Time;

/// How many maps the ids are spread over (by their low bits), so that a
/// map growing copies one of them, not every id (a map briefly holds its
/// old and new tables).
const SHARDS: usize = 16;

/// Bits of an entry's second word that hold its time.
const OFF_BITS: u32 = 40;
const OFF_MASK: u64 = (1 << OFF_BITS) - 1;

/// Ids remembered until a time: once the frontier passes it, they are
/// forgotten. A map's forgotten entries are swept out in one pass once it
/// has doubled since its last sweep.
pub(crate) struct Remembered {
    shards: Vec<Shard>,
    /// Ids kept until before this time are forgotten (the frontier at the
    /// last `forget_before`).
    horizon: Time,
}

/// One entry: `hi` is bits 64..128 of the id (and its hash in the table);
/// `lo` is bits 40..64 of the id above [`OFF_BITS`] bits of time after the
/// map's `base`.
#[derive(Clone, Copy, Debug)]
struct Entry {
    hi: u64,
    lo: u64,
}

impl Entry {
    fn new(id: u128, off: u64) -> Self {
        Entry {
            hi: (id >> 64) as u64,
            lo: (((id >> 40) as u64) << OFF_BITS) | off,
        }
    }

    fn is(&self, id: u128) -> bool {
        let other = Entry::new(id, 0);
        self.hi == other.hi && self.lo >> OFF_BITS == other.lo >> OFF_BITS
    }

    fn off(&self) -> u64 {
        self.lo & OFF_MASK
    }

    fn set_off(&mut self, off: u64) {
        self.lo = (self.lo & !OFF_MASK) | off;
    }
}

struct Shard {
    table: HashTable<Entry>,
    /// Entry times are milliseconds after this.
    base: Time,
    /// The rare ids kept until further than the entries can say (more than
    /// 35 years after `base`, e.g. a saturated time).
    far: HashMap<u128, Time>,
    /// Entries left by the last sweep.
    swept_len: usize,
}

impl Shard {
    fn new(base: Time) -> Self {
        Shard {
            table: HashTable::new(),
            base,
            far: HashMap::new(),
            swept_len: 0,
        }
    }

    /// The time `id` is kept until, if it has an entry.
    fn until(&self, id: u128) -> Option<Time> {
        if let Some(e) = self.table.find(hash(id), |e| e.is(id)) {
            return Some(self.base + e.off());
        }
        self.far.get(&id).copied()
    }

    /// Sets the time `id` is kept until.
    fn set(&mut self, id: u128, until: Time) {
        if until < self.base {
            // Before the horizon: forgotten.
            if let Ok(e) = self.table.find_entry(hash(id), |e| e.is(id)) {
                e.remove();
            }
            self.far.remove(&id);
            return;
        }
        let off = until - self.base;
        let near = off <= OFF_MASK;
        match self.table.find_mut(hash(id), |e| e.is(id)) {
            Some(e) if near => e.set_off(off),
            Some(_) => {
                self.table
                    .find_entry(hash(id), |e| e.is(id))
                    .expect("just found")
                    .remove();
                self.far.insert(id, until);
            }
            None if near => {
                self.far.remove(&id);
                self.table
                    .insert_unique(hash(id), Entry::new(id, off), |e| e.hi);
            }
            None => {
                self.far.insert(id, until);
            }
        }
    }
}

/// The table hash of an id: its top 64 bits (random: the ids are hashes).
fn hash(id: u128) -> u64 {
    (id >> 64) as u64
}

impl Remembered {
    pub(crate) fn new() -> Self {
        Remembered {
            shards: (0..SHARDS).map(|_| Shard::new(0)).collect(),
            horizon: 0,
        }
    }

    #[cfg(test)]
    fn shard(&self, id: u128) -> &Shard {
        &self.shards[id as usize % SHARDS]
    }

    fn shard_mut(&mut self, id: u128) -> &mut Shard {
        &mut self.shards[id as usize % SHARDS]
    }

    /// The time `id` is kept until, when it is still remembered.
    #[cfg(test)]
    fn until(&self, id: u128) -> Option<Time> {
        self.shard(id).until(id).filter(|&u| u >= self.horizon)
    }

    /// Whether `id` is still remembered; if not, remembers it until `until`
    /// (in one lookup when it is new).
    pub(crate) fn remember(&mut self, id: u128, until: Time) -> bool {
        let horizon = self.horizon;
        let shard = self.shard_mut(id);
        let off = until.wrapping_sub(shard.base);
        if until >= shard.base && off <= OFF_MASK && shard.far.is_empty() {
            let base = shard.base;
            let entry = shard.table.entry(hash(id), |e| e.is(id), |e| e.hi);
            return match entry {
                hashbrown::hash_table::Entry::Occupied(mut o) => {
                    if base + o.get().off() >= horizon {
                        return true;
                    }
                    o.get_mut().set_off(off);
                    false
                }
                hashbrown::hash_table::Entry::Vacant(v) => {
                    v.insert(Entry::new(id, off));
                    false
                }
            };
        }
        if shard.until(id).is_some_and(|u| u >= horizon) {
            return true;
        }
        shard.set(id, until);
        false
    }

    /// Keeps `id` until `until` (remembered or not).
    pub(crate) fn set_until(&mut self, id: u128, until: Time) {
        self.shard_mut(id).set(id, until);
    }

    /// Forgets the ids whose time is below `frontier` (all, when it is empty).
    pub(crate) fn forget_before(&mut self, frontier: Option<Time>) {
        let Some(horizon) = frontier else {
            self.horizon = Time::MAX;
            for s in &mut self.shards {
                *s = Shard::new(0);
            }
            return;
        };
        self.horizon = horizon;
        for s in &mut self.shards {
            let len = s.table.len() + s.far.len();
            if len <= (2 * s.swept_len).max(1 << 10) {
                continue;
            }
            // Sweep, and move the base up to the horizon: every entry left
            // is kept until at or after it.
            let (base, shift) = (s.base, horizon.saturating_sub(s.base));
            s.table.retain(|e| {
                if base + e.off() < horizon {
                    return false;
                }
                e.set_off(e.off() - shift);
                true
            });
            s.base = base + shift;
            s.far.retain(|_, u| *u >= horizon);
            s.swept_len = s.table.len() + s.far.len();
            if s.table.capacity() > 4 * s.swept_len.max(1 << 10) {
                s.table.shrink_to_fit(|e| e.hi);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> u128 {
        // Spread like a hash: distinct in every part of the id.
        let x = (n as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
        x ^ (x >> 61)
    }

    #[test]
    fn remembers_until_the_horizon_passes() {
        let mut r = Remembered::new();
        assert!(!r.remember(id(1), 100));
        assert!(r.remember(id(1), 500));
        assert_eq!(r.until(id(1)), Some(100));
        r.forget_before(Some(100));
        assert!(r.remember(id(1), 300));
        r.forget_before(Some(101));
        assert_eq!(r.until(id(1)), None);
        assert!(!r.remember(id(1), 300), "forgotten, remembered anew");
        assert_eq!(r.until(id(1)), Some(300));
    }

    #[test]
    fn far_times_and_sweeps_keep_every_time_exact() {
        let mut r = Remembered::new();
        let n = 50_000u64;
        for i in 0..n {
            let until = if i % 1000 == 7 {
                Time::MAX - i
            } else {
                1_000 + i
            };
            assert!(!r.remember(id(i), until));
        }
        for step in [0, 10_000, 30_000] {
            r.forget_before(Some(1_000 + step));
            for i in 0..n {
                let until = if i % 1000 == 7 {
                    Time::MAX - i
                } else {
                    1_000 + i
                };
                let kept = until >= 1_000 + step;
                assert_eq!(r.until(id(i)), kept.then_some(until), "id {i} at {step}");
            }
        }
        // Refill after sweeps moved the base: times stay exact.
        for i in n..2 * n {
            assert!(!r.remember(id(i), 40_000 + i));
            assert_eq!(r.until(id(i)), Some(40_000 + i));
        }
        r.set_until(id(n), 7);
        assert_eq!(r.until(id(n)), None, "below the horizon");
        r.set_until(id(n), Time::MAX);
        assert_eq!(r.until(id(n)), Some(Time::MAX));
        r.forget_before(None);
        assert_eq!(r.until(id(n)), None);
    }
}
