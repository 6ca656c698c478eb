//! Fetching the app's exposition: one HTTP GET with a deadline covering the
//! connection, the answer and the body, and a cap on the body's size.

use std::time::Duration;

use super::events::ScrapeFailureReason;
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
    /// The failure's reason, in the closed set of the metric's label.
    pub fn reason(&self) -> ScrapeFailureReason {
        match self {
            ScrapeError::Timeout(_) => ScrapeFailureReason::Timeout,
            ScrapeError::Connect(_) => ScrapeFailureReason::Connect,
            ScrapeError::Status(_) => ScrapeFailureReason::Status,
            ScrapeError::TooLarge(_) => ScrapeFailureReason::TooLarge,
            ScrapeError::Body(_) => ScrapeFailureReason::Body,
            ScrapeError::Parse(_) => ScrapeFailureReason::Parse,
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
        otherwise(crate::http::describe_error(error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server answering every connection with `response` (raw HTTP); its URL.
    async fn answering(response: Vec<u8>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/metrics", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let response = response.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buffer = [0u8; 1024];
                    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
                        match stream.read(&mut buffer).await {
                            Ok(0) | Err(_) => return,
                            Ok(read) => head.extend_from_slice(&buffer[..read]),
                        }
                    }
                    let _ = stream.write_all(&response).await;
                });
            }
        });
        url
    }

    fn ok(headers: &str, body: &[u8]) -> Vec<u8> {
        let mut response = format!("HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n{headers}Connection: close\r\n\r\n").into_bytes();
        response.extend_from_slice(body);
        response
    }

    async fn scrape(response: Vec<u8>, max_bytes: usize) -> Result<(String, Format), ScrapeError> {
        let url = answering(response).await;
        fetch(
            &crate::http::client_builder("todo-sidecar-test", Duration::from_secs(5))
                .build()
                .unwrap(),
            &url,
            Duration::from_secs(5),
            max_bytes,
        )
        .await
    }

    #[tokio::test]
    async fn an_error_status_is_a_status_failure() {
        let response =
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                .to_vec();

        let error = scrape(response, 1024).await.unwrap_err();

        assert!(matches!(error, ScrapeError::Status(503)), "{error}");
        assert_eq!(error.reason(), ScrapeFailureReason::Status);
    }

    #[tokio::test]
    async fn a_body_over_the_bound_is_refused_whether_announced_or_not() {
        let body = vec![b'#'; 2000];
        let announced = ok(&format!("Content-Length: {}\r\n", body.len()), &body);
        // Without a length: read until the bound is crossed.
        let unannounced = ok("", &body);

        let first = scrape(announced, 1000).await.unwrap_err();
        let second = scrape(unannounced, 1000).await.unwrap_err();

        assert!(matches!(first, ScrapeError::TooLarge(1000)), "{first}");
        assert!(matches!(second, ScrapeError::TooLarge(1000)), "{second}");
        assert_eq!(first.reason(), ScrapeFailureReason::TooLarge);
    }

    #[tokio::test]
    async fn a_body_that_is_not_utf8_is_a_body_failure() {
        let body = b"todo_up 1\n\xff\xfe\n";

        let error = scrape(
            ok(&format!("Content-Length: {}\r\n", body.len()), body),
            1024,
        )
        .await
        .unwrap_err();

        assert!(
            matches!(&error, ScrapeError::Body(message) if message.contains("not UTF-8")),
            "{error}"
        );
        assert_eq!(error.reason(), ScrapeFailureReason::Body);
    }

    #[tokio::test]
    async fn a_valid_answer_is_returned_with_its_format() {
        let body = b"todo_up 1\n";

        let (text, _) = scrape(
            ok(&format!("Content-Length: {}\r\n", body.len()), body),
            1024,
        )
        .await
        .unwrap();

        assert_eq!(text, "todo_up 1\n");
    }
}

#[cfg(test)]
mod reason_tests {
    use super::*;

    #[test]
    fn every_failure_reason_is_one_of_the_reasons_exposed_from_start_up() {
        let errors = [
            ScrapeError::Timeout(Duration::from_secs(1)),
            ScrapeError::Connect("refused".into()),
            ScrapeError::Status(500),
            ScrapeError::TooLarge(1),
            ScrapeError::Body("reset".into()),
            ScrapeError::Parse(super::super::parse::ParseError {
                line: 1,
                message: "garbage".into(),
                near: "<html>".into(),
            }),
        ];

        let reasons: Vec<ScrapeFailureReason> = errors.iter().map(ScrapeError::reason).collect();

        assert_eq!(reasons, ScrapeFailureReason::ALL);
    }
}
