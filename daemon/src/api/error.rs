//! The error envelope: every failure answers `{"status":"error","error":…}`
//! with a status code that says what kind of failure it was.

use strata_shared::api::{ErrorBody, VALIDATION_FAILED};
use warp::http::{HeaderValue, Method, StatusCode, header};
use warp::reply::Response;
use warp::{Rejection, Reply};

use crate::registry::{RegistryError, ResolveError};
use crate::store::StoreError;

/// An API failure, rendered by [`ApiError::into_response`].
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    // Boxed: handlers return `Result<Response, ApiError>` on every path.
    body: Box<ErrorBody>,
}

impl ApiError {
    /// An error with a status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, body: Box::new(ErrorBody::new(message)) }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 500, for failures that are the daemon's fault.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Renders the envelope.
    pub fn into_response(self) -> Response {
        warp::reply::with_status(warp::reply::json(&*self.body), self.status).into_response()
    }
}

impl From<ResolveError> for ApiError {
    fn from(err: ResolveError) -> Self {
        match err {
            ResolveError::Invalid(message) => Self::bad_request(message),
            ResolveError::Ambiguous { ref candidates, .. } => {
                let mut error = Self::bad_request(err.to_string());
                error.body.candidates = candidates.clone();
                error
            }
            other => Self::new(StatusCode::NOT_FOUND, other.to_string()),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(err: RegistryError) -> Self {
        match err {
            RegistryError::BadRequest(m) => Self::bad_request(m),
            RegistryError::NotFound(m) => Self::new(StatusCode::NOT_FOUND, m),
            RegistryError::Conflict(m) => Self::new(StatusCode::CONFLICT, m),
            RegistryError::Validation { message, diagnostics } => {
                let mut error = Self::new(StatusCode::UNPROCESSABLE_ENTITY, VALIDATION_FAILED);
                error.body.message = Some(message);
                error.body.diagnostics = diagnostics;
                error
            }
            RegistryError::InUse { message, usage } => {
                let mut error = Self::new(StatusCode::CONFLICT, message);
                error.body.usage = usage;
                error
            }
            RegistryError::Unavailable(m) => Self::new(StatusCode::SERVICE_UNAVAILABLE, m),
            RegistryError::Resolve(e) => e.into(),
            RegistryError::Io(m) => {
                tracing::error!("{m}");
                Self::internal(m)
            }
            RegistryError::StorageFull(m) => Self::new(StatusCode::INSUFFICIENT_STORAGE, m),
            RegistryError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    /// 507 when the disk is full, 503 for any other database failure.
    fn from(err: StoreError) -> Self {
        let status =
            if err.is_storage_full() { StatusCode::INSUFFICIENT_STORAGE } else { StatusCode::SERVICE_UNAVAILABLE };
        Self::new(status, err.to_string())
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(err: tokio::task::JoinError) -> Self {
        tracing::error!(error = %err, "request worker failed");
        Self::internal("internal error")
    }
}

/// A request body larger than the configured cap.
#[derive(Debug)]
pub struct PayloadTooLarge(pub usize);

impl warp::reject::Reject for PayloadTooLarge {}

/// A mutating request without the configured bearer token.
#[derive(Debug)]
pub struct Unauthorized;

impl warp::reject::Reject for Unauthorized {}

/// Turns warp's rejections into the error envelope. `path` and `method` are
/// the request's: a path that exists answers a wrong method with 405 and an
/// `Allow` header listing the methods it does serve (RFC 9110 §15.5.6).
pub fn recover(rejection: &Rejection, path: &str, method: &Method) -> Response {
    let error = if rejection.find::<Unauthorized>().is_some() {
        ApiError::new(StatusCode::UNAUTHORIZED, "a valid bearer token is required for this request")
    } else if let Some(PayloadTooLarge(limit)) = rejection.find() {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("request body is larger than {limit} bytes"))
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        ApiError::bad_request(format!("invalid query string: {e}"))
    } else if rejection.is_not_found() || rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        let allowed = super::openapi::methods_of(path);
        if allowed.is_empty() || allowed.contains(&method.as_str()) {
            ApiError::new(StatusCode::NOT_FOUND, "no such route")
        } else {
            let allow = allowed.join(", ");
            let message = format!("method {method} is not allowed on {path}; allowed: {allow}");
            let mut response = ApiError::new(StatusCode::METHOD_NOT_ALLOWED, message).into_response();
            let value = HeaderValue::from_str(&allow).expect("method names are valid header values");
            response.headers_mut().insert(header::ALLOW, value);
            return response;
        }
    } else if rejection.find::<warp::reject::PayloadTooLarge>().is_some() {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body is too large")
    } else {
        tracing::warn!(?rejection, "unhandled rejection");
        ApiError::bad_request(format!("{rejection:?}"))
    };
    error.into_response()
}
