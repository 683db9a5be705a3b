//! Unit tests of the training use case, on the in-memory fakes.

use super::*;
use crate::application::generate::{GeneratorOptions, generate};
use crate::application::ports::ModelRegistry;
use crate::domain::training::PromotionDecision;
use crate::testing::{GradientTrainer, MemoryRegistry, MemoryStore};

async fn setup() -> (TrainModel, MemoryRegistry, ManageModels) {
    setup_capped(0).await
}

async fn setup_capped(max_training_rows: u64) -> (TrainModel, MemoryRegistry, ManageModels) {
    let store = MemoryStore::new(3);
    let mut events = Vec::new();
    generate(
        GeneratorOptions {
            users: 1_000,
            days: 120,
            end: 1_780_000_000,
            seed: 3,
            churn_share: 0.35,
            string_ids: false,
        },
        |e| events.push(e),
    );
    store.append(events).await.unwrap();
    let registry = MemoryRegistry::default();
    let trainer: Arc<dyn ModelTrainer> = Arc::new(GradientTrainer::default());
    let models = ManageModels::new(Arc::new(registry.clone()), trainer.clone());
    let train = TrainModel::new(
        Arc::new(store.clone()),
        Arc::new(store),
        models.clone(),
        trainer,
        Arc::new(FeatureSpec::standard()),
        TrainingOptions {
            model_name: "churn_model".into(),
            policy: LabelPolicy::inactivity(30, 30),
            validation_cutoff: None,
            train_snapshots: 4,
            snapshot_step_days: 7,
            max_training_rows,
            promotion: PromotionPolicy {
                tolerance: 0.01,
                force: false,
            },
            selection: ModelSelection::Best,
            calibration: CalibrationMethod::Platt,
            reference_as_of: AsOf::EndOfData,
        },
    );
    (train, registry, models)
}

#[tokio::test]
async fn registers_through_manage_models_and_gates_promotion() {
    let (train, registry, _models) = setup().await;
    let first = train.run().await.unwrap();
    assert_eq!(first.version, 1);
    assert!(first.metrics.auc > first.metrics.recency_auc, "{first:?}");
    assert_eq!(first.promotion, PromotionDecision::FirstModel);
    assert!(first.promoted);
    assert_eq!(registry.alias(LATEST).await.unwrap().unwrap().version, 1);
    assert_eq!(
        registry.alias(PRODUCTION).await.unwrap().unwrap().version,
        1
    );
    // Same data, same trainer: the challenger ties the champion, which
    // is within the tolerance.
    let second = train.run().await.unwrap();
    assert_eq!(second.version, 2);
    assert!(
        matches!(
            second.promotion,
            PromotionDecision::BeatsChampion { over: 1, .. }
        ),
        "{:?}",
        second.promotion
    );
    assert_eq!(second.previous_production_version, Some(1));
    // Same data, same trainer: the champion re-scored on the validation
    // rows scores what the challenger scores there.
    if let PromotionDecision::BeatsChampion {
        auc, champion_auc, ..
    } = second.promotion
    {
        assert!((auc - champion_auc).abs() < 1e-9, "{auc} vs {champion_auc}");
        assert_eq!(second.previous_production_auc, Some(champion_auc));
    }
    // The recorded figures come from the half the choice did not see.
    assert!(first.report_rows > 0 && first.report_rows < first.validation_rows);
    assert_eq!(
        registry.alias(PRODUCTION).await.unwrap().unwrap().history,
        vec![1]
    );
}

#[tokio::test]
async fn an_unreachable_registry_registers_nothing_and_says_so() {
    let (train, registry, _models) = setup().await;
    registry.outage.set_failing(true);
    let err = train.run().await.unwrap_err();
    assert!(matches!(err, TrainError::Models(_)), "{err}");
    registry.outage.set_failing(false);
    assert!(registry.list().await.unwrap().is_empty());
    // And the lock was released: the next run works.
    assert_eq!(train.run().await.unwrap().version, 1);
}

#[tokio::test]
async fn a_row_cap_samples_users_in_the_store_and_reports_it() {
    let full = setup().await.0.run().await.unwrap();
    assert!(!full.sampling.applied(), "{:?}", full.sampling);
    let cap = 1_000;
    let capped = setup_capped(cap).await.0.run().await.unwrap();
    assert!(capped.sampling.applied(), "{:?}", capped.sampling);
    // 1000 users, so validation keeps every one of them; four training
    // cutoffs of ~all users are sampled to about the cap.
    assert_eq!(capped.sampling.validation_share, 1.0);
    assert_eq!(capped.validation_rows, full.validation_rows);
    assert!(full.train_rows > 2 * cap as usize, "{}", full.train_rows);
    let rows = capped.train_rows as f64;
    assert!(
        (0.8 * cap as f64..=1.2 * cap as f64).contains(&rows),
        "{rows} training rows for a cap of {cap} (of {})",
        full.train_rows
    );
    // A uniform sample keeps the churn rate (no weights needed).
    assert!(capped.metrics.auc > 0.6, "{:?}", capped.metrics);
}
