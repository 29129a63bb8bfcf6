//! Credentials on every request but the public ones: `Authorization: Bearer <API key or login
//! token>` (never a
//! cookie, so a cross-site "simple" request, which cannot set that header, cannot act). The
//! caller (`service::auth::Principal`) goes into the request's extensions for what follows.

use super::Success;
use crate::error::{ApiError, ApiResult};
use crate::service::auth::{self, Role};
use crate::service::Ctx;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};
use serde::Deserialize;

/// Paths anyone may call: liveness, the version, and (with logins) the token endpoint.
pub const PUBLIC: &[&str] = &["/healthz", "/api/v1/version", "/api/v1/auth/token"];

pub async fn require(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if PUBLIC.contains(&req.path()) {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    match principal(&req).await {
        Ok(p) if p.role == Role::Admin => {
            req.extensions_mut().insert(p);
            Ok(next.call(req).await?.map_into_boxed_body())
        }
        Ok(p) => Ok(refuse(
            req,
            ApiError::Forbidden(format!(
                "key {} has role {}, which may not do this",
                p.key_id,
                p.role.as_str()
            )),
        )),
        Err(e) => Ok(refuse(req, e)),
    }
}

async fn principal(req: &ServiceRequest) -> Result<auth::Principal, ApiError> {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap_or(""));
    let credential = auth::credential(value)?;
    let Some(ctx) = req.app_data::<web::Data<Ctx>>().cloned() else {
        return Err(ApiError::Internal("no service context".into()));
    };
    match credential {
        auth::Credential::Key(hash) => {
            if let Some(known) = auth::cached(&ctx, &hash) {
                return known;
            }
            crate::context::blocking(move || auth::lookup(&ctx, hash)).await
        }
        auth::Credential::Token(t) => {
            crate::context::blocking(move || auth::token_principal(&ctx, &t)).await
        }
    }
}

fn refuse(req: ServiceRequest, e: ApiError) -> ServiceResponse<BoxBody> {
    let (req, _) = req.into_parts();
    ServiceResponse::new(req, actix_web::ResponseError::error_response(&e))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBody {
    user_name: String,
    password: String,
}

/// `POST /api/v1/auth/token`: a user's name and password for a login token.
pub async fn token(
    ctx: web::Data<Ctx>,
    body: web::Json<TokenBody>,
) -> ApiResult<Success<auth::Token>> {
    let b = body.into_inner();
    if b.user_name.is_empty() || b.password.is_empty() {
        return Err(ApiError::invalid("user_name and password are required"));
    }
    let t = crate::context::blocking(move || auth::login(&ctx, &b.user_name, &b.password)).await?;
    Ok(Success(t))
}
