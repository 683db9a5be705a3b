//! The live-features property, over a real store: for random specs and
//! random event streams delivered in random order (late events, and a
//! redelivery of a whole delivery), the live features of every user at
//! random times equal a batch computation as of those times. Seeded, so a
//! failure names the seed that reproduces it.

#![allow(dead_code)] // each test crate uses a subset

use std::sync::Arc;

use churn::application::ingest::{Delivery, IngestEvents, SourceKind};
use churn::application::live_features::{LiveFeatures, LiveOptions, Lookup};
use churn::application::ports::{EventStore, FeatureStore};
use churn::domain::event::{Event, TimePolicy};
use churn::domain::features::{Aggregation, AmountSign, FeatureDef, FeatureSpec};

const T0: i64 = 1_767_225_600; // 2026-01-01
const DAY: i64 = 86_400;
const TYPES: [&str; 4] = ["login", "purchase", "support_ticket", "view"];

/// A random spec: aggregations with random type filters, windows and
/// amount signs, then ratios over them.
pub fn random_spec(rng: &mut fastrand::Rng) -> FeatureSpec {
    let aggs: Vec<Aggregation> = Aggregation::ALL
        .into_iter()
        .filter(|a| *a != Aggregation::Ratio)
        .collect();
    let n = rng.usize(1..10);
    let mut defs: Vec<FeatureDef> = (0..n)
        .map(|i| {
            let types: Vec<&str> = (0..rng.usize(0..3))
                .map(|_| TYPES[rng.usize(..TYPES.len())])
                .collect();
            let window = [None, Some(1), Some(3), Some(7), Some(30)][rng.usize(..5)];
            let mut d = FeatureDef::aggregate(
                format!("f{i}"),
                aggs[rng.usize(..aggs.len())],
                &types,
                window,
            );
            d.amount_sign =
                [None, Some(AmountSign::Positive), Some(AmountSign::Negative)][rng.usize(..3)];
            d
        })
        .collect();
    for k in 0..rng.usize(0..3) {
        let (a, b) = (rng.usize(..defs.len()), rng.usize(..defs.len()));
        let (num, den) = (defs[a].name.clone(), defs[b].name.clone());
        defs.push(FeatureDef::ratio(format!("r{k}"), &num, &den, 3.0));
    }
    FeatureSpec::new(defs, "random").unwrap()
}

/// Random events of users `base + 1 ..= base + users` over 60 days, cut
/// into deliveries.
pub fn random_deliveries(rng: &mut fastrand::Rng, base: u64, users: u64) -> Vec<Vec<Event>> {
    let policy = TimePolicy::at(T0 + 400 * DAY, 0);
    let events: Vec<Event> = (0..rng.usize(20..200))
        .map(|_| {
            let user = base + rng.u64(1..=users);
            let time = T0 + rng.i64(0..60 * DAY);
            let kind = TYPES[rng.usize(..TYPES.len())];
            let session = rng.bool().then(|| format!("s{}", rng.u8(0..5)));
            let amount = match rng.u8(0..3) {
                0 => None,
                1 => Some(f64::from(rng.i32(1..500)) * 0.01),
                _ => Some(-f64::from(rng.i32(1..500)) * 0.03),
            };
            Event::new(user, time, kind, session.as_deref(), amount, policy).unwrap()
        })
        .collect();
    // Deliveries in random order, not time order: later deliveries carry
    // events older than ones already stored (late events).
    let mut deliveries: Vec<Vec<Event>> = events
        .chunks(rng.usize(10..60))
        .map(<[Event]>::to_vec)
        .collect();
    rng.shuffle(&mut deliveries);
    deliveries
}

/// Runs `cases` seeds against one store (each seed on its own users);
/// `tolerant` allows float-sum order noise in amount features (a store
/// whose batch sums are computed in SQL).
pub async fn live_equals_batch(
    events: Arc<dyn EventStore>,
    features: Arc<dyn FeatureStore>,
    cases: u64,
    tolerant: bool,
) {
    let mut compared = 0usize;
    let mut from_cache = 0usize;
    for seed in 0..cases {
        let mut rng = fastrand::Rng::with_seed(seed);
        let spec = Arc::new(random_spec(&mut rng));
        let live = LiveFeatures::new(features.clone(), spec.clone(), LiveOptions::default());
        let ingest = IngestEvents::new(events.clone(), 0, 1_000).with_live(live.clone());
        let base = 1_000 * (seed + 1);
        let users: Vec<u64> = (base + 1..=base + 12).collect();
        let deliveries = random_deliveries(&mut rng, base, 12);
        for (k, batch_events) in deliveries.iter().enumerate() {
            ingest
                .process_events(
                    batch_events.clone(),
                    &mut Delivery::new(SourceKind::Generator),
                )
                .await
                .unwrap();
            if k == 1 {
                // A redelivery of the first delivery stores nothing new.
                let again = ingest
                    .process_events(
                        deliveries[0].clone(),
                        &mut Delivery::new(SourceKind::Generator),
                    )
                    .await
                    .unwrap();
                assert_eq!(again.inserted, 0, "seed {seed}");
            }
            // Increasing times within a round, so cached rows are used.
            let mut t = T0 + rng.i64(0..50 * DAY);
            for _ in 0..3 {
                t += rng.i64(0..5 * DAY);
                let batch = features.compute_snapshot(&spec, t).await.unwrap();
                for &user in &users {
                    let cached = live.cached(user, t).is_some();
                    let got = live.features_at(user, t).await;
                    match (got, batch.features(user)) {
                        (Lookup::Features(live), Some(batch)) => {
                            compared += 1;
                            from_cache += usize::from(cached);
                            for (i, (a, b)) in live.iter().zip(&batch).enumerate() {
                                let def = &spec.defs()[i];
                                let amount_like = matches!(
                                    def.aggregation,
                                    Aggregation::SumAmount
                                        | Aggregation::MeanAmount
                                        | Aggregation::Ratio
                                );
                                let same = a.to_bits() == b.to_bits()
                                    || (tolerant
                                        && amount_like
                                        && (a - b).abs() <= 1e-6 * b.abs().max(1.0));
                                assert!(
                                    same,
                                    "seed {seed}, user {user}, t {t}, feature {def:?}: live {a} vs batch {b}"
                                );
                            }
                        }
                        (Lookup::Unknown, None) => {}
                        (got, batch) => {
                            panic!("seed {seed}, user {user}, t {t}: live {got:?}, batch {batch:?}")
                        }
                    }
                }
            }
        }
    }
    assert!(compared > cases as usize * 10, "{compared} rows compared");
    assert!(from_cache > 0, "no lookup was answered from the cache");
    println!("live = batch on {compared} rows ({from_cache} from cached rows) over {cases} seeds");
}
