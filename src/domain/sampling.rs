//! Which users a training or validation cutoff keeps when the rows are
//! capped (`training.max_training_rows`).
//!
//! The choice is a hash of the user id salted by the cutoff, compared with
//! a threshold. Every store applies it where the events are — a `WHERE`
//! before ClickHouse aggregates (so the server never groups the users it
//! would drop), a test in the embedded store's scan — and they agree row
//! for row because the hash is ClickHouse's own `intHash64`, written out
//! here. Uniform sampling keeps the churn rate and every feature's
//! distribution unbiased, so rows need no weights; salting by the cutoff
//! draws different users at each cutoff, so a stacked set spans more
//! users than one sample repeated.

use crate::domain::math::splitmix64;

/// Thresholds are in millionths: `keep` of every `SCALE` hash values pass.
pub const SCALE: u64 = 1_000_000;

/// A uniform sample of users at one cutoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowSample {
    keep: u64,
    salt: u64,
}

impl RowSample {
    /// Every row.
    pub const ALL: RowSample = RowSample {
        keep: SCALE,
        salt: 0,
    };

    /// About `share` of the users (clamped to one millionth … all) at
    /// `cutoff`.
    pub fn share_at(share: f64, cutoff: i64) -> Self {
        // NaN and anything from 1 up keep every row.
        if share.is_nan() || share >= 1.0 {
            return Self::ALL;
        }
        let keep = ((share.max(0.0) * SCALE as f64).round() as u64).clamp(1, SCALE);
        Self {
            keep,
            salt: splitmix64(cutoff as u64),
        }
    }

    /// The share that keeps about `max_rows` of `expected_rows` (all when
    /// `max_rows` is 0, i.e. no cap, or the rows fit).
    pub fn capped(max_rows: u64, expected_rows: f64, cutoff: i64) -> Self {
        if max_rows == 0 || expected_rows <= max_rows as f64 {
            Self::ALL
        } else {
            Self::share_at(max_rows as f64 / expected_rows, cutoff)
        }
    }

    pub fn is_all(&self) -> bool {
        self.keep >= SCALE
    }

    /// The expected share of users kept.
    pub fn share(&self) -> f64 {
        self.keep as f64 / SCALE as f64
    }

    /// Hash values below this pass (out of [`SCALE`]).
    pub fn keep(&self) -> u64 {
        self.keep
    }

    /// XORed into the user id before hashing.
    pub fn salt(&self) -> u64 {
        self.salt
    }

    pub fn keeps(&self, user_id: u64) -> bool {
        self.is_all() || int_hash64(user_id ^ self.salt) % SCALE < self.keep
    }
}

/// ClickHouse's SQL `intHash64`, bit for bit (the MurmurHash3 finaliser of
/// the input XOR a fixed constant: `IntHash64Impl` in its
/// FunctionsHashing.h), so the embedded store keeps the users a ClickHouse
/// `WHERE` keeps.
pub fn int_hash64(x: u64) -> u64 {
    let mut x = x ^ 0x4cf2_d2ba_ae6d_a887;
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_keeps_everyone_and_a_share_keeps_about_that_share() {
        assert!((0..1000).all(|u| RowSample::ALL.keeps(u)));
        assert_eq!(RowSample::capped(0, 1e9, 5), RowSample::ALL);
        assert_eq!(RowSample::capped(100, 100.0, 5), RowSample::ALL);
        let s = RowSample::capped(25_000, 100_000.0, 1_767_225_600);
        assert!((s.share() - 0.25).abs() < 1e-9);
        let kept = (0..100_000u64).filter(|u| s.keeps(*u)).count();
        // Binomial(100k, 0.25): sd ~137; 5 sd either side.
        assert!((24_300..=25_700).contains(&kept), "kept {kept}");
    }

    #[test]
    fn cutoffs_draw_different_users() {
        let (a, b) = (
            RowSample::share_at(0.5, 1_767_225_600),
            RowSample::share_at(0.5, 1_767_225_600 - 7 * 86_400),
        );
        let both = (0..10_000u64)
            .filter(|u| a.keeps(*u) && b.keeps(*u))
            .count();
        // Independent halves overlap on about a quarter.
        assert!((2_200..=2_800).contains(&both), "overlap {both}");
    }

    #[test]
    fn tiny_shares_keep_someone_and_hash_matches_clickhouse() {
        assert_eq!(RowSample::share_at(1e-12, 0).keep(), 1);
        assert!(RowSample::share_at(f64::NAN, 0).is_all());
        // `SELECT intHash64(0), intHash64(1)` on ClickHouse 18.16; the
        // store contract test checks the whole WHERE against the server.
        assert_eq!(int_hash64(0), 4_761_183_170_873_013_810);
        assert_eq!(int_hash64(1), 10_577_349_846_663_553_072);
    }
}
