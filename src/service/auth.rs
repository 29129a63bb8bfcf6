//! Who is calling: projects, API keys and users, and the check every request but the public
//! ones goes through (`key_hash` + `cached` / `lookup` for keys, `token_principal` for login
//! tokens).
//!
//! A key is `awk_` and 64 hex digits (32 random bytes), shown once when made and stored only as
//! its SHA-256: a key is as strong as a random 256-bit number, so a slow password hash would add
//! nothing against guessing and would cost every request. Verified keys (and refused ones) are
//! remembered for `KEY_CACHE_TTL`, so a request costs a hash and a map lookup, not a query; a
//! revocation or an expiry therefore takes effect within that time.

use super::ID_TRIES;
use crate::db::auth::{self as q, ApiKey, Project, User};
use crate::db::{self, DbConn};
use crate::error::{ApiError, ApiResult};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The project the migration makes and keys go to unless told otherwise.
pub const DEFAULT_PROJECT: &str = "default";
/// What every key's secret begins with (to tell it from other tokens, and to find it in leaks).
pub const KEY_PREFIX: &str = "awk_";
/// How long a verified (or refused) key is remembered.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(5);
/// Remembered keys at most; the cache starts afresh beyond (a flood of bad keys cannot grow it).
const KEY_CACHE_MAX: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything, in every project.
    Admin,
    /// Its own project's resources.
    Member,
}

impl Role {
    pub fn parse(s: &str) -> ApiResult<Role> {
        match s {
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            other => Err(ApiError::invalid(format!(
                "role must be admin or member, not {other:?}"
            ))),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }
}

/// The caller of a request, once its credentials are checked: a key, or a user's login token.
#[derive(Debug, Clone)]
pub struct Principal {
    /// `key-...` or `usr-...`.
    pub key_id: String,
    /// The key's name, or the user's.
    pub key_name: String,
    pub role: Role,
    pub project_id: String,
}

/// A key just made: its row and its secret (shown once, never stored).
pub struct NewKey {
    pub key: ApiKey,
    pub secret: String,
}

/// What is stored of a key's secret.
pub fn hash(secret: &str) -> String {
    format!("{:x}", Sha256::digest(secret.as_bytes()))
}

/// A name for a project or a key: 1-64 characters, none of them control characters.
fn check_name(what: &str, name: &str) -> ApiResult<()> {
    let n = name.chars().count();
    if n == 0 || n > 64 || name.chars().any(char::is_control) || name.trim() != name {
        return Err(ApiError::invalid(format!(
            "{what} must be 1-64 characters, without control characters or surrounding spaces"
        )));
    }
    Ok(())
}

pub fn create_project(conn: &mut DbConn, name: &str) -> ApiResult<Project> {
    check_name("a project name", name)?;
    for _ in 0..ID_TRIES {
        let p = Project {
            project_id: format!("prj-{:08x}", rand::random::<u32>()),
            project_name: name.to_string(),
            create_time: db::now(),
        };
        match q::insert_project(conn, &p) {
            Ok(()) => return Ok(p),
            Err(e) if db::is_unique_violation(&e) => {
                if q::project_by_name(conn, name)?.is_some() {
                    return Err(ApiError::invalid(format!(
                        "project {name:?} exists already"
                    )));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Internal("no free project id".into()))
}

/// Makes a key for `project` (by name). `expire_time`: unix seconds, or never.
pub fn create_key(
    conn: &mut DbConn,
    name: &str,
    role: Role,
    project: &str,
    expire_time: Option<u64>,
) -> ApiResult<NewKey> {
    check_name("a key name", name)?;
    let project = q::project_by_name(conn, project)?
        .ok_or_else(|| ApiError::invalid(format!("no project named {project:?}")))?;
    for _ in 0..ID_TRIES {
        let bytes: [u8; 32] = rand::random();
        let secret = format!(
            "{KEY_PREFIX}{}",
            bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let key = ApiKey {
            key_id: format!("key-{:08x}", rand::random::<u32>()),
            key_name: name.to_string(),
            key_hash: hash(&secret),
            role: role.as_str().into(),
            project_id: project.project_id.clone(),
            expire_time,
            revoke_time: None,
            create_time: db::now(),
        };
        match q::insert_key(conn, &key) {
            Ok(()) => return Ok(NewKey { key, secret }),
            Err(e) if db::is_unique_violation(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Internal("no free key id".into()))
}

/// Shortest password a user may have.
pub const MIN_PASSWORD: usize = 8;

/// Makes a user of `project` (by name) with an argon2 hash of `password`.
pub fn create_user(
    conn: &mut DbConn,
    name: &str,
    password: &str,
    role: Role,
    project: &str,
) -> ApiResult<User> {
    check_name("a user name", name)?;
    if password.chars().count() < MIN_PASSWORD {
        return Err(ApiError::invalid(format!(
            "a password must be at least {MIN_PASSWORD} characters"
        )));
    }
    let project = q::project_by_name(conn, project)?
        .ok_or_else(|| ApiError::invalid(format!("no project named {project:?}")))?;
    if q::user_by_name(conn, name)?.is_some() {
        return Err(ApiError::invalid(format!("user {name:?} exists already")));
    }
    let user = User {
        user_id: format!("usr-{:08x}", rand::random::<u32>()),
        user_name: name.to_string(),
        password_hash: hash_password(password)?,
        role: role.as_str().into(),
        project_id: project.project_id,
        disable_time: None,
        create_time: db::now(),
    };
    match q::insert_user(conn, &user) {
        Ok(()) => Ok(user),
        Err(e) if db::is_unique_violation(&e) => Err(ApiError::invalid(format!(
            "user {name:?} exists already (or its id was taken: try again)"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Disables a user: no more logins, and its tokens stop working within `KEY_CACHE_TTL`.
pub fn disable_user(conn: &mut DbConn, name: &str) -> ApiResult<()> {
    if q::disable_user(conn, name, db::now())? {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "no enabled user is named {name:?}"
        )))
    }
}

fn hash_password(password: &str) -> ApiResult<String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| ApiError::Internal(format!("making a salt: {e}")))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::Internal(format!("hashing a password: {e}")))
}

fn password_matches(password: &str, phc: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(phc).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// A hash no password matches, checked when the user name is unknown, so that an unknown name
/// and a wrong password take the same time.
static DUMMY_HASH: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| hash_password("no password is this one").unwrap_or_default());

/// What a login token says.
#[derive(serde::Serialize, serde::Deserialize)]
struct Claims {
    /// The user's id.
    sub: String,
    name: String,
    role: String,
    project_id: String,
    iat: u64,
    exp: u64,
}

/// A login's answer.
#[derive(serde::Serialize)]
pub struct Token {
    pub token: String,
    pub token_type: &'static str,
    /// Unix seconds.
    pub expires_at: u64,
    pub expires_in: u64,
}

/// The signing key of login tokens: `auth.token_secret`, else random for this process.
pub struct TokenKey(Vec<u8>);

impl TokenKey {
    pub fn new(configured: &str) -> TokenKey {
        if configured.is_empty() {
            log::warn!(
                "auth.token_secret is not set: login tokens are signed with a random key of this process (they die with it, and other replicas refuse them)"
            );
            TokenKey(rand::random::<[u8; 32]>().to_vec())
        } else {
            TokenKey(configured.as_bytes().to_vec())
        }
    }
}

fn wrong_login() -> ApiError {
    ApiError::Unauthorized("wrong user name or password".into())
}

/// Checks a user's password and hands out a signed token for `auth.token_lifetime_secs`.
pub fn login(ctx: &super::Ctx, name: &str, password: &str) -> ApiResult<Token> {
    let user = q::user_by_name(&mut *ctx.conn()?, name)?;
    let Some(user) = user.filter(|u| u.disable_time.is_none()) else {
        let _ = password_matches(password, &DUMMY_HASH);
        return Err(wrong_login());
    };
    if !password_matches(password, &user.password_hash) {
        return Err(wrong_login());
    }
    let now = db::now();
    let lifetime = ctx.cfg.auth.token_lifetime_secs;
    let claims = Claims {
        sub: user.user_id,
        name: user.user_name,
        role: user.role,
        project_id: user.project_id,
        iat: now,
        exp: now + lifetime,
    };
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&ctx.token_key.0),
    )
    .map_err(|e| ApiError::Internal(format!("signing a token: {e}")))?;
    Ok(Token {
        token,
        token_type: "Bearer",
        expires_at: claims.exp,
        expires_in: lifetime,
    })
}

/// The user a login token names, if its signature and expiry hold (and the user is still
/// enabled: checked in MySQL, remembered `KEY_CACHE_TTL` like keys).
pub fn token_principal(ctx: &super::Ctx, token: &str) -> ApiResult<Principal> {
    let refused = || ApiError::Unauthorized("invalid or expired login token".into());
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.leeway = 0;
    let claims = jsonwebtoken::decode::<Claims>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(&ctx.token_key.0),
        &v,
    )
    .map_err(|_| refused())?
    .claims;
    let cache_key = format!("user:{}", claims.sub);
    if let Some(known) = ctx.keys.get(&cache_key) {
        return known.ok_or_else(refused);
    }
    let user = q::user_by_id(&mut *ctx.conn()?, &claims.sub)?;
    let live = user
        .filter(|u| u.disable_time.is_none())
        .map(|u| (u.role, u.user_id, u.user_name, u.project_id));
    remember(ctx, cache_key, live)?.ok_or_else(refused)
}

/// Revokes the live key whose id or name is `which`; a name that several live keys share
/// must be told apart by id.
pub fn revoke_key(conn: &mut DbConn, which: &str) -> ApiResult<ApiKey> {
    let mut keys = q::live_keys_named(conn, which)?;
    match keys.len() {
        0 => Err(ApiError::invalid(format!(
            "no live key has the id or name {which:?}"
        ))),
        1 => {
            let k = keys.remove(0);
            q::revoke(conn, &k.key_id, db::now())?;
            Ok(k)
        }
        n => Err(ApiError::invalid(format!(
            "{n} live keys are named {which:?}: revoke one by its id ({})",
            keys.iter()
                .map(|k| k.key_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Keys verified lately, by the hash of their secret: the principal, or `None` if refused.
#[derive(Default)]
pub struct KeyCache(Mutex<HashMap<String, (Option<Principal>, Instant)>>);

impl KeyCache {
    fn get(&self, h: &str) -> Option<Option<Principal>> {
        let m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.get(h)
            .filter(|(_, at)| at.elapsed() < KEY_CACHE_TTL)
            .map(|(p, _)| p.clone())
    }
    fn put(&self, h: String, p: Option<Principal>) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= KEY_CACHE_MAX {
            m.clear();
        }
        m.insert(h, (p, Instant::now()));
    }
}

/// What an `Authorization: Bearer` header carries.
pub enum Credential {
    /// An API key, by the hash of its secret.
    Key(String),
    /// A login token (a JWT).
    Token(String),
}

/// The credential an `Authorization` header value carries (`Bearer <key or token>`): a login
/// token as it is, a key by the hash of its secret.
pub fn credential(header: Option<&str>) -> ApiResult<Credential> {
    let Some(header) = header else {
        return Err(ApiError::Unauthorized(
            "this request needs credentials: send Authorization: Bearer <API key or login token>"
                .into(),
        ));
    };
    let secret = match header.split_once(' ') {
        Some((scheme, s)) if scheme.eq_ignore_ascii_case("bearer") => s.trim(),
        _ => {
            return Err(ApiError::Unauthorized(
                "the Authorization header must be \"Bearer <API key>\"".into(),
            ))
        }
    };
    if secret.starts_with("eyJ") {
        return Ok(Credential::Token(secret.to_string()));
    }
    if !secret.starts_with(KEY_PREFIX) {
        return Err(refused());
    }
    Ok(Credential::Key(hash(secret)))
}

fn refused() -> ApiError {
    ApiError::Unauthorized("unknown, revoked or expired API key".into())
}

/// What the cache remembers of a key (`None`: ask MySQL, `lookup`).
pub fn cached(ctx: &super::Ctx, key_hash: &str) -> Option<ApiResult<Principal>> {
    ctx.keys.get(key_hash).map(|p| p.ok_or_else(refused))
}

/// Whose live key hashes to `key_hash`, from MySQL; remembered for `KEY_CACHE_TTL`.
pub fn lookup(ctx: &super::Ctx, key_hash: String) -> ApiResult<Principal> {
    let key = q::key_by_hash(&mut *ctx.conn()?, &key_hash)?;
    let now = db::now();
    let live = key
        .filter(|k| k.revoke_time.is_none() && k.expire_time.is_none_or(|t| t > now))
        .map(|k| (k.role, k.key_id, k.key_name, k.project_id));
    remember(ctx, key_hash, live)?.ok_or_else(refused)
}

/// A key's or a user's (role, id, name, project), if live, as a principal kept in the cache for
/// `KEY_CACHE_TTL` under `cache_key` (a refusal too).
fn remember(
    ctx: &super::Ctx,
    cache_key: String,
    live: Option<(String, String, String, String)>,
) -> ApiResult<Option<Principal>> {
    let principal = live
        .map(
            |(role, key_id, key_name, project_id)| -> ApiResult<Principal> {
                Ok(Principal {
                    role: Role::parse(&role)?,
                    key_id,
                    key_name,
                    project_id,
                })
            },
        )
        .transpose()?;
    ctx.keys.put(cache_key, principal.clone());
    Ok(principal)
}

/// Rows that belong to a project.
pub trait Owned: super::Resource {
    fn project_id(&self) -> &str;
    /// Its id, for a 404.
    fn id_str(&self) -> String;
    /// Every project may read it (a public image).
    fn public(&self) -> bool {
        false
    }
}

impl Owned for crate::db::images::Image {
    fn project_id(&self) -> &str {
        &self.project_id
    }
    fn id_str(&self) -> String {
        self.image_id.to_string()
    }
    fn public(&self) -> bool {
        self.visibility == crate::db::images::PUBLIC
    }
}

impl Owned for crate::db::instances::Instance {
    fn project_id(&self) -> &str {
        &self.project_id
    }
    fn id_str(&self) -> String {
        self.instance_id.to_string()
    }
}

impl Owned for crate::db::volumes::Volume {
    fn project_id(&self) -> &str {
        &self.project_id
    }
    fn id_str(&self) -> String {
        self.volume_id.to_string()
    }
}

impl Owned for crate::db::snapshots::Snapshot {
    fn project_id(&self) -> &str {
        &self.project_id
    }
    fn id_str(&self) -> String {
        self.snapshot_id.to_string()
    }
}

impl Owned for crate::db::nics::Nic {
    fn project_id(&self) -> &str {
        &self.project_id
    }
    fn id_str(&self) -> String {
        self.network_interface_id.to_string()
    }
}

/// What a request does to a row it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// The one access rule: whether `project` may `access` `row` (`None`: every project, an admin's
/// reach). A row of another project answers the 404 of a missing one; a public image is
/// readable by every project and changed by admins only (403). A row's project never changes,
/// so the answer holds for the request that follows.
pub fn allowed<R: Owned>(row: &R, project: Option<&str>, access: Access) -> ApiResult<()> {
    let Some(project) = project else {
        return Ok(());
    };
    if row.project_id() == project {
        return Ok(());
    }
    if row.public() {
        return match access {
            Access::Read => Ok(()),
            Access::Write => Err(ApiError::Forbidden(format!(
                "{} {} is public: only an admin may change it",
                <R::Status as crate::model::Lifecycle>::RESOURCE,
                row.id_str()
            ))),
        };
    }
    Err(super::not_found::<R>(row.id_str()))
}

/// Row `id`, if `project` may `access` it (`allowed`).
pub fn check_access<R: Owned>(
    conn: &mut DbConn,
    project: Option<&str>,
    id: &R::Id,
    access: Access,
) -> ApiResult<R> {
    let row = super::load::<R>(conn, id)?;
    allowed(&row, project, access)?;
    Ok(row)
}
