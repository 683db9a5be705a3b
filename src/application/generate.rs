//! `generate_events`: seeded, realistic demo events (a utility for demos,
//! tests and benchmarks — production events arrive through ingestion).
//!
//! Each user gets a signup day, a personal activity rate (log-normal), weekly
//! seasonality and sessions of login → views → maybe add_to_cart → maybe
//! purchase → maybe logout, with occasional support tickets. A share of users
//! churn: most let their engagement decay for a few weeks first (and file
//! more tickets), some stop abruptly, some churn only after the data ends.
//! Healthy users take breaks too, so recency alone is a decent but imperfect
//! signal and a model has something real to learn.

use crate::application::ingest::{Delivery, IngestError, IngestEvents, IngestReport, SourceKind};
use crate::domain::event::{Event, TimePolicy};
use crate::domain::math::splitmix64;
use crate::domain::time::DAY_SECS;
use crate::domain::user::UserId;

/// Generator parameters.
#[derive(Debug, Clone, Copy)]
pub struct GeneratorOptions {
    pub users: u64,
    pub days: u32,
    /// The last second of generated data (seconds since the epoch).
    pub end: i64,
    pub seed: u64,
    /// Share of users who churn at some point (before or after `end`).
    pub churn_share: f64,
    /// Users get UUID-shaped string ids instead of 1, 2, 3, … (a seeded
    /// function of the number, so the same options give the same ids).
    pub string_ids: bool,
}

/// The id of generated user `n`: the number, or a UUID-shaped string.
pub fn user_id_of(n: u64, string_ids: bool) -> UserId {
    if !string_ids {
        return UserId::Int(n);
    }
    let (a, b) = (splitmix64(n), splitmix64(n ^ 0x5555_5555_5555_5555));
    UserId::Name(
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0x0fff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
        .into(),
    )
}

/// Totals of a generation run.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct GenerateSummary {
    pub users: u64,
    pub events: u64,
    pub churners: u64,
}

/// Generates events and passes them through the ingestion pipeline as one
/// delivery, `ingest.batch_size` at a time (the demo's and the tests'
/// load). The run is deterministic, so running it again stores nothing new.
///
/// # Errors
/// [`IngestError`] when the store fails; batches before it stay stored.
pub async fn ingest_generated(
    ingest: &IngestEvents,
    opts: GeneratorOptions,
) -> Result<(GenerateSummary, IngestReport), IngestError> {
    let mut events = Vec::new();
    let summary = generate(opts, |e| events.push(e));
    let mut delivery = Delivery::new(SourceKind::Generator);
    let mut report = IngestReport::default();
    let mut rest = events.into_iter().peekable();
    while rest.peek().is_some() {
        let chunk: Vec<Event> = rest.by_ref().take(ingest.batch_size()).collect();
        report += ingest.process_events(chunk, &mut delivery).await?;
    }
    Ok((summary, report))
}

/// Generates events user by user (each user's events in time order) and
/// hands them to `sink`. Deterministic for a given `opts`.
pub fn generate(opts: GeneratorOptions, mut sink: impl FnMut(Event)) -> GenerateSummary {
    generate_while(opts, |e| {
        sink(e);
        true
    })
}

/// As [`generate`], stopping as soon as `sink` returns false (the caller
/// went away): a cancelled request costs at most the events already made.
pub fn generate_while(
    opts: GeneratorOptions,
    mut sink: impl FnMut(Event) -> bool,
) -> GenerateSummary {
    let mut summary = GenerateSummary::default();
    let policy = TimePolicy::at(opts.end, 0);
    let start = opts.end - i64::from(opts.days) * DAY_SECS;
    for user in 1..=opts.users {
        // Per-user streams make a user's history independent of how many
        // users are generated.
        let mut rng =
            fastrand::Rng::with_seed(opts.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ user);
        let profile = Profile::draw(&mut rng, opts);
        if profile.churns_before_end {
            summary.churners += 1;
        }
        summary.users += 1;
        let id = user_id_of(user, opts.string_ids);
        let mut session_no = 0u32;
        for day in profile.signup_day..opts.days as i64 {
            let rate = profile.rate_on(day, &mut rng);
            if rate <= 0.0 {
                continue;
            }
            let sessions = poisson(&mut rng, rate);
            let day_start = start + day * DAY_SECS;
            let mut starts: Vec<i64> = (0..sessions)
                .map(|_| day_start + rng.i64(6 * 3_600..DAY_SECS - 3_600))
                .collect();
            starts.sort_unstable();
            for t0 in starts {
                session_no += 1;
                let session = format!("u{user}-s{session_no}");
                let near_end = profile.near_churn(day);
                for (t, kind, amount) in session_events(&mut rng, t0, near_end) {
                    if t > opts.end {
                        break;
                    }
                    if let Ok(e) = Event::new(id.clone(), t, kind, Some(&session), amount, policy) {
                        summary.events += 1;
                        if !sink(e) {
                            return summary;
                        }
                    }
                }
            }
        }
    }
    summary
}

struct Profile {
    signup_day: i64,
    base_rate: f64,
    /// Day the user stops (may be after the data ends); `None` = stays.
    churn_day: Option<i64>,
    decay_days: i64,
    churns_before_end: bool,
    break_days: Option<(i64, i64)>,
}

impl Profile {
    fn draw(rng: &mut fastrand::Rng, opts: GeneratorOptions) -> Self {
        let days = i64::from(opts.days);
        // Half the users predate the data; the rest sign up over time.
        let signup_day = if rng.bool() {
            0
        } else {
            rng.i64(0..(days - 7).max(1))
        };
        let base_rate = lognormal(rng, (0.35f64).ln(), 0.8).clamp(0.03, 4.0);
        let churn_day = (rng.f64() < opts.churn_share)
            .then(|| signup_day + 5 + rng.i64(0..(days + 30 - signup_day).max(1)));
        // 70% of churners fade out over 1-6 weeks, the rest stop abruptly.
        let decay_days = if rng.f64() < 0.7 { rng.i64(7..42) } else { 0 };
        let break_days = (rng.f64() < 0.25).then(|| {
            let b = rng.i64(signup_day..days.max(signup_day + 1));
            (b, b + rng.i64(5..25))
        });
        Self {
            signup_day,
            base_rate,
            churn_day,
            decay_days,
            churns_before_end: churn_day.is_some_and(|c| c < days),
            break_days,
        }
    }

    fn near_churn(&self, day: i64) -> bool {
        self.churn_day
            .is_some_and(|c| day >= c - self.decay_days.max(7) && day < c)
    }

    /// Expected sessions on `day`.
    fn rate_on(&self, day: i64, rng: &mut fastrand::Rng) -> f64 {
        if let Some(c) = self.churn_day {
            if day >= c {
                return 0.0;
            }
            if self.decay_days > 0 && day >= c - self.decay_days {
                let into = (day - (c - self.decay_days)) as f64 / self.decay_days as f64;
                return self.base_rate * (-3.0 * into).exp() * weekly(day);
            }
        }
        if let Some((from, to)) = self.break_days
            && day >= from
            && day < to
        {
            return 0.0;
        }
        // Day-to-day mood: some days are busier than others.
        self.base_rate * weekly(day) * (0.5 + rng.f64())
    }
}

fn weekly(day: i64) -> f64 {
    if day.rem_euclid(7) >= 5 { 0.75 } else { 1.05 }
}

/// One session's events: (time, type, amount).
fn session_events(
    rng: &mut fastrand::Rng,
    t0: i64,
    near_churn: bool,
) -> Vec<(i64, &'static str, Option<f64>)> {
    let mut out = vec![(t0, "login", None)];
    let mut t = t0;
    let mut step = |rng: &mut fastrand::Rng| {
        t += rng.i64(5..300);
        t
    };
    let views = 1 + poisson(rng, 2.5);
    let mut carted = false;
    for _ in 0..views {
        out.push((step(rng), "view", None));
        if rng.f64() < 0.15 {
            carted = true;
            out.push((step(rng), "add_to_cart", None));
        }
    }
    if carted && rng.f64() < 0.45 {
        let amount = (lognormal(rng, (35.0f64).ln(), 0.6) * 100.0).round() / 100.0;
        out.push((step(rng), "purchase", Some(amount)));
    }
    let ticket_p = if near_churn { 0.2 } else { 0.02 };
    if rng.f64() < ticket_p {
        out.push((step(rng), "support_ticket", None));
    }
    if rng.f64() < 0.7 {
        out.push((step(rng), "logout", None));
    }
    out
}

fn standard_normal(rng: &mut fastrand::Rng) -> f64 {
    // Box–Muller; 1 - f64() avoids ln(0).
    let u1 = 1.0 - rng.f64();
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn lognormal(rng: &mut fastrand::Rng, mu: f64, sigma: f64) -> f64 {
    (mu + sigma * standard_normal(rng)).exp()
}

/// Knuth's Poisson sampler: fine for the small rates used here.
fn poisson(rng: &mut fastrand::Rng, lambda: f64) -> u32 {
    let l = (-lambda.min(30.0)).exp();
    let (mut k, mut p) = (0u32, 1.0);
    loop {
        p *= rng.f64();
        if p <= l {
            return k;
        }
        k += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(users: u64, seed: u64) -> GeneratorOptions {
        GeneratorOptions {
            users,
            days: 120,
            end: 1_767_225_600,
            seed,
            churn_share: 0.35,
            string_ids: false,
        }
    }

    #[test]
    fn deterministic_bounded_and_varied() {
        let mut a = Vec::new();
        let s = generate(opts(50, 7), |e| a.push(e));
        let mut b = Vec::new();
        generate(opts(50, 7), |e| b.push(e));
        assert_eq!(a, b);
        let mut c = Vec::new();
        generate(opts(50, 8), |e| c.push(e));
        assert_ne!(a, c);
        assert_eq!(s.events as usize, a.len());
        assert!(a.len() > 1_000, "{}", a.len());
        let end = 1_767_225_600;
        assert!(
            a.iter()
                .all(|e| e.event_time() <= end && e.event_time() > end - 121 * DAY_SECS)
        );
        for kind in ["login", "view", "add_to_cart", "purchase", "logout"] {
            assert!(a.iter().any(|e| e.event_type() == kind), "{kind}");
        }
        assert!(
            a.iter()
                .filter(|e| e.event_type() == "purchase")
                .all(|e| e.amount().is_some())
        );
    }
}
