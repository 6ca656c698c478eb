//! Fetching the app's exposition: one HTTP GET with a deadline covering the
//! connection, the answer and the body, and a cap on the body's size.

use std::time::Duration;

use super::parse::Format;

/// Why the app could not be scraped; [`ScrapeError::reason`] is the
/// `reason` label of `todo_app_scrape_failures_total`.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
    #[error("the answer could not be read: {0}")]
    Body(String),
    #[error("the answer is not a valid exposition: {0}")]
    Parse(#[from] super::parse::ParseError),
}

impl ScrapeError {
    /// A short, bounded label value for the failure.
    pub fn reason(&self) -> &'static str {
        match self {
            ScrapeError::Timeout(_) => "timeout",
            ScrapeError::Connect(_) => "connect",
            ScrapeError::Status(_) => "status",
            ScrapeError::TooLarge(_) => "too_large",
            ScrapeError::Body(_) => "body",
            ScrapeError::Parse(_) => "parse",
        }
    }
}

/// Asks for OpenMetrics first, as Prometheus does; the text format otherwise.
const ACCEPT: &str =
    "application/openmetrics-text;version=1.0.0;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// GETs `url` and returns the body and its format, within `timeout`.
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    max_bytes: usize,
) -> Result<(String, Format), ScrapeError> {
    let work = async {
        let mut response = client
            .get(url)
            .header(reqwest::header::ACCEPT, ACCEPT)
            .send()
            .await
            .map_err(|error| classify(error, timeout, ScrapeError::Connect))?;
        if !response.status().is_success() {
            return Err(ScrapeError::Status(response.status().as_u16()));
        }
        let format = Format::from_content_type(
            response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|value| value.to_str().ok()),
        );
        if response
            .content_length()
            .is_some_and(|length| length > max_bytes as u64)
        {
            return Err(ScrapeError::TooLarge(max_bytes));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|error| classify(error, timeout, ScrapeError::Body))?
        {
            if body.len() + chunk.len() > max_bytes {
                return Err(ScrapeError::TooLarge(max_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        let body = String::from_utf8(body)
            .map_err(|error| ScrapeError::Body(format!("not UTF-8: {error}")))?;
        Ok((body, format))
    };
    tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| ScrapeError::Timeout(timeout))?
}

/// reqwest's own deadline (the client's, equal to ours) counts as a timeout
/// too, whichever of the two fires first.
fn classify(
    error: reqwest::Error,
    timeout: Duration,
    otherwise: fn(String) -> ScrapeError,
) -> ScrapeError {
    if error.is_timeout() {
        ScrapeError::Timeout(timeout)
    } else {
        otherwise(describe(error))
    }
}

/// reqwest's error with its causes, which say what actually failed.
fn describe(error: reqwest::Error) -> String {
    // Without the URL: the caller names it, redacted.
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
