//! Outbound HTTP, one way for every client of both programs (todo-app's
//! OTLP exporter; todo-sidecar's scrape of the app, log shipping sinks,
//! remote_write and S3 store): the rustls provider installed once
//! ([`install_crypto_provider`], which the client builders call), the
//! `Authorization` header built from mounted secret files, `Retry-After`,
//! one exponential backoff with jitter that honours it, and one
//! classification of answers ([`classify_status`]). URLs are logged through
//! [`crate::redact::redacted_url`].

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// How a client authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthKind {
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// `Authorization: Basic …`.
    Basic,
}

/// Installs ring as the process's one rustls crypto provider: reqwest and
/// object_store are built without one, and the app's HTTPS listener needs
/// one. Each program's `main` calls it first, and the client builders below
/// call it for any other caller (tests); installing twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// An async client builder with the crypto provider installed, the
/// program's `User-Agent`, and `timeout` for the whole request and for
/// connecting.
pub fn client_builder(user_agent: &str, timeout: Duration) -> reqwest::ClientBuilder {
    install_crypto_provider();
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(user_agent)
}

/// A blocking client builder with the crypto provider installed (the OTLP
/// exporter's, which sends from a thread of its own).
pub fn blocking_client_builder() -> reqwest::blocking::ClientBuilder {
    install_crypto_provider();
    reqwest::blocking::Client::builder()
}

/// What an answer's status says about sending the same request again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// 2xx.
    Success,
    /// 429: the receiver asks for less; later (after `Retry-After`) works.
    RateLimited,
    /// 5xx, or 408: the receiver failed or was too slow this time.
    ServerError,
    /// 401, 403, 407: the credentials were refused (a rotated Secret).
    Unauthorized,
    /// 404: nothing there (a wrong address or a misrouted proxy).
    NotFound,
    /// Any other status: the receiver refuses this request as it is.
    Rejected,
}

impl StatusClass {
    /// Whether the same request may succeed later without anyone changing
    /// anything. A client may also retry [`StatusClass::Unauthorized`] and
    /// [`StatusClass::NotFound`] (until an operator fixes the settings)
    /// rather than drop data that is not at fault.
    pub fn is_retryable(self) -> bool {
        matches!(self, StatusClass::RateLimited | StatusClass::ServerError)
    }
}

/// The one classification of HTTP answers every client uses.
pub fn classify_status(status: reqwest::StatusCode) -> StatusClass {
    match status.as_u16() {
        200..=299 => StatusClass::Success,
        429 => StatusClass::RateLimited,
        408 | 500..=599 => StatusClass::ServerError,
        401 | 403 | 407 => StatusClass::Unauthorized,
        404 => StatusClass::NotFound,
        _ => StatusClass::Rejected,
    }
}

/// Where a client's credentials come from (each a key of its section).
pub struct Credentials<'a> {
    /// `bearer`, `basic`, or none.
    pub auth: Option<AuthKind>,
    /// The bearer token's file.
    pub token_file: Option<&'a Path>,
    /// The basic-auth user.
    pub username: Option<&'a str>,
    /// The basic-auth password's file.
    pub password_file: Option<&'a Path>,
}

impl Credentials<'_> {
    /// The `Authorization` header (marked sensitive, so never logged), the
    /// secret files read now; `None` without `auth`.
    pub fn header(&self) -> anyhow::Result<Option<HeaderValue>> {
        match self.auth {
            None => Ok(None),
            Some(AuthKind::Bearer) => {
                let token = read_secret(self.token_file, "token_file")?;
                Ok(Some(sensitive_header(&format!(
                    "Bearer {}",
                    token.expose_secret()
                ))?))
            }
            Some(AuthKind::Basic) => {
                use base64::Engine;
                let password = read_secret(self.password_file, "password_file")?;
                let user = self.username.unwrap_or_default();
                let encoded = base64::engine::general_purpose::STANDARD
                    .encode(format!("{user}:{}", password.expose_secret()));
                Ok(Some(sensitive_header(&format!("Basic {encoded}"))?))
            }
        }
    }
}

/// A secret from a mounted file, trimmed; the error names the key and the
/// file, never the content.
pub fn read_secret(path: Option<&Path>, key: &str) -> anyhow::Result<SecretString> {
    let path = path.with_context(|| format!("`{key}` is not set"))?;
    let text = fs::read_to_string(path)
        .with_context(|| format!("Failed to read the secret file {} ({key})", path.display()))?;
    Ok(SecretString::from(text.trim().to_string()))
}

fn sensitive_header(value: &str) -> anyhow::Result<HeaderValue> {
    let mut header = HeaderValue::from_str(value)
        .map_err(|_| anyhow::anyhow!("the credential is not a valid header value"))?;
    header.set_sensitive(true);
    Ok(header)
}

/// A failed request's error for logs and health messages: without its URL
/// (the caller names it, redacted: it may carry a credential) and with its
/// causes, which say what actually failed (reqwest's own message is only
/// "error sending request"). A cause whose text already ends the message
/// is not repeated.
pub fn describe_error(error: reqwest::Error) -> String {
    crate::redact::error_with_causes(&error.without_url())
}

/// `Retry-After` of a response, if it has a valid one.
pub fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_retry_after)
}

/// `Retry-After`: delay-seconds, or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

/// Exponential backoff with jitter: each wait is drawn between half and all
/// of the current step, so that many sidecars do not retry in step; a
/// server's `Retry-After` wins over a shorter wait, up to ten times the
/// maximum step.
pub struct Backoff {
    step: Duration,
    max: Duration,
}

impl Backoff {
    /// Steps from `initial`, doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.max(Duration::from_millis(1));
        Backoff {
            step: initial,
            max: max.max(initial),
        }
    }

    /// The next wait.
    pub fn next(&mut self, retry_after: Option<Duration>) -> Duration {
        let half = self.step / 2;
        let jittered = half + half.mul_f64(jitter());
        self.step = (self.step * 2).min(self.max);
        match retry_after {
            // The server knows best, within reason.
            Some(asked) => asked.min(self.max * 10).max(jittered),
            None => jittered,
        }
    }
}

/// A number in [0, 1) that differs between calls and processes.
fn jitter() -> f64 {
    use std::hash::{BuildHasher, RandomState};
    let random = RandomState::new().hash_one(Instant::now());
    (random >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_once_for_every_client() {
        let class = |status: u16| classify_status(reqwest::StatusCode::from_u16(status).unwrap());

        for status in [200, 201, 204] {
            assert_eq!(class(status), StatusClass::Success, "{status}");
        }
        assert_eq!(class(429), StatusClass::RateLimited);
        for status in [408, 500, 502, 503, 504] {
            assert_eq!(class(status), StatusClass::ServerError, "{status}");
        }
        for status in [401, 403, 407] {
            assert_eq!(class(status), StatusClass::Unauthorized, "{status}");
        }
        assert_eq!(class(404), StatusClass::NotFound);
        for status in [300, 400, 409, 413, 415, 422] {
            assert_eq!(class(status), StatusClass::Rejected, "{status}");
        }
        let retryable: Vec<u16> = [200, 400, 401, 404, 408, 413, 429, 500, 503]
            .into_iter()
            .filter(|status| class(*status).is_retryable())
            .collect();
        assert_eq!(retryable, [408, 429, 500, 503]);
    }

    #[test]
    fn the_client_builders_install_the_crypto_provider() {
        let client = client_builder("todo-test/1", Duration::from_secs(1)).build();

        assert!(client.is_ok(), "{:?}", client.err());
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }

    #[test]
    fn a_failed_request_is_described_with_its_cause_and_without_its_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = blocking_client_builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();

        let error = client
            .get(format!(
                "http://user:s3cret@127.0.0.1:{port}/push?token=t0ken"
            ))
            .send()
            .unwrap_err();
        let text = describe_error(error);

        assert!(text.starts_with("error sending request"), "{text}");
        assert!(text.to_lowercase().contains("connection refused"), "{text}");
        for secret in ["s3cret", "t0ken", "127.0.0.1"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }

    #[test]
    fn a_secret_file_is_read_trimmed_and_a_missing_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        fs::write(&path, "  s3cret\n").unwrap();

        let secret = read_secret(Some(&path), "token_file").unwrap();
        let unset = format!("{:#}", read_secret(None, "token_file").unwrap_err());

        assert_eq!(secret.expose_secret(), "s3cret");
        assert_eq!(unset, "`token_file` is not set");
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        let soon = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let wait = parse_retry_after(&soon).unwrap();
        assert!(wait > Duration::from_secs(25) && wait <= Duration::from_secs(30));
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_maximum() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let waits: Vec<Duration> = (0..5).map(|_| backoff.next(None)).collect();
        for (wait, step) in waits.iter().zip([100, 200, 400, 400, 400]) {
            let step = Duration::from_millis(step);
            assert!(
                *wait >= step / 2 && *wait <= step,
                "{wait:?} for step {step:?}"
            );
        }
        // A server's Retry-After wins over a shorter backoff, within ten times the maximum.
        assert_eq!(
            backoff.next(Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            backoff.next(Some(Duration::from_secs(60))),
            Duration::from_secs(4)
        );
    }

    #[test]
    fn credentials_come_from_the_files_and_a_missing_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        fs::write(&token, "t0ken\n").unwrap();
        let password = dir.path().join("password");
        fs::write(&password, "pa55").unwrap();

        let bearer = Credentials {
            auth: Some(AuthKind::Bearer),
            token_file: Some(&token),
            username: None,
            password_file: None,
        };
        let basic = Credentials {
            auth: Some(AuthKind::Basic),
            token_file: None,
            username: Some("shipper"),
            password_file: Some(&password),
        };
        let missing = Credentials {
            auth: Some(AuthKind::Bearer),
            token_file: Some(&dir.path().join("absent")),
            username: None,
            password_file: None,
        };

        let bearer = bearer.header().unwrap().unwrap();
        assert_eq!(bearer.to_str().unwrap(), "Bearer t0ken");
        assert!(bearer.is_sensitive());
        // base64("shipper:pa55")
        assert_eq!(
            basic.header().unwrap().unwrap().to_str().unwrap(),
            "Basic c2hpcHBlcjpwYTU1"
        );
        let error = format!("{:#}", missing.header().unwrap_err());
        assert!(
            error.contains("absent") && error.contains("token_file"),
            "{error}"
        );
    }
}
