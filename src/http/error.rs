//! The one status table: every error a handler can return becomes JSON
//! `{"error": message, "error_type": stable_code, "detail": ...}` with the
//! right status, here and nowhere else.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::application::jobs::JobError;
use crate::application::manage_models::ModelsError;
use crate::application::ports::{RegistryError, StoreError};
use crate::application::predict::PredictError;

/// The error body of every non-2xx answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Human-readable message.
    pub error: String,
    /// Stable machine-readable code (e.g. `unknown_user`).
    pub error_type: &'static str,
    /// Extra structured context; null when there is none (today always).
    #[schema(value_type = Option<Object>)]
    pub detail: serde_json::Value,
}

/// An error with its HTTP status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error_type: &'static str,
    pub message: String,
    pub detail: serde_json::Value,
}

impl ApiError {
    pub fn new(status: StatusCode, error_type: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            error_type,
            message: message.into(),
            detail: serde_json::Value::Null,
        }
    }

    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, error = %self.message, "request failed");
        }
        let body = ErrorBody {
            error: self.message,
            error_type: self.error_type,
            detail: self.detail,
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<PredictError> for ApiError {
    fn from(e: PredictError) -> Self {
        let (status, code) = match &e {
            PredictError::NoProductionModel => {
                (StatusCode::SERVICE_UNAVAILABLE, "no_production_model")
            }
            PredictError::ModelNotServable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "production_model_not_servable",
            ),
            PredictError::NoFeatures => (StatusCode::SERVICE_UNAVAILABLE, "no_features"),
            PredictError::UnknownUser(_) => (StatusCode::NOT_FOUND, "unknown_user"),
            PredictError::Model(_) => (StatusCode::INTERNAL_SERVER_ERROR, "model_failure"),
            PredictError::Join(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            PredictError::Store(_) => {
                let PredictError::Store(store) = e else {
                    unreachable!("matched above")
                };
                return store.into();
            }
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let (status, code) = match &e {
            StoreError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            StoreError::Corrupt(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store_corrupt"),
            StoreError::OutOfRange(_) => (StatusCode::BAD_REQUEST, "out_of_range"),
            StoreError::Insufficient(_) => (StatusCode::CONFLICT, "insufficient_data"),
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<ModelsError> for ApiError {
    fn from(e: ModelsError) -> Self {
        let (status, code) = match &e {
            ModelsError::Registry(RegistryError::UnknownVersion(_)) => {
                (StatusCode::NOT_FOUND, "unknown_version")
            }
            ModelsError::Registry(RegistryError::NoAlias(_)) => (StatusCode::NOT_FOUND, "no_alias"),
            ModelsError::Registry(RegistryError::NoHistory(_)) => {
                (StatusCode::CONFLICT, "no_history")
            }
            ModelsError::Registry(RegistryError::Conflict { .. }) => {
                (StatusCode::CONFLICT, "conflict")
            }
            ModelsError::Registry(RegistryError::Fenced { .. }) => (StatusCode::CONFLICT, "fenced"),
            ModelsError::Registry(RegistryError::Checksum { .. }) | ModelsError::Model { .. } => {
                (StatusCode::UNPROCESSABLE_ENTITY, "broken_model")
            }
            ModelsError::Registry(_) => (StatusCode::SERVICE_UNAVAILABLE, "registry_unavailable"),
        };
        Self::new(status, code, e.to_string())
    }
}

impl From<crate::application::erasure::ErasureError> for ApiError {
    fn from(e: crate::application::erasure::ErasureError) -> Self {
        use crate::application::erasure::ErasureError;
        match e {
            ErasureError::Store(e) => e.into(),
            ErasureError::Registry(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "registry_unavailable",
                e.to_string(),
            ),
        }
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> Self {
        Self::new(StatusCode::CONFLICT, "job_running", e.to_string())
    }
}
