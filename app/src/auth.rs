//! API keys: the token format, verification, the key cache and the per-key
//! rate limit, and the middleware that puts them in front of `/api`.
//!
//! A token is `todo_` followed by base64url (no padding) of 48 bytes: the
//! key id (16 bytes, a UUID) and the secret (32 random bytes). Only
//! SHA-256(secret) is stored; a plain hash is enough because the secret has
//! 256 bits of entropy (slow password hashes guard guessable secrets).
//! Verification compares hashes in constant time.
//!
//! Validated keys are cached for `auth.key_cache_ttl_seconds`, so a revoked
//! key stops working on every replica within that time without a database
//! round trip on every request.
//!
//! A key id the cache has never held costs a database lookup, so random
//! well-formed tokens could make the database do work at the attacker's
//! rate. Those lookups are limited process-wide
//! (`auth.unknown_key_lookups_per_second`); beyond the limit such requests
//! get 429 without a lookup. Keys already in the cache, fresh or due for a
//! refresh, never wait behind that limit.
//!
//! Each key may have at most `auth.max_in_flight_per_key` requests in flight
//! (counted in its cache entry, so the count costs two atomic operations per
//! request): a leaked key opening thousands of slow requests gets 429
//! instead of holding the server's connections and memory.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, NotUntil, Quota, RateLimiter};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::actors::db::{DbClient, FindApiKey, TouchApiKey};
use crate::configuration::AuthSettings;
use crate::domain::Owner;
use crate::error::ApiError;
use crate::metrics::Metrics;

const TOKEN_PREFIX: &str = "todo_";
const SECRET_BYTES: usize = 32;
/// Entries kept at most in the key cache; beyond it expired entries are evicted.
const KEY_CACHE_CAPACITY: usize = 10_000;

/// A freshly generated API token; shown once, then only its hash exists.
pub struct NewApiToken {
    pub id: Uuid,
    pub token: SecretString,
    pub secret_hash: [u8; 32],
}

/// Generates a token from the operating system's random source.
pub fn generate_token() -> NewApiToken {
    let id = Uuid::new_v4();
    let mut secret = [0u8; SECRET_BYTES];
    getrandom::fill(&mut secret).expect("the operating system's random source is available");
    let mut raw = Vec::with_capacity(16 + SECRET_BYTES);
    raw.extend_from_slice(id.as_bytes());
    raw.extend_from_slice(&secret);
    NewApiToken {
        id,
        token: SecretString::from(format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(&raw))),
        secret_hash: hash_secret(&secret),
    }
}

/// SHA-256 of a key's secret, as stored in `api_keys.secret_hash`.
pub fn hash_secret(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// A token split into its key id and the hash of its secret.
struct PresentedToken {
    id: Uuid,
    secret_hash: [u8; 32],
}

fn parse_token(token: &str) -> Option<PresentedToken> {
    let encoded = token.strip_prefix(TOKEN_PREFIX)?;
    if encoded.len() != 64 {
        return None;
    }
    let raw = URL_SAFE_NO_PAD.decode(encoded).ok()?;
    let (id, secret) = raw.split_at_checked(16)?;
    Some(PresentedToken {
        id: Uuid::from_slice(id).ok()?,
        secret_hash: hash_secret(secret),
    })
}

/// The owner a request was authenticated as; handlers take it as `ReqData<Caller>`.
#[derive(Debug, Clone)]
pub struct Caller {
    pub owner: Owner,
    pub key_id: Uuid,
}

#[derive(Clone)]
struct CachedKey {
    owner: Owner,
    secret_hash: [u8; 32],
    fetched_at: Instant,
    last_touched: Instant,
    /// The key's requests in flight; carried over when the entry is refreshed.
    in_flight: Arc<AtomicU32>,
}

/// One of a key's requests in flight; the count goes down when it is dropped,
/// however the request ends.
pub struct InFlightPermit(Arc<AtomicU32>);

impl Drop for InFlightPermit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Why a request was refused with 401; the `reason` label of `todo_auth_failures_total`.
#[derive(Debug, Clone, Copy)]
enum AuthFailure {
    Missing,
    Malformed,
    Invalid,
}

impl AuthFailure {
    fn label(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Invalid => "invalid",
        }
    }
}

/// Verifies tokens and applies the rate limit; one per server, shared by all workers.
pub struct Authenticator {
    db: DbClient,
    metrics: Metrics,
    cache_ttl: Duration,
    cache: RwLock<HashMap<Uuid, CachedKey>>,
    limiter: Option<DefaultKeyedRateLimiter<Uuid>>,
    unknown_key_lookups: Option<DefaultDirectRateLimiter>,
    max_in_flight_per_key: Option<NonZeroU32>,
}

impl Authenticator {
    pub fn new(settings: &AuthSettings, db: DbClient, metrics: Metrics) -> Authenticator {
        let limiter = NonZeroU32::new(settings.rate_limit_per_second).map(|per_second| {
            let burst = NonZeroU32::new(settings.rate_limit_burst).unwrap_or(per_second);
            RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))
        });
        let unknown_key_lookups =
            NonZeroU32::new(settings.unknown_key_lookups_per_second).map(|per_second| {
                let burst =
                    NonZeroU32::new(settings.unknown_key_lookup_burst).unwrap_or(per_second);
                RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst))
            });
        Authenticator {
            db,
            metrics,
            cache_ttl: settings.key_cache_ttl(),
            cache: RwLock::new(HashMap::new()),
            limiter,
            unknown_key_lookups,
            max_in_flight_per_key: NonZeroU32::new(settings.max_in_flight_per_key),
        }
    }

    /// Checks the `Authorization` header, the rate limit and the key's
    /// requests in flight; the permit must live as long as the request.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
    ) -> Result<(Caller, InFlightPermit), ApiError> {
        let (caller, in_flight) = match self.verify(headers).await {
            Ok(verified) => verified,
            Err(Rejection::Unauthorized(failure)) => {
                self.metrics
                    .auth_failures
                    .with_label_values(&[failure.label()])
                    .inc();
                return Err(ApiError::Unauthorized);
            }
            Err(Rejection::Api(error)) => return Err(error),
        };
        if let Some(limiter) = &self.limiter
            && let Err(not_until) = limiter.check_key(&caller.key_id)
        {
            self.metrics.rate_limited.inc();
            return Err(rate_limited_until(&not_until));
        }
        let previous = in_flight.fetch_add(1, Ordering::AcqRel);
        let permit = InFlightPermit(in_flight);
        if let Some(limit) = self.max_in_flight_per_key
            && previous >= limit.get()
        {
            self.metrics.in_flight_limited.inc();
            return Err(ApiError::TooManyInFlight { limit: limit.get() });
        }
        Ok((caller, permit))
    }

    async fn verify(&self, headers: &HeaderMap) -> Result<(Caller, Arc<AtomicU32>), Rejection> {
        let token = bearer_token(headers)?;
        let presented =
            parse_token(token).ok_or(Rejection::Unauthorized(AuthFailure::Malformed))?;

        let now = Instant::now();
        let cached = self
            .cache
            .read()
            .expect("key cache lock is never poisoned")
            .get(&presented.id)
            .cloned();
        let entry = match cached {
            Some(entry) if now.duration_since(entry.fetched_at) < self.cache_ttl => entry,
            Some(_) => self.refresh(presented.id, now).await?,
            None => {
                self.admit_unknown_key_lookup()?;
                self.refresh(presented.id, now).await?
            }
        };
        if bool::from(entry.secret_hash.ct_eq(&presented.secret_hash)) {
            Ok((
                Caller {
                    owner: entry.owner,
                    key_id: presented.id,
                },
                entry.in_flight,
            ))
        } else {
            Err(Rejection::Unauthorized(AuthFailure::Invalid))
        }
    }

    /// Takes one lookup from the budget for key ids not in the cache, or
    /// refuses with 429 when it is spent.
    fn admit_unknown_key_lookup(&self) -> Result<(), Rejection> {
        if let Some(limiter) = &self.unknown_key_lookups
            && let Err(not_until) = limiter.check()
        {
            self.metrics.unknown_key_lookups_refused.inc();
            return Err(Rejection::Api(rate_limited_until(&not_until)));
        }
        Ok(())
    }

    /// Reads the key from the database into the cache (or drops it from the
    /// cache when it is gone or revoked), and records its use.
    async fn refresh(&self, id: Uuid, now: Instant) -> Result<CachedKey, Rejection> {
        let record = self
            .db
            .send(FindApiKey { id })
            .await
            .map_err(|error| Rejection::Api(error.into()))?;
        let mut cache = self
            .cache
            .write()
            .expect("key cache lock is never poisoned");
        let Some(record) = record else {
            cache.remove(&id);
            return Err(Rejection::Unauthorized(AuthFailure::Invalid));
        };
        let Ok(secret_hash) = <[u8; 32]>::try_from(record.secret_hash.as_slice()) else {
            tracing::error!(key_id = %id, "stored API key hash has the wrong length");
            return Err(Rejection::Unauthorized(AuthFailure::Invalid));
        };
        // `last_used_at` is written at most once per cache period per key.
        let previous = cache.get(&id);
        let touch_due = previous
            .is_none_or(|previous| now.duration_since(previous.last_touched) >= self.cache_ttl);
        // Requests in flight stay counted across refreshes.
        let in_flight =
            previous.map_or_else(Arc::default, |previous| Arc::clone(&previous.in_flight));
        if cache.len() >= KEY_CACHE_CAPACITY && !cache.contains_key(&id) {
            evict_least_recently_fetched(&mut cache);
        }
        let entry = CachedKey {
            owner: record.owner(),
            secret_hash,
            fetched_at: now,
            last_touched: now,
            in_flight,
        };
        cache.insert(id, entry.clone());
        drop(cache);
        if touch_due {
            let db = self.db.clone();
            actix_web::rt::spawn(async move {
                if let Err(error) = db.send(TouchApiKey { id }).await {
                    tracing::debug!(error = %error, "could not record API key use");
                }
            });
        }
        Ok(entry)
    }
}

/// Makes room in a full key cache by dropping the quarter of the entries
/// fetched longest ago. Only keys that were valid are ever cached (random
/// tokens are not), so the cache fills only with more than
/// `KEY_CACHE_CAPACITY` real keys; those evicted simply count as unseen
/// again, and the keys in use stay.
fn evict_least_recently_fetched(cache: &mut HashMap<Uuid, CachedKey>) {
    let mut fetched: Vec<(Instant, Uuid)> = cache
        .iter()
        .map(|(id, entry)| (entry.fetched_at, *id))
        .collect();
    let evicted = (cache.len() / 4).max(1);
    fetched.select_nth_unstable(evicted - 1);
    for (_, id) in &fetched[..evicted] {
        cache.remove(id);
    }
}

/// A 429 whose `Retry-After` is when the limiter allows the next request
/// (whole seconds, at least 1).
fn rate_limited_until(not_until: &NotUntil<<DefaultClock as Clock>::Instant>) -> ApiError {
    let wait = not_until.wait_time_from(DefaultClock::default().now());
    ApiError::RateLimited {
        retry_after_seconds: wait.as_secs_f64().ceil().max(1.0) as u64,
    }
}

enum Rejection {
    Unauthorized(AuthFailure),
    Api(ApiError),
}

/// The token of the one `Authorization: Bearer <token>` header. The scheme
/// is case-insensitive (RFC 9110, 11.1); a second `Authorization` header
/// makes the request malformed rather than letting one of them win.
fn bearer_token(headers: &HeaderMap) -> Result<&str, Rejection> {
    let mut values = headers.get_all(header::AUTHORIZATION);
    let value = match (values.next(), values.next()) {
        (None, _) => return Err(Rejection::Unauthorized(AuthFailure::Missing)),
        (Some(value), None) => value,
        (Some(_), Some(_)) => return Err(Rejection::Unauthorized(AuthFailure::Malformed)),
    };
    let value = value
        .to_str()
        .map_err(|_| Rejection::Unauthorized(AuthFailure::Malformed))?;
    match value.split_at_checked(6) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") && rest.starts_with(' ') => {
            Ok(rest.trim())
        }
        _ => Err(Rejection::Unauthorized(AuthFailure::Malformed)),
    }
}

/// Middleware for `/api`: authenticates the caller and stores a [`Caller`] in
/// the request extensions, or answers 401 / 429 / 503 without calling the
/// handler. Every answer it lets through or gives is marked
/// `Cache-Control: no-store` and `Vary: Authorization`: it depends on who
/// asked, and no cache may keep or share it.
pub async fn require_api_key(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let authenticator = req
        .app_data::<web::Data<Authenticator>>()
        .expect("Authenticator is registered as app data")
        .clone();
    let mut response = match authenticator.authenticate(req.headers()).await {
        Ok((caller, _in_flight)) => {
            tracing::Span::current().record("owner", caller.owner.as_str());
            req.extensions_mut().insert(caller);
            next.call(req).await?.map_into_left_body()
        }
        Err(error) => req.error_response(error).map_into_right_body(),
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::VARY, HeaderValue::from_static("Authorization"));
    Ok(response)
}

impl std::fmt::Debug for NewApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewApiToken")
            .field("id", &self.id)
            .field("token", &"[redacted]")
            .finish()
    }
}

/// Exposes a token for printing it once (the `keys create` command).
pub fn reveal(token: &NewApiToken) -> &str {
    token.token.expose_secret()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_failure_reason_is_exposed_from_start_up() {
        for failure in [
            AuthFailure::Missing,
            AuthFailure::Malformed,
            AuthFailure::Invalid,
        ] {
            assert!(
                crate::metrics::AUTH_FAILURE_REASONS.contains(&failure.label()),
                "{failure:?}"
            );
        }
    }

    #[test]
    fn generated_tokens_parse_back_to_their_id_and_hash() {
        let new = generate_token();
        let parsed = parse_token(reveal(&new)).expect("a generated token parses");
        assert_eq!(parsed.id, new.id);
        assert_eq!(parsed.secret_hash, new.secret_hash);
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        assert!(parse_token("").is_none());
        assert!(parse_token("todo_").is_none());
        assert!(parse_token(&format!("todo_{}", "A".repeat(63))).is_none());
        assert!(parse_token(&format!("nope_{}", "A".repeat(64))).is_none());
        assert!(parse_token(&format!("todo_{}", "*".repeat(64))).is_none());
    }

    #[test]
    fn a_full_key_cache_drops_the_entries_fetched_longest_ago() {
        let start = Instant::now();
        let mut cache = HashMap::new();
        let ids: Vec<Uuid> = (0..8).map(|_| Uuid::new_v4()).collect();
        for (age, id) in ids.iter().enumerate() {
            let fetched_at = start + Duration::from_secs(age as u64);
            cache.insert(
                *id,
                CachedKey {
                    owner: Owner::parse("alice").unwrap(),
                    secret_hash: [0; 32],
                    fetched_at,
                    last_touched: fetched_at,
                    in_flight: Arc::default(),
                },
            );
        }

        evict_least_recently_fetched(&mut cache);

        assert_eq!(cache.len(), 6);
        assert!(!cache.contains_key(&ids[0]) && !cache.contains_key(&ids[1]));
        assert!(ids[2..].iter().all(|id| cache.contains_key(id)));
    }

    #[test]
    fn the_debug_form_never_shows_the_token() {
        let new = generate_token();
        assert!(!format!("{new:?}").contains(reveal(&new)));
    }
}
