//! A dated feature snapshot held in memory for serving: every known user's
//! feature vector as of one time.
//!
//! Values are kept as `f32` (half the memory of `f64`: about 200 bytes per
//! user with the standard spec). Training rows go through the same
//! [`quantize`] so the model sees exactly the numbers serving will give it.

use std::collections::HashMap;

/// Rounds a feature value to the precision snapshots store, so that training
/// and serving feed identical numbers to the model.
pub fn quantize(v: f64) -> f64 {
    f64::from(v as f32)
}

/// Every user's features as of `as_of`, with O(1) lookup by user id.
#[derive(Debug, Clone, Default)]
pub struct FeatureSnapshot {
    as_of: i64,
    created_at: i64,
    feature_names: Vec<String>,
    fingerprint: String,
    index: HashMap<u64, u32>,
    values: Vec<f32>,
    as_of_rfc3339: String,
}

impl FeatureSnapshot {
    /// An empty snapshot ready to take rows of `feature_names.len()` values.
    pub fn new(
        as_of: i64,
        created_at: i64,
        feature_names: Vec<String>,
        fingerprint: String,
    ) -> Self {
        Self {
            as_of,
            created_at,
            feature_names,
            fingerprint,
            index: HashMap::new(),
            values: Vec::new(),
            as_of_rfc3339: super::time::format_rfc3339(as_of),
        }
    }

    pub fn reserve(&mut self, users: usize) {
        self.index.reserve(users);
        self.values.reserve(users * self.feature_names.len());
    }

    /// Adds or replaces a user's row; rows of the wrong width are ignored
    /// and reported as `false`.
    pub fn insert(&mut self, user_id: u64, row: &[f64]) -> bool {
        let n = self.feature_names.len();
        if row.len() != n {
            return false;
        }
        match self.index.get(&user_id) {
            Some(&i) => {
                let start = i as usize * n;
                for (dst, src) in self.values[start..start + n].iter_mut().zip(row) {
                    *dst = *src as f32;
                }
            }
            None => {
                let i = (self.values.len() / n.max(1)) as u32;
                self.values.extend(row.iter().map(|v| *v as f32));
                self.index.insert(user_id, i);
            }
        }
        true
    }

    /// A user's features widened to `f64` (the models' input type).
    pub fn features(&self, user_id: u64) -> Option<Vec<f64>> {
        let n = self.feature_names.len();
        let i = *self.index.get(&user_id)? as usize;
        Some(
            self.values[i * n..(i + 1) * n]
                .iter()
                .map(|v| f64::from(*v))
                .collect(),
        )
    }

    /// Some user's row (for canary predictions).
    pub fn first_row(&self) -> Option<Vec<f64>> {
        let n = self.feature_names.len();
        (self.values.len() >= n && n > 0)
            .then(|| self.values[..n].iter().map(|v| f64::from(*v)).collect())
    }

    /// The row number of a user (stable for this snapshot).
    pub fn row_of(&self, user_id: u64) -> Option<usize> {
        self.index.get(&user_id).map(|i| *i as usize)
    }

    /// Rows `range` widened to `f64`, row-major (batch scoring input).
    pub fn rows_f64(&self, range: std::ops::Range<usize>) -> Vec<f64> {
        let n = self.feature_names.len();
        let end = range.end.min(self.len());
        let start = range.start.min(end);
        self.values[start * n..end * n]
            .iter()
            .map(|v| f64::from(*v))
            .collect()
    }

    pub fn contains(&self, user_id: u64) -> bool {
        self.index.contains_key(&user_id)
    }
    pub fn as_of(&self) -> i64 {
        self.as_of
    }
    /// `as_of` formatted once (every prediction reports it).
    pub fn as_of_rfc3339(&self) -> &str {
        &self.as_of_rfc3339
    }
    pub fn created_at(&self) -> i64 {
        self.created_at
    }
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
    pub fn len(&self) -> usize {
        self.index.len()
    }
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
    /// Approximate heap size in bytes (reported as a metric).
    pub fn heap_bytes(&self) -> usize {
        self.values.capacity() * 4 + self.index.capacity() * 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_lookup_replace() {
        let mut s = FeatureSnapshot::new(10, 11, vec!["a".into(), "b".into()], "fp".into());
        assert!(s.insert(7, &[1.0, 2.5]));
        assert!(s.insert(9, &[3.0, 4.0]));
        assert!(!s.insert(8, &[1.0]));
        assert!(s.insert(7, &[5.0, 6.0]));
        assert_eq!(s.len(), 2);
        assert_eq!(s.features(7), Some(vec![5.0, 6.0]));
        assert_eq!(s.features(9), Some(vec![3.0, 4.0]));
        assert_eq!(s.features(8), None);
        assert_eq!(quantize(0.1), f64::from(0.1f32));
    }
}
