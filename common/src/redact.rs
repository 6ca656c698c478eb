//! URLs made safe for logs and error messages: whatever may carry a
//! credential is replaced, in a PostgreSQL URL as in an HTTP one; and an
//! error written out with its causes.

/// An error and its causes on one line, for logs and health messages:
/// clients' own messages are often only "error sending request" or "error
/// performing TLS handshake", and the reason is in a source. A cause whose
/// text already ends the message is not repeated. The caller makes sure
/// the error holds no URL (`reqwest::Error::without_url`).
pub fn error_with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// `url` for logs and messages, without what may be a credential: the
/// user and password (a token is sometimes sent as the user), the query
/// string (`?api_key=…`, libpq's `?password=`) and the fragment (where a
/// password with an unencoded `#` would spill). A URL that does not parse
/// is not shown at all: its password could be anywhere in it.
pub fn redacted_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if !parsed.username().is_empty() {
                let _ = parsed.set_username("REDACTED");
            }
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("REDACTED"));
            }
            if parsed.query().is_some() {
                parsed.set_query(Some("REDACTED"));
            }
            if parsed.fragment().is_some() {
                parsed.set_fragment(Some("REDACTED"));
            }
            parsed.to_string()
        }
        Err(_) => "(an invalid URL)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error with a message and an optional cause.
    #[derive(Debug)]
    struct Failure(&'static str, Option<Box<Failure>>);

    impl std::fmt::Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Failure {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|cause| cause as _)
        }
    }

    #[test]
    fn every_cause_is_written_after_the_error_once() {
        let error = Failure(
            "error performing TLS handshake",
            Some(Box::new(Failure(
                "invalid peer certificate",
                Some(Box::new(Failure("UnknownIssuer", None))),
            ))),
        );

        assert_eq!(
            error_with_causes(&error),
            "error performing TLS handshake: invalid peer certificate: UnknownIssuer"
        );
    }

    #[test]
    fn a_cause_the_message_already_ends_with_is_not_repeated() {
        let error = Failure(
            "connect failed: connection refused",
            Some(Box::new(Failure("connection refused", None))),
        );

        assert_eq!(
            error_with_causes(&error),
            "connect failed: connection refused"
        );
    }

    #[test]
    fn the_host_port_and_path_stay_and_credentials_go() {
        assert_eq!(
            redacted_url("https://shipper:t0ken@logs.example:3100/loki/api/v1/push?api_key=k3y"),
            "https://REDACTED:REDACTED@logs.example:3100/loki/api/v1/push?REDACTED"
        );
        assert_eq!(
            redacted_url("postgres://app:s3cret@db:5432/todo?sslmode=require"),
            "postgres://REDACTED:REDACTED@db:5432/todo?REDACTED"
        );
        assert_eq!(
            redacted_url("http://app:9000/metrics"),
            "http://app:9000/metrics"
        );
        assert_eq!(redacted_url("no url here"), "(an invalid URL)");
    }

    #[test]
    fn no_password_ever_appears_in_the_redacted_form() {
        let password = "hunter2";
        let urls = [
            "postgres://app:hunter2@db/todo",
            "postgres://app:hunter2@db:5432/todo?sslmode=require",
            // Percent-encoded: the decoded form must not appear either.
            "postgres://app:hun%74er2@db/todo",
            "postgres://app:hunter2%40x@db/todo",
            "postgresql://hunter2@db/todo",
            "postgres://app@db/todo?password=hunter2",
            "postgres://app@db/todo?sslmode=require&password=hunter2",
            "https://user:hunter2@example.com/path",
            "https://example.com/push?token=hunter2",
            // Unencoded reserved characters in the password.
            "postgres://app:hunter2@x@db/todo",
            "postgres://app:hunter2/x@db/todo",
            "postgres://app:1#hunter2@db/todo",
            "postgres://app:hunter2?@db/todo",
            // libpq's several hosts (not a URL the `url` crate parses).
            "postgres://app:hunter2@db1:5432,db2:5432/todo",
            "postgres://app:hunter2@[::1/todo",
        ];

        for url in urls {
            let redacted = redacted_url(url);
            assert!(
                !redacted.contains(password) && !redacted.contains("hun%74er2"),
                "{url} → {redacted}"
            );
        }
    }
}
