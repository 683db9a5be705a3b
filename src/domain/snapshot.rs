//! A dated feature snapshot held in memory for serving (every known user's
//! feature vector as of one time), and the rules every feature store
//! applies to stored snapshots: the header, retention and row width.
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

/// What a store records about one snapshot, written after its rows so a
/// snapshot becomes visible only once complete.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotHeader {
    pub as_of: i64,
    pub created_at: i64,
    pub fingerprint: String,
    pub feature_names: Vec<String>,
    pub users: u64,
}

/// Why a stored snapshot cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot header names are not a JSON list of identifiers: {0}")]
    Names(String),
    #[error("user {user} has {got} features in snapshot {as_of}, expected {expected}")]
    RowWidth {
        user: u64,
        got: usize,
        expected: usize,
        as_of: i64,
    },
}

impl SnapshotHeader {
    /// The stored form of the feature names (a JSON list).
    pub fn names_json(&self) -> String {
        serde_json::to_string(&self.feature_names).unwrap_or_else(|_| "[]".into())
    }

    /// Parses stored names; every one must be an identifier (they become
    /// SQL column names and model inputs).
    ///
    /// # Errors
    /// [`SnapshotError::Names`] for anything else.
    pub fn parse_names(json: &str) -> Result<Vec<String>, SnapshotError> {
        let names: Vec<String> =
            serde_json::from_str(json).map_err(|e| SnapshotError::Names(e.to_string()))?;
        if let Some(bad) = names.iter().find(|n| !super::identifier::is_identifier(n)) {
            return Err(SnapshotError::Names(format!("{bad:?}")));
        }
        Ok(names)
    }

    /// An empty in-memory snapshot for this header's rows.
    pub fn empty_snapshot(&self) -> FeatureSnapshot {
        let mut s = FeatureSnapshot::new(
            self.as_of,
            self.created_at,
            self.feature_names.clone(),
            self.fingerprint.clone(),
        );
        s.reserve(self.users as usize);
        s
    }
}

/// The `as_of` times a store keeps, newest first: the newest `retention`
/// (at least one). Everything else is deleted, headers and rows alike.
pub fn retained(mut as_ofs: Vec<i64>, retention: usize) -> Vec<i64> {
    as_ofs.sort_unstable_by(|a, b| b.cmp(a));
    as_ofs.dedup();
    as_ofs.truncate(retention.max(1));
    as_ofs
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

    /// Adds a stored row (already `f32`: no conversion on the way in).
    ///
    /// # Errors
    /// [`SnapshotError::RowWidth`] for a row of the wrong width.
    pub fn insert_stored(&mut self, user_id: u64, row: &[f32]) -> Result<(), SnapshotError> {
        let n = self.feature_names.len();
        if row.len() != n {
            return Err(SnapshotError::RowWidth {
                user: user_id,
                got: row.len(),
                expected: n,
                as_of: self.as_of,
            });
        }
        match self.index.get(&user_id) {
            Some(&i) => {
                let start = i as usize * n;
                self.values[start..start + n].copy_from_slice(row);
            }
            None => {
                let i = (self.values.len() / n.max(1)) as u32;
                self.values.extend_from_slice(row);
                self.index.insert(user_id, i);
            }
        }
        Ok(())
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

    /// The same snapshot without `users` (erasure): rows renumbered,
    /// everything else kept. `None` when none of them is in it.
    pub fn without(&self, users: &[u64]) -> Option<FeatureSnapshot> {
        if !users.iter().any(|u| self.index.contains_key(u)) {
            return None;
        }
        let n = self.feature_names.len();
        let mut kept = FeatureSnapshot::new(
            self.as_of,
            self.created_at,
            self.feature_names.clone(),
            self.fingerprint.clone(),
        );
        kept.reserve(self.len());
        let mut rows: Vec<(u64, usize)> =
            self.users().filter(|(u, _)| !users.contains(u)).collect();
        // Stable row order (the original one) keeps row-indexed tables
        // comparable.
        rows.sort_unstable_by_key(|(_, r)| *r);
        for (user, row) in rows {
            let i = (kept.values.len() / n.max(1)) as u32;
            kept.values
                .extend_from_slice(&self.values[row * n..(row + 1) * n]);
            kept.index.insert(user, i);
        }
        Some(kept)
    }

    /// Some user's row (for canary predictions).
    pub fn first_row(&self) -> Option<Vec<f64>> {
        let n = self.feature_names.len();
        (self.values.len() >= n && n > 0)
            .then(|| self.values[..n].iter().map(|v| f64::from(*v)).collect())
    }

    /// Every (user id, row) pair, in no particular order.
    pub fn users(&self) -> impl Iterator<Item = (u64, usize)> + '_ {
        self.index.iter().map(|(u, r)| (*u, *r as usize))
    }

    /// Every user id, indexed by row.
    pub fn users_by_row(&self) -> Vec<u64> {
        let mut out = vec![0u64; self.len()];
        for (u, r) in self.users() {
            if let Some(slot) = out.get_mut(r) {
                *slot = u;
            }
        }
        out
    }

    /// At most `max` rows spread evenly over the snapshot (every k-th),
    /// widened to `f64`, row-major, with their row numbers: bounded memory
    /// for statistics over a snapshot of any size.
    pub fn sample_rows(&self, max: usize) -> (Vec<usize>, Vec<f64>) {
        let n = self.feature_names.len();
        let stride = self.len().div_ceil(max.max(1)).max(1);
        let picked: Vec<usize> = (0..self.len()).step_by(stride).collect();
        let mut rows = Vec::with_capacity(picked.len() * n);
        for &r in &picked {
            rows.extend(
                self.values[r * n..(r + 1) * n]
                    .iter()
                    .map(|v| f64::from(*v)),
            );
        }
        (picked, rows)
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
        assert!(s.insert_stored(9, &[7.0, 8.0]).is_ok());
        assert_eq!(s.features(9), Some(vec![7.0, 8.0]));
        assert!(matches!(
            s.insert_stored(9, &[1.0]),
            Err(SnapshotError::RowWidth { got: 1, .. })
        ));
    }

    #[test]
    fn retention_keeps_the_newest_and_at_least_one() {
        assert_eq!(retained(vec![3, 1, 5, 4, 5], 3), vec![5, 4, 3]);
        assert_eq!(retained(vec![3, 1], 0), vec![3]);
        assert!(retained(vec![], 2).is_empty());
    }

    #[test]
    fn header_names_must_be_identifiers() {
        assert_eq!(
            SnapshotHeader::parse_names(r#"["a","b_2"]"#).unwrap(),
            vec!["a".to_string(), "b_2".into()]
        );
        assert!(SnapshotHeader::parse_names(r#"["a; DROP"]"#).is_err());
        assert!(SnapshotHeader::parse_names("not json").is_err());
    }
}
