//! Dense numbering of the day's song and artist ids, and the hasher for our own integer keys.

use super::*;

/// A multiplicative hasher for integer keys we produce ourselves (ids and dense indices): no
/// attacker chooses them, and SipHash would be most of the cost of a lookup.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(n as u64);
    }
}

pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Ids of the day (songs or artists) numbered densely in order of first appearance.
///
/// Why two lookups: this runs twice per play on the one thread that feeds the tally, and catalog
/// ids are mostly small sequence numbers. For those a direct table (4 bytes per id up to the
/// largest seen, at most [`DIRECT_IDS`] entries) stays in cache where a hash map of the same ids
/// does not; any other id goes to the map.
#[derive(Default)]
pub(super) struct DenseIds {
    pub(super) direct: Vec<u32>,
    pub(super) map: IdMap<i64, u32>,
    pub(super) ids: Vec<i64>,
}

/// Ids below this are looked up in the direct table (16 MiB at most).
pub(super) const DIRECT_IDS: u64 = 1 << 22;
pub(super) const ABSENT: u32 = u32::MAX;

impl DenseIds {
    pub(super) fn index(&mut self, id: i64) -> Result<u32> {
        if (id as u64) < DIRECT_IDS {
            let slot = id as usize;
            if let Some(&i) = self.direct.get(slot)
                && i != ABSENT
            {
                return Ok(i);
            }
            let i = self.next()?;
            if slot >= self.direct.len() {
                self.direct.resize((slot + 1).next_power_of_two(), ABSENT);
            }
            self.direct[slot] = i;
            self.ids.push(id);
            return Ok(i);
        }
        if let Some(&i) = self.map.get(&id) {
            return Ok(i);
        }
        let i = self.next()?;
        self.map.insert(id, i);
        self.ids.push(id);
        Ok(i)
    }

    pub(super) fn next(&self) -> Result<u32> {
        u32::try_from(self.ids.len())
            .ok()
            .filter(|&i| i != ABSENT)
            .ok_or_else(|| Error::Internal("more than 4 billion distinct ids in a day".into()))
    }
}
