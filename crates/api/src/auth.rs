//! Authentication of API requests (bearer tokens) and the per-request context handlers use
//! to authorize and audit.
//!
//! Every refusal goes through here so that it is audited the same way: an unauthenticated
//! attempt, a denied action, a refused mutation. The token itself is never logged, audited
//! or echoed; only its public id is.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use model::rbac::{self, Action, Resource};
use model::types::Outcome;
use model::{Code, Scope};
use store::audit::NewEvent;
use store::{Actor, Authenticated};

use crate::error::ApiError;
use crate::routes::Route;
use crate::State;

/// Failed authentications allowed per source address per window before answering 429.
pub const MAX_AUTH_FAILURES: u32 = 20;
pub const AUTH_WINDOW: Duration = Duration::from_secs(60);

/// Counts failed authentications per source address (a fixed window), so a token cannot be
/// guessed and the audit trail cannot be flooded from one address.
#[derive(Default)]
pub struct AuthLimiter {
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl AuthLimiter {
    pub fn blocked(&self, ip: IpAddr) -> bool {
        let w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        w.get(&ip)
            .is_some_and(|(start, n)| start.elapsed() < AUTH_WINDOW && *n >= MAX_AUTH_FAILURES)
    }

    /// Counts a failure. The failure that blocks the address is logged, once per window:
    /// a warning per refused request would let one address flood the log.
    pub fn failed(&self, ip: IpAddr) {
        let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        if w.len() > 10_000 {
            w.retain(|_, (start, _)| start.elapsed() < AUTH_WINDOW);
        }
        let e = w.entry(ip).or_insert((Instant::now(), 0));
        if e.0.elapsed() >= AUTH_WINDOW {
            *e = (Instant::now(), 0);
        }
        e.1 += 1;
        if e.1 == MAX_AUTH_FAILURES {
            tracing::warn!(
                source = %ip,
                failures = MAX_AUTH_FAILURES,
                seconds = AUTH_WINDOW.as_secs(),
                "too many failed authentications: this address is refused until its window ends"
            );
        }
    }
}

/// Extracts the bearer token from the `authorization` header.
fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Authenticates a request. Failures are audited (outcome `unauthenticated`) and counted.
pub async fn authenticate(
    state: &State,
    headers: &http::HeaderMap,
    peer: SocketAddr,
    request_id: &str,
    route: &'static Route,
    path: &str,
) -> Result<Authenticated, ApiError> {
    if state.limiter.blocked(peer.ip()) {
        return Err(ApiError::new(
            Code::RateLimited,
            "too many failed authentications from this address; retry in a minute",
        ));
    }
    let found = match bearer(headers) {
        Some(t) => state.store.authenticate(t).await?,
        None => None,
    };
    match found {
        Some(who) => Ok(who),
        None => {
            state.limiter.failed(peer.ip());
            let actor = Actor {
                principal: "anonymous".into(),
                request_id: request_id.to_string(),
                source: peer.to_string(),
            };
            let event = NewEvent {
                action: route.id.to_string(),
                resource: path.to_string(),
                scope: Scope::Platform,
                outcome: Outcome::Unauthenticated,
                detail: String::new(),
            };
            state.store.record(&actor, event).await?;
            Err(ApiError::new(
                Code::Unauthenticated,
                "missing, unknown, expired or revoked token; send `Authorization: Bearer TOKEN`",
            ))
        }
    }
}

/// What a handler knows about the request it serves.
pub struct Ctx<'a> {
    pub state: &'a State,
    pub who: Authenticated,
    pub actor: Actor,
    pub route: &'static Route,
    pub path: String,
}

impl Ctx<'_> {
    /// Allows the action or audits the denial and answers 403.
    pub async fn allow(
        &self,
        resource: Resource,
        action: Action,
        scope: &Scope,
    ) -> Result<(), ApiError> {
        if rbac::authorize(&self.who.roles, resource, action, scope) {
            Ok(())
        } else {
            Err(self.deny(scope).await)
        }
    }

    /// Allows reading a tenant or environment that the caller holds any role inside.
    pub async fn allow_see(&self, resource: Resource, scope: &Scope) -> Result<(), ApiError> {
        if rbac::can_see(&self.who.roles, resource, scope) {
            Ok(())
        } else {
            Err(self.deny(scope).await)
        }
    }

    pub fn can(&self, resource: Resource, action: Action, scope: &Scope) -> bool {
        rbac::authorize(&self.who.roles, resource, action, scope)
    }

    pub fn can_see(&self, resource: Resource, scope: &Scope) -> bool {
        rbac::can_see(&self.who.roles, resource, scope)
    }

    /// Audits a denied attempt and returns the 403 to answer with.
    pub async fn deny(&self, scope: &Scope) -> ApiError {
        let ev = self.event(scope, Outcome::Denied, String::new());
        if let Err(e) = self.state.store.record(&self.actor, ev).await {
            return e.into();
        }
        ApiError::denied(self.route.id, scope)
    }

    /// Runs an authorized mutation; when the store refuses it, audits the refusal
    /// (outcome `failed`, detail = error code) so attempts leave a trace too.
    pub async fn mutate<T, E: Into<ApiError>>(
        &self,
        scope: &Scope,
        fut: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, ApiError> {
        match fut.await {
            Ok(v) => Ok(v),
            Err(e) => {
                let err: ApiError = e.into();
                if !matches!(err.code, Code::Unavailable | Code::Internal) {
                    let ev = self.event(scope, Outcome::Failed, err.code.as_str().to_string());
                    if let Err(e) = self.state.store.record(&self.actor, ev).await {
                        return Err(e.into());
                    }
                }
                Err(err)
            }
        }
    }

    fn event(&self, scope: &Scope, outcome: Outcome, detail: String) -> NewEvent {
        NewEvent {
            action: self.route.id.to_string(),
            resource: self.path.clone(),
            scope: scope.clone(),
            outcome,
            detail,
        }
    }
}
