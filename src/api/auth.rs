//! Credentials on every request but the public ones: `Authorization: Bearer <API key or login
//! token>` (never a
//! cookie, so a cross-site "simple" request, which cannot set that header, cannot act). The
//! caller (`service::auth::Principal`) goes into the request's extensions for what follows.

use super::middleware::refuse;
use super::Success;
use crate::error::{ApiError, ApiResult};
use crate::service::auth::{self, Role};
use crate::service::Ctx;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use auth::{Access, Owned};
use serde::Deserialize;

/// Paths anyone may call: liveness, the version, and (with logins) the token endpoint.
pub const PUBLIC: &[&str] = &["/healthz", "/api/v1/version", "/api/v1/auth/token"];

pub async fn require(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let ctx = req.app_data::<web::Data<Ctx>>().cloned();
    if let (Some(ctx), Some(peer)) = (&ctx, req.peer_addr()) {
        if let Some(l) = &ctx.limits.per_address {
            if let Err(wait) = l.take(&peer.ip().to_string()) {
                return Ok(refuse(req, crate::limits::refusal("address", wait)));
            }
        }
    }
    if PUBLIC.contains(&req.path()) {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    match principal(&req).await {
        Ok(p) => {
            if let Some(l) = ctx.as_ref().and_then(|c| c.limits.per_credential.as_ref()) {
                if let Err(wait) = l.take(&p.key_id) {
                    return Ok(refuse(req, crate::limits::refusal("credential", wait)));
                }
            }
            req.extensions_mut().insert(p);
            Ok(next.call(req).await?.map_into_boxed_body())
        }
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
    if b.user_name.chars().count() > 64 {
        return Err(ApiError::invalid(
            "user_name: must be at most 64 characters",
        ));
    }
    // Every login, taken or refused, goes to the audit log with the name it gave.
    let t = crate::context::blocking(move || {
        let r = auth::login(&ctx, &b.user_name, &b.password);
        crate::service::audit::record(
            &ctx,
            crate::service::audit::Entry {
                action: "POST /api/v1/auth/token".into(),
                resource_id: None,
                outcome: if r.is_ok() { "ok" } else { "error" },
                error_code: r.as_ref().err().map(|e| e.code().as_str().to_string()),
                principal: None,
                user_name: Some(b.user_name.clone()),
            },
        );
        r
    })
    .await?;
    Ok(Success(t))
}

/// The caller of a request, as `require` found it (handlers of non-public routes take it).
pub struct Caller(pub auth::Principal);

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        std::future::ready(
            req.extensions()
                .get::<auth::Principal>()
                .cloned()
                .map(Caller)
                .ok_or_else(|| ApiError::Unauthorized("this request needs credentials".into())),
        )
    }
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.0.role == Role::Admin
    }

    /// The project of what the caller makes.
    pub fn project(&self) -> String {
        self.0.project_id.clone()
    }

    /// The projects the caller reaches: every one (`None`) for an admin, else its own.
    fn reach(&self) -> Option<String> {
        (!self.is_admin()).then(|| self.project())
    }

    /// 403 unless the caller is an admin.
    pub fn admin_only(&self, what: &str) -> ApiResult<()> {
        if self.is_admin() {
            return Ok(());
        }
        Err(ApiError::Forbidden(format!("only an admin may {what}")))
    }

    /// The project a list shows: an admin's choice (`project_id`, or every project), a member's
    /// own (asking for another is 403).
    pub fn list_project(&self, asked: Option<String>) -> ApiResult<Option<String>> {
        let asked = asked.filter(|p| !p.is_empty());
        match (self.is_admin(), asked) {
            (true, asked) => Ok(asked),
            (false, Some(p)) if p != self.0.project_id => Err(ApiError::Forbidden(
                "a member lists its own project only".into(),
            )),
            (false, _) => Ok(Some(self.project())),
        }
    }

    /// 404 (as if it did not exist) unless the caller may read `row`, already loaded: the check
    /// of a read that costs no query.
    pub fn sees<R: Owned>(&self, row: &R) -> ApiResult<()> {
        auth::allowed(row, self.reach().as_deref(), Access::Read)
    }

    /// 404 (as if it did not exist) unless the caller may `access` row `id`.
    pub async fn may<R>(&self, ctx: &web::Data<Ctx>, id: &R::Id, access: Access) -> ApiResult<()>
    where
        R: Owned + Send + 'static,
        R::Id: Clone + Send + 'static,
    {
        let Some(project) = self.reach() else {
            return Ok(());
        };
        let (ctx, id) = (ctx.clone(), id.clone());
        crate::context::blocking(move || {
            auth::check_access::<R>(&mut ctx.conn()?, Some(&project), &id, access).map(|_| ())
        })
        .await
    }

    /// A device and an instance the caller may change, of one project (an admin too may not
    /// plug one project's volume into another's instance).
    pub async fn may_plug<P>(
        &self,
        ctx: &web::Data<Ctx>,
        device: &P::Id,
        instance: &crate::model::InstanceId,
    ) -> ApiResult<()>
    where
        P: Owned + Send + 'static,
        P::Id: Clone + Send + 'static,
    {
        let reach = self.reach();
        let (c, d, i) = (ctx.clone(), device.clone(), instance.clone());
        crate::context::blocking(move || {
            let conn = &mut c.conn()?;
            let dev = auth::check_access::<P>(conn, reach.as_deref(), &d, Access::Write)?;
            let inst = auth::check_access::<crate::db::instances::Instance>(
                conn,
                reach.as_deref(),
                &i,
                Access::Write,
            )?;
            if dev.project_id() != inst.project_id() {
                return Err(ApiError::invalid(format!(
                    "{} {d} is of project {}, instance {i} of project {}: a device plugs into an instance of its own project",
                    <P::Status as crate::model::Lifecycle>::RESOURCE,
                    dev.project_id(),
                    inst.project_id()
                )));
            }
            Ok(())
        })
        .await
    }
}
