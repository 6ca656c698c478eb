//! PostgreSQL connection URLs, as libpq reads them: the check done before
//! one is used (without echoing it), the connection options both programs
//! add, the database name read or replaced, and the percent-decoding of a
//! URL's parts (user, password, database name).

use std::time::Duration;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use secrecy::{ExposeSecret, SecretString};

/// Whether a database URL is one libpq and diesel accept (checked without
/// ever echoing the value, which may hold a password): a `postgres://` or
/// `postgresql://` URL whose every `%` starts a valid escape. libpq quotes
/// a badly escaped part, which may be the password, in its error message.
pub fn is_postgres_url(url: &str) -> bool {
    let scheme_ok = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let bytes = url.as_bytes();
    let escapes_ok = bytes.iter().enumerate().all(|(at, byte)| {
        *byte != b'%'
            || (bytes.get(at + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(at + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    scheme_ok && escapes_ok
}

/// Seconds of silence before TCP keepalive probes start, the gap between
/// probes, and how many unanswered probes drop the connection.
const KEEPALIVES: [(&str, &str); 4] = [
    ("keepalives", "1"),
    ("keepalives_idle", "10"),
    ("keepalives_interval", "5"),
    ("keepalives_count", "3"),
];
/// Milliseconds sent data may stay unacknowledged before the kernel drops
/// the connection.
const TCP_USER_TIMEOUT_MS: &str = "10000";

/// `url` with libpq connection options added, each unless the operator set
/// it: `connect_timeout`, `application_name` (so `pg_stat_activity` shows
/// which program a session is), TCP keepalives and `tcp_user_timeout`.
/// The last two bound how long a thread can sit in a read or write to a
/// database host that vanished (a failover, a partition): without them
/// the kernel waits 15 minutes to 2 hours.
pub fn with_connection_options(
    url: &SecretString,
    connect_timeout: Duration,
    application_name: &str,
) -> SecretString {
    let mut text = url.expose_secret().to_string();
    let connect_timeout = connect_timeout.as_secs().max(1).to_string();
    let options = [
        ("connect_timeout", connect_timeout.as_str()),
        ("application_name", application_name),
        ("tcp_user_timeout", TCP_USER_TIMEOUT_MS),
    ]
    .into_iter()
    .chain(KEEPALIVES);
    for (key, value) in options {
        let present = text
            .split(['?', '&'])
            .skip(1)
            .any(|pair| pair.split('=').next() == Some(key));
        if !present {
            let separator = if text.contains('?') { '&' } else { '?' };
            text = format!("{text}{separator}{key}={value}");
        }
    }
    SecretString::from(text)
}

/// What a database name keeps unescaped in a URL path: RFC 3986's
/// unreserved characters. Anything else (`/`, `?`, `#`, `%`, spaces,
/// non-ASCII) would end the path or change its meaning.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Replaces the path (database name) of a PostgreSQL URL, keeping its
/// query; `name` is given decoded and percent-encoded here. Works on the
/// text, so URLs the `url` crate refuses (several hosts) keep working.
pub fn replace_database_name(url: &str, name: &str) -> String {
    let (without_query, query) = match url.split_once('?') {
        Some((head, query)) => (head, Some(query)),
        None => (url, None),
    };
    // The path starts at the first '/' after "scheme://authority".
    let authority_start = without_query.find("://").map(|i| i + 3).unwrap_or(0);
    let base = match without_query[authority_start..].find('/') {
        Some(slash) => &without_query[..authority_start + slash],
        None => without_query,
    };
    let name = utf8_percent_encode(name, PATH_SEGMENT);
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// The database name of a URL, decoded; `None` when the URL names none
/// (libpq then uses the user's name) or does not parse.
pub fn database_name(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let encoded = parsed.path().trim_start_matches('/');
    (!encoded.is_empty()).then(|| decode_component(encoded))
}

/// One percent-encoded part of a URL (user, password, database name) as
/// libpq reads it. Invalid UTF-8 becomes U+FFFD; an invalid escape (which
/// [`is_postgres_url`] refuses beforehand) stays as written.
pub fn decode_component(encoded: &str) -> String {
    percent_decode_str(encoded).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced_and_query_kept() {
        assert_eq!(
            replace_database_name("postgres://u:p@h:5432/db?sslmode=require", "other"),
            "postgres://u:p@h:5432/other?sslmode=require"
        );
        assert_eq!(
            replace_database_name("postgres://h", "other"),
            "postgres://h/other"
        );
        assert_eq!(
            replace_database_name("postgres://u@h1:5432,h2:5432/db", "other"),
            "postgres://u@h1:5432,h2:5432/other"
        );
    }

    #[test]
    fn a_database_name_with_reserved_characters_is_encoded_and_reads_back_the_same() {
        let name = "my db/2024?#%ü";

        let url = replace_database_name("postgres://app@db:5432/todo?sslmode=require", name);

        assert_eq!(
            url,
            "postgres://app@db:5432/my%20db%2F2024%3F%23%25%C3%BC?sslmode=require"
        );
        assert_eq!(database_name(&url).as_deref(), Some(name));
        assert!(is_postgres_url(&url));
    }

    #[test]
    fn encoded_user_password_and_database_names_decode() {
        let url = url::Url::parse("postgres://ap%40p:p%40ss%2Fw%25rd%3A@db/t%C3%B6do%2Dx").unwrap();

        assert_eq!(decode_component(url.username()), "ap@p");
        assert_eq!(decode_component(url.password().unwrap()), "p@ss/w%rd:");
        assert_eq!(database_name(url.as_str()).as_deref(), Some("tödo-x"));
        // `+` is not a space in a URL's path or authority.
        assert_eq!(decode_component("a+b"), "a+b");
        // Not an escape: kept as written (is_postgres_url refuses it first).
        assert_eq!(decode_component("100%zz"), "100%zz");
        assert_eq!(decode_component("%FF"), "\u{FFFD}");
    }

    #[test]
    fn a_url_without_a_database_name_has_none() {
        assert_eq!(database_name("postgres://app@db:5432"), None);
        assert_eq!(database_name("postgres://app@db:5432/"), None);
        assert_eq!(database_name("not a url"), None);
    }

    #[test]
    fn a_url_libpq_would_quote_in_an_error_is_refused() {
        assert!(is_postgres_url("postgres://app:p%40ss@db:5432/todo"));
        assert!(is_postgres_url("postgresql://app@db/todo"));
        assert!(!is_postgres_url("postgres://app:s3cr%zzet@db/todo"));
        assert!(!is_postgres_url("postgres://app:s3cret%@db/todo"));
        assert!(!is_postgres_url("postgres://app:s3cr%4@db/todo"));
        assert!(!is_postgres_url("mysql://app@db/todo"));
    }

    #[test]
    fn connection_options_are_added_unless_the_operator_set_them() {
        let url = SecretString::from("postgres://app@db/todo?keepalives_idle=30&sslmode=require");
        let with = with_connection_options(&url, Duration::from_secs(3), "todo-app");
        let text = with.expose_secret();
        assert!(text.starts_with("postgres://app@db/todo?keepalives_idle=30&sslmode=require&"));
        for option in [
            "connect_timeout=3",
            "application_name=todo-app",
            "tcp_user_timeout=10000",
            "keepalives=1",
            "keepalives_interval=5",
            "keepalives_count=3",
        ] {
            assert!(text.contains(option), "{option} missing from {text}");
        }
        assert_eq!(text.matches("keepalives_idle=").count(), 1, "{text}");

        let bare =
            with_connection_options(&SecretString::from("postgres://db/x"), Duration::ZERO, "t");
        assert!(
            bare.expose_secret()
                .starts_with("postgres://db/x?connect_timeout=1&")
        );
    }
}
