//! How the request path opens its diesel-async connections: the libpq URL of
//! `database.url` (plus the `PG*` environment variables libpq reads) turned
//! into a tokio-postgres configuration and the TLS its `sslmode` asks for, so
//! that one URL means the same connection to libpq (the CLI, migrations,
//! `pg_dump`) and to tokio-postgres.
//!
//! tokio-postgres's own parser cannot take a production URL as it is: it
//! refuses `keepalives_count`, `sslmode=verify-ca`/`verify-full` and the
//! certificate options, reads `tcp_user_timeout` in seconds (libpq: in
//! milliseconds), bounds only the TCP connect with `connect_timeout` (libpq:
//! the whole attempt, TLS and authentication included), lets query
//! parameters `host`/`port` add hosts instead of replacing them, and reads no
//! environment variable (the Helm chart passes the password in
//! `PGPASSWORD`). So [`AsyncConnector`] resolves every parameter itself, in
//! libpq's order (environment, then the URL's authority and path, then its
//! query), applies the connection parameters and the options below with
//! `tokio_postgres::Config` setters, and hands tokio-postgres's parser only
//! the options it implements as libpq does.
//!
//! # sslmode (default `prefer`, as libpq)
//!
//! - `disable`: no TLS.
//! - `allow`, `prefer`: TLS when the server offers it, else plaintext.
//!   `allow` is treated as `prefer`: libpq tries plaintext first, this tries
//!   TLS first. Unlike libpq, a failed TLS handshake is not retried in
//!   plaintext.
//! - `require`: TLS or no connection.
//! - `verify-ca`: TLS, the server's chain checked against the root
//!   certificates; the host name is not checked.
//! - `verify-full`: the chain and the host name (the `host` parameter, never
//!   `hostaddr`; an IP address host is checked against the IP SANs).
//!
//! The root certificates are `sslrootcert`, else `~/.postgresql/root.crt`
//! (`$HOME`). As in libpq, when a root certificate file is there the chain is
//! checked in every mode that uses TLS (`require` then acts as `verify-ca`);
//! `verify-ca`/`verify-full` without one are refused. Unlike libpq, an
//! explicit `sslrootcert` that cannot be read is an error in every mode
//! (libpq silently skips the check in `require`). `sslrootcert=system`
//! (libpq 16) is refused: name the CA bundle's path instead. Without root
//! certificates the certificate is not checked, but the handshake signatures
//! still are (so the server holds the key of the certificate it sent).
//!
//! Client certificates: `sslcert`/`sslkey` (PEM; PKCS#8, PKCS#1 or SEC1 key),
//! else `~/.postgresql/postgresql.crt`/`.key` when that certificate exists, as
//! libpq; `sslcertmode=disable` sends none. `sslcrl` (a PEM file) and
//! `sslcrldir` (every PEM file of a directory) are checked, as in libpq
//! (OpenSSL's `CRL_CHECK_ALL`), for the whole chain, whenever the chain is
//! checked; a certificate whose issuer has no CRL then fails. The files are
//! read again for each connection, as libpq does, so renewed certificates are
//! used without a restart. `sslsni=0` sends no SNI;
//! `ssl_min_protocol_version`/`ssl_max_protocol_version` narrow TLS 1.2 and
//! 1.3 (rustls speaks no older version). Unix-domain sockets never use TLS
//! (PostgreSQL offers none there and libpq does not ask), whatever sslmode.
//!
//! # Other options
//!
//! Mapped: `keepalives_count` (tokio-postgres's `keepalives_retries`),
//! `tcp_user_timeout` (milliseconds), `connect_timeout` (seconds, 2 at least
//! as in libpq; it bounds each TCP connect and, times the number of hosts,
//! the whole attempt), `options` (the `session_options` of
//! [`AsyncConnector::new`] are appended), `fallback_application_name`,
//! `sslnegotiation` (`direct` sends the ALPN `postgresql` that PostgreSQL 17
//! requires). Passed to tokio-postgres as they are: `application_name`,
//! `keepalives`, `keepalives_idle`, `keepalives_interval`,
//! `target_session_attrs` (`any`, `read-write`, `read-only`),
//! `channel_binding`, `load_balance_hosts`. `client_encoding` must be UTF8
//! (tokio-postgres always asks for it).
//!
//! Refused, naming the option, because they would change what is checked or
//! who connects and cannot be honoured: `sslpassword` (encrypted keys),
//! `sslcertmode=require`, `gssencmode=require`, `require_auth`,
//! `requirepeer`, `sslkeylogfile`, `service`, `passfile`, `replication`, any
//! other `client_encoding`, and every option not named here (libpq 18's
//! `min_protocol_version`, say). A user and a host must be named (in the URL
//! or `PGUSER`/`PGHOST`): libpq's defaults (the system user, the socket
//! directory of its build) are not guessed.
//! Ignored: `sslcompression` (no TLS library compresses any more),
//! `gssencmode=disable/prefer` (GSSAPI encryption is never available here,
//! and `prefer` then falls back as libpq does without credentials),
//! `krbsrvname`, `gsslib`, `gssdelegation` (GSSAPI authentication only: a
//! server that demands it fails the connection loudly).
//! Not read: `~/.pgpass` (a missing password fails loudly),
//! `pg_service.conf`, `PGTZ`/`PGDATESTYLE`/`PGGEQO`.
//!
//! Error messages never hold the URL or the password. This module's own
//! name the option at fault, never the user, and show a value only for
//! options that cannot hold a credential; the server's messages, passed on
//! (`pg_hba.conf rejects connection for host …, user "app"`), may name the
//! user, as they do through libpq.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::version::{TLS12, TLS13};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore,
    SignatureScheme, SupportedProtocolVersion,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use secrecy::{ExposeSecret, SecretString};
use todo_common::pg_url::{decode_component, is_postgres_url};
use todo_common::redact::error_with_causes;
use tokio_postgres::config::{Host, SslMode as PgSslMode, SslNegotiation};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How request connections are opened: the libpq URL turned into a
/// tokio-postgres config plus the TLS the URL's sslmode asks for.
pub struct AsyncConnector {
    config: tokio_postgres::Config,
    /// Read into a rustls configuration for each connection: libpq reads
    /// the certificate files for each connection too, so renewed files are
    /// used without a restart.
    tls: TlsSettings,
    /// Bound on a whole connection attempt, TLS handshake and authentication
    /// included (tokio-postgres bounds the TCP connect only).
    attempt_timeout: Option<Duration>,
}

impl std::fmt::Debug for AsyncConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No user, no password, no options (they may name a role).
        f.debug_struct("AsyncConnector")
            .field("hosts", &self.config.get_hosts())
            .field("hostaddrs", &self.config.get_hostaddrs())
            .field("ports", &self.config.get_ports())
            .field("sslmode", &self.tls.mode)
            .field("check", &self.tls.check())
            .finish_non_exhaustive()
    }
}

impl AsyncConnector {
    /// Parses the URL (libpq semantics, `PG*` environment variables
    /// included). `session_options` is a libpq `options` string such as
    /// `"-c statement_timeout=5000 -c enable_seqscan=off"` appended to any
    /// `options` the URL holds (so session settings cost no extra round
    /// trip). Reads the certificate files once, so an unusable one fails here.
    pub fn new(
        url: &SecretString,
        session_options: &str,
    ) -> Result<AsyncConnector, ConnectionError> {
        AsyncConnector::from_url(url.expose_secret(), session_options, |name| {
            std::env::var(name).ok()
        })
    }

    /// Opens one connection. Must be called within a tokio runtime (a
    /// current-thread one with a `LocalSet` will do): diesel-async spawns the
    /// task that drives the connection.
    pub async fn connect(&self) -> Result<AsyncPgConnection, ConnectionError> {
        let attempt = async {
            let tls = self
                .tls
                .client_config()
                .map_err(ConnectionError::BadConnection)?;
            let (client, connection) = self
                .config
                .connect(MakeRustlsConnect::new(tls))
                .await
                .map_err(|error| ConnectionError::BadConnection(error_with_causes(&error)))?;
            AsyncPgConnection::try_from_client_and_connection(client, connection).await
        };
        match self.attempt_timeout {
            Some(limit) => tokio::time::timeout(limit, attempt)
                .await
                .unwrap_or_else(|_| {
                    Err(ConnectionError::BadConnection(format!(
                        "no connection within {} s (connect_timeout)",
                        limit.as_secs()
                    )))
                }),
            None => attempt.await,
        }
    }

    /// [`AsyncConnector::new`] with the environment given (tests).
    fn from_url(
        url: &str,
        session_options: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<AsyncConnector, ConnectionError> {
        let mut params = resolve_parameters(url, &env)?;
        let mut config = passthrough_config(&mut params)?;
        let hosts = apply_connection_parameters(&mut config, &mut params)?;

        if let Some(value) = params.remove("keepalives_count") {
            config.keepalives_retries(parse_number(&value, "keepalives_count")?);
        }
        if let Some(value) = params.remove("tcp_user_timeout") {
            // libpq reads milliseconds; tokio-postgres's parser would read seconds.
            let millis: i64 = parse_number(&value, "tcp_user_timeout")?;
            if millis > 0 {
                config.tcp_user_timeout(Duration::from_millis(millis as u64));
            }
        }
        let mut attempt_timeout = None;
        if let Some(value) = params.remove("connect_timeout") {
            let seconds: i64 = parse_number(&value, "connect_timeout")?;
            if seconds > 0 {
                // libpq's minimum: 1 second would expire on a slow handshake.
                let timeout = Duration::from_secs(seconds.max(2) as u64);
                config.connect_timeout(timeout);
                let hosts = config.get_hosts().len().max(config.get_hostaddrs().len());
                attempt_timeout = Some(timeout * hosts.max(1) as u32);
            }
        }
        let options = [params.remove("options"), Some(session_options.to_string())]
            .into_iter()
            .flatten()
            .map(|part| part.trim().to_string())
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if !options.is_empty() {
            config.options(options);
        }
        if let Some(name) = params.remove("fallback_application_name")
            && config.get_application_name().is_none()
        {
            config.application_name(name);
        }
        if let Some(encoding) = params.remove("client_encoding")
            && !encoding.eq_ignore_ascii_case("utf8")
            && !encoding.eq_ignore_ascii_case("utf-8")
        {
            return Err(invalid(format!(
                "client_encoding={encoding} is not supported: tokio-postgres always uses UTF8"
            )));
        }
        refuse_or_ignore_the_rest(&mut params)?;

        let tls = TlsSettings::from_parameters(&mut params, &env, &hosts)?;
        // Whatever is left is no option both libpq and this module know of.
        if let Some(unknown) = params.keys().next() {
            return Err(invalid(format!(
                "unknown option `{unknown}` in the database URL"
            )));
        }
        config.ssl_mode(match tls.mode {
            // PostgreSQL offers no TLS on a Unix-domain socket and libpq does
            // not ask for it there, whatever the sslmode.
            _ if hosts.sockets_only => PgSslMode::Disable,
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Allow | SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => PgSslMode::Require,
        });
        if tls.direct {
            config.ssl_negotiation(SslNegotiation::Direct);
        }
        // Read the files once now, so that an unusable one fails at start-up.
        tls.client_config().map_err(invalid)?;
        Ok(AsyncConnector {
            config,
            tls,
            attempt_timeout,
        })
    }
}

/// `InvalidConnectionUrl` with a message that holds no part of the URL.
fn invalid(message: impl Into<String>) -> ConnectionError {
    ConnectionError::InvalidConnectionUrl(message.into())
}

fn parse_number<T: std::str::FromStr>(value: &str, option: &str) -> Result<T, ConnectionError> {
    value
        .trim()
        .parse()
        .map_err(|_| invalid(format!("{option} must be a whole number, not {value:?}")))
}

/// The environment variables libpq reads as defaults, and their options.
const ENVIRONMENT: &[(&str, &str)] = &[
    ("PGHOST", "host"),
    ("PGHOSTADDR", "hostaddr"),
    ("PGPORT", "port"),
    ("PGDATABASE", "dbname"),
    ("PGUSER", "user"),
    ("PGPASSWORD", "password"),
    ("PGPASSFILE", "passfile"),
    ("PGSERVICE", "service"),
    ("PGREQUIREAUTH", "require_auth"),
    ("PGCHANNELBINDING", "channel_binding"),
    ("PGOPTIONS", "options"),
    ("PGAPPNAME", "application_name"),
    ("PGSSLMODE", "sslmode"),
    ("PGSSLNEGOTIATION", "sslnegotiation"),
    ("PGSSLCOMPRESSION", "sslcompression"),
    ("PGSSLCERT", "sslcert"),
    ("PGSSLKEY", "sslkey"),
    ("PGSSLCERTMODE", "sslcertmode"),
    ("PGSSLROOTCERT", "sslrootcert"),
    ("PGSSLCRL", "sslcrl"),
    ("PGSSLCRLDIR", "sslcrldir"),
    ("PGSSLSNI", "sslsni"),
    ("PGREQUIREPEER", "requirepeer"),
    ("PGSSLMINPROTOCOLVERSION", "ssl_min_protocol_version"),
    ("PGSSLMAXPROTOCOLVERSION", "ssl_max_protocol_version"),
    ("PGGSSENCMODE", "gssencmode"),
    ("PGKRBSRVNAME", "krbsrvname"),
    ("PGGSSLIB", "gsslib"),
    ("PGGSSDELEGATION", "gssdelegation"),
    ("PGCONNECT_TIMEOUT", "connect_timeout"),
    ("PGCLIENTENCODING", "client_encoding"),
    ("PGTARGETSESSIONATTRS", "target_session_attrs"),
    ("PGLOADBALANCEHOSTS", "load_balance_hosts"),
];

/// Every parameter, decoded, the later source winning as in libpq: the
/// environment, then the URL's authority and path, then its query.
fn resolve_parameters(
    url: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, ConnectionError> {
    if !is_postgres_url(url) {
        return Err(invalid(
            "the database URL is not a postgres:// or postgresql:// URL with valid %-escapes",
        ));
    }
    let mut params = BTreeMap::new();
    for (variable, option) in ENVIRONMENT {
        if let Some(value) = env(variable).filter(|value| !value.is_empty()) {
            params.insert(option.to_string(), value);
        }
    }

    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    // The last '@' ends the user information: a raw '@' in a password then
    // stays in the password instead of becoming a host name.
    let hostlist = match authority.rsplit_once('@') {
        Some((userinfo, hostlist)) => {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            if !user.is_empty() {
                params.insert("user".into(), decode_component(user));
            }
            if let Some(password) = password {
                params.insert("password".into(), decode_component(password));
            }
            hostlist
        }
        None => authority,
    };
    if !hostlist.is_empty() {
        let mut hosts = Vec::new();
        let mut ports = Vec::new();
        for entry in hostlist.split(',') {
            let (host, port) = match entry.strip_prefix('[') {
                Some(bracketed) => {
                    let (host, after) = bracketed.split_once(']').ok_or_else(|| {
                        invalid("a host of the database URL opens '[' without closing it")
                    })?;
                    (host, after.strip_prefix(':').unwrap_or(after))
                }
                None => entry.split_once(':').unwrap_or((entry, "")),
            };
            hosts.push(decode_component(host));
            ports.push(decode_component(port));
        }
        params.insert("host".into(), hosts.join(","));
        // Only when one is given: otherwise PGPORT (or 5432) applies.
        if ports.iter().any(|port| !port.is_empty()) {
            params.insert("port".into(), ports.join(","));
        }
    }
    if !path.is_empty() {
        params.insert("dbname".into(), decode_component(path));
    }

    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        // Not quoted: a stray pair without '=' could be a password.
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| invalid("a query parameter of the database URL has no '='"))?;
        params.insert(decode_component(key), decode_component(value));
    }
    Ok(params)
}

/// The options tokio-postgres implements as libpq does, parsed by
/// tokio-postgres itself (removed from `params`).
fn passthrough_config(
    params: &mut BTreeMap<String, String>,
) -> Result<tokio_postgres::Config, ConnectionError> {
    const PASSTHROUGH: &[&str] = &[
        "application_name",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_retries",
        "target_session_attrs",
        "channel_binding",
        "load_balance_hosts",
    ];
    let mut query = String::new();
    for key in PASSTHROUGH {
        if let Some(value) = params.remove(*key) {
            let separator = if query.is_empty() { '?' } else { '&' };
            query.push(separator);
            query.push_str(key);
            query.push('=');
            query.push_str(&encode(&value));
        }
    }
    format!("postgresql://{query}")
        .parse()
        .map_err(|error: tokio_postgres::Error| invalid(error_with_causes(&error)))
}

/// Percent-encodes every byte but ASCII letters and digits (tokio-postgres's
/// URL parser would take a raw '@' or '&' in a value for a delimiter).
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// What the hosts of a configuration are.
struct Hosts {
    /// Every host is a Unix-domain socket directory.
    sockets_only: bool,
    /// A host name (or address) was given, not only `hostaddr`s: what
    /// verify-full checks the certificate against.
    named: bool,
}

impl Hosts {
    /// Whether TLS may be negotiated with these hosts.
    fn used_for_tls(&self) -> bool {
        !self.sockets_only
    }
}

/// Sets user, password, database, hosts and ports.
fn apply_connection_parameters(
    config: &mut tokio_postgres::Config,
    params: &mut BTreeMap<String, String>,
) -> Result<Hosts, ConnectionError> {
    match params.remove("user") {
        Some(user) => config.user(user),
        None => {
            return Err(invalid(
                "the database URL names no user, nor does PGUSER (libpq would take the \
                 operating-system user's name; name it instead)",
            ));
        }
    };
    if let Some(password) = params.remove("password") {
        config.password(password);
    }
    if let Some(dbname) = params.remove("dbname") {
        config.dbname(dbname);
    }
    let hosts: Vec<String> = params
        .remove("host")
        .map(|list| list.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let hostaddrs: Vec<IpAddr> = params
        .remove("hostaddr")
        .map(|list| {
            list.split(',')
                .map(|addr| {
                    addr.trim()
                        .parse()
                        .map_err(|_| invalid("a hostaddr of the database URL is not an IP address"))
                })
                .collect::<Result<_, _>>()
        })
        .transpose()?
        .unwrap_or_default();
    if hosts.is_empty() && hostaddrs.is_empty() {
        return Err(invalid(
            "the database URL names no host (libpq would use its default socket directory, \
             which differs between builds; name it)",
        ));
    }
    if hosts.iter().any(String::is_empty) {
        return Err(invalid(
            "the database URL has an empty host in its host list (libpq would use its \
             default socket directory; name it)",
        ));
    }
    for host in &hosts {
        if host.starts_with('/') {
            config.host_path(host);
        } else {
            config.host(host);
        }
    }
    for addr in &hostaddrs {
        config.hostaddr(*addr);
        // tokio-postgres takes the TLS server name from `host` only; libpq
        // too, and then needs no name where none is checked. The address
        // stands in for the name (verify-full is refused later without a host).
        if hosts.is_empty() {
            config.host(addr.to_string());
        }
    }
    if let Some(ports) = params.remove("port") {
        for port in ports.split(',') {
            let port = match port.trim() {
                "" => 5432,
                // Not quoted: a password with a raw '/' makes its end a "port".
                port => port
                    .parse()
                    .map_err(|_| invalid("a port of the database URL is not a TCP port number"))?,
            };
            config.port(port);
        }
    }
    Ok(Hosts {
        sockets_only: hostaddrs.is_empty()
            && config
                .get_hosts()
                .iter()
                .all(|host| !matches!(host, Host::Tcp(_))),
        named: !hosts.is_empty(),
    })
}

/// Refuses the options that would change what is checked or who connects
/// and that cannot be honoured; drops the ones that change nothing here.
fn refuse_or_ignore_the_rest(params: &mut BTreeMap<String, String>) -> Result<(), ConnectionError> {
    for ignored in ["sslcompression", "krbsrvname", "gsslib", "gssdelegation"] {
        params.remove(ignored);
    }
    if let Some(mode) = params.remove("gssencmode")
        && mode != "disable"
        && mode != "prefer"
    {
        return Err(invalid(format!(
            "gssencmode={mode} is not supported: no GSSAPI encryption here (use disable or prefer)"
        )));
    }
    if let Some(replication) = params.remove("replication")
        && !matches!(replication.as_str(), "0" | "false" | "off" | "no")
    {
        return Err(invalid("replication connections are not supported"));
    }
    let refused: &[(&str, &str)] = &[
        (
            "sslpassword",
            "encrypted client keys cannot be read; decrypt the key file",
        ),
        (
            "require_auth",
            "the authentication method cannot be restricted here",
        ),
        (
            "requirepeer",
            "the socket peer's user cannot be checked here",
        ),
        ("sslkeylogfile", "TLS key logging is not supported"),
        (
            "service",
            "pg_service.conf is not read; put the parameters in the URL",
        ),
        ("passfile", "password files are not read; use PGPASSWORD"),
    ];
    for (option, why) in refused {
        if params
            .remove(*option)
            .is_some_and(|value| !value.is_empty())
        {
            return Err(invalid(format!("{option} is not supported: {why}")));
        }
    }
    Ok(())
}

/// libpq's sslmode values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// What is checked of the server's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    /// Nothing but the handshake signatures.
    Nothing,
    /// The chain up to a root certificate, not the name.
    Chain,
    /// The chain and the host name.
    ChainAndName,
}

/// The TLS options, resolved; the files are read by [`TlsSettings::client_config`].
#[derive(Debug)]
struct TlsSettings {
    mode: SslMode,
    root_cert: Option<PathBuf>,
    crl_file: Option<PathBuf>,
    crl_dir: Option<PathBuf>,
    /// Certificate chain and key files.
    client_cert: Option<(PathBuf, PathBuf)>,
    versions: Vec<&'static SupportedProtocolVersion>,
    sni: bool,
    direct: bool,
    /// Whether TLS may be used at all: not with sslmode=disable, nor on
    /// Unix-domain sockets. When not, no file is read (as libpq).
    used: bool,
}

impl TlsSettings {
    fn from_parameters(
        params: &mut BTreeMap<String, String>,
        env: &impl Fn(&str) -> Option<String>,
        hosts: &Hosts,
    ) -> Result<TlsSettings, ConnectionError> {
        let mode = match params.remove("sslmode").as_deref() {
            None | Some("prefer") => SslMode::Prefer,
            Some("disable") => SslMode::Disable,
            Some("allow") => SslMode::Allow,
            Some("require") => SslMode::Require,
            Some("verify-ca") => SslMode::VerifyCa,
            Some("verify-full") => SslMode::VerifyFull,
            Some(other) => {
                return Err(invalid(format!(
                    "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, \
                     verify-full"
                )));
            }
        };
        let home = env("HOME")
            .filter(|home| !home.is_empty())
            .map(PathBuf::from);
        let in_home = |file: &str| {
            home.as_ref()
                .map(|home| home.join(".postgresql").join(file))
        };

        let root_cert = match params.remove("sslrootcert") {
            Some(system) if system == "system" => {
                return Err(invalid(
                    "sslrootcert=system is not supported: give the path of the CA bundle",
                ));
            }
            Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
            // libpq's default, used when it exists.
            _ => in_home("root.crt").filter(|path| path.exists()),
        };
        let verifies = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull);
        if verifies && root_cert.is_none() && hosts.used_for_tls() {
            return Err(invalid(format!(
                "sslmode={} needs the server's CA certificate: set sslrootcert to its file, or \
                 put it in {}",
                if mode == SslMode::VerifyCa {
                    "verify-ca"
                } else {
                    "verify-full"
                },
                in_home("root.crt").map_or("~/.postgresql/root.crt".to_string(), |path| path
                    .display()
                    .to_string())
            )));
        }
        if mode == SslMode::VerifyFull && !hosts.named && !hosts.sockets_only {
            return Err(invalid(
                "sslmode=verify-full needs a host name to check the certificate against; \
                 hostaddr alone gives none (set host too)",
            ));
        }

        let crl_file = params
            .remove("sslcrl")
            .filter(|path| !path.is_empty())
            .map(PathBuf::from);
        let crl_dir = params
            .remove("sslcrldir")
            .filter(|path| !path.is_empty())
            .map(PathBuf::from);

        let cert_mode = params.remove("sslcertmode");
        let explicit_cert = params.remove("sslcert").filter(|path| !path.is_empty());
        let explicit_key = params.remove("sslkey").filter(|path| !path.is_empty());
        let client_cert = match cert_mode.as_deref() {
            Some("disable") => None,
            None | Some("allow") => match explicit_cert {
                Some(cert) => {
                    let key = explicit_key
                        .map(PathBuf::from)
                        .or_else(|| in_home("postgresql.key"));
                    let key = key.ok_or_else(|| {
                        invalid("sslcert is set but not sslkey (and HOME is not set)")
                    })?;
                    Some((PathBuf::from(cert), key))
                }
                // libpq's defaults, used when the certificate exists.
                None => in_home("postgresql.crt")
                    .filter(|path| path.exists())
                    .and_then(|cert| {
                        let key = explicit_key
                            .map(PathBuf::from)
                            .or_else(|| in_home("postgresql.key"))?;
                        Some((cert, key))
                    }),
            },
            Some("require") => {
                return Err(invalid(
                    "sslcertmode=require is not supported (use allow, the default)",
                ));
            }
            Some(other) => {
                return Err(invalid(format!(
                    "sslcertmode={other} is not one of disable, allow, require"
                )));
            }
        };

        let mut version = |option: &str| -> Result<Option<u8>, ConnectionError> {
            match params.remove(option).as_deref() {
                None | Some("") => Ok(None),
                Some("TLSv1") => Ok(Some(10)),
                Some("TLSv1.1") => Ok(Some(11)),
                Some("TLSv1.2") => Ok(Some(12)),
                Some("TLSv1.3") => Ok(Some(13)),
                Some(other) => Err(invalid(format!(
                    "{option}={other} is not one of TLSv1, TLSv1.1, TLSv1.2, TLSv1.3"
                ))),
            }
        };
        let min = version("ssl_min_protocol_version")?.unwrap_or(12);
        let max = version("ssl_max_protocol_version")?.unwrap_or(13);
        let versions: Vec<_> = [(12, &TLS12), (13, &TLS13)]
            .into_iter()
            .filter(|(number, _)| (min..=max).contains(number))
            .map(|(_, version)| version)
            .collect();
        if versions.is_empty() {
            return Err(invalid(
                "ssl_min_protocol_version/ssl_max_protocol_version leave no TLS version this \
                 client speaks (TLSv1.2 and TLSv1.3)",
            ));
        }

        let sni = match params.remove("sslsni").as_deref() {
            None | Some("1") => true,
            Some("0") => false,
            Some(other) => return Err(invalid(format!("sslsni={other} is not 0 or 1"))),
        };
        let direct = match params.remove("sslnegotiation").as_deref() {
            None | Some("postgres") => false,
            Some("direct") => true,
            Some(other) => {
                return Err(invalid(format!(
                    "sslnegotiation={other} is not postgres or direct"
                )));
            }
        };
        if direct
            && !matches!(
                mode,
                SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull
            )
        {
            return Err(invalid(
                "sslnegotiation=direct needs sslmode require, verify-ca or verify-full",
            ));
        }

        Ok(TlsSettings {
            mode,
            root_cert,
            crl_file,
            crl_dir,
            client_cert,
            versions,
            sni,
            direct,
            used: mode != SslMode::Disable && !hosts.sockets_only,
        })
    }

    /// What is checked of the server's certificate: as libpq, a root
    /// certificate given (or found) means the chain is checked.
    fn check(&self) -> Check {
        match (self.mode, &self.root_cert) {
            _ if !self.used => Check::Nothing,
            (SslMode::VerifyFull, _) => Check::ChainAndName,
            (SslMode::VerifyCa, _) | (_, Some(_)) => Check::Chain,
            (_, None) => Check::Nothing,
        }
    }

    /// The rustls configuration, the files read now. Messages name the
    /// files (paths hold no credential) and why they are unusable.
    fn client_config(&self) -> Result<ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&self.versions)
            .map_err(|error| format!("no TLS version to offer: {error}"))?;
        let verifier: Arc<dyn ServerCertVerifier> = match (self.check(), &self.root_cert) {
            (Check::Nothing, _) | (_, None) => Arc::new(NoCertificateCheck(Arc::clone(&provider))),
            (check, Some(root_cert)) => {
                let webpki = self.webpki_verifier(root_cert, &provider)?;
                if check == Check::Chain {
                    Arc::new(ChainOnly(webpki))
                } else {
                    webpki
                }
            }
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match &self.client_cert {
            Some((cert_file, key_file)) if self.used => {
                let chain = read_certificates(cert_file, "sslcert")?;
                let key = PrivateKeyDer::from_pem_file(key_file).map_err(|error| {
                    format!(
                        "sslkey {}: no usable private key ({error})",
                        key_file.display()
                    )
                })?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|error| format!("sslcert/sslkey: {error}"))?
            }
            _ => builder.with_no_client_auth(),
        };
        config.enable_sni = self.sni;
        if self.direct {
            // PostgreSQL 17 refuses a direct TLS connection without it.
            config.alpn_protocols = vec![b"postgresql".to_vec()];
        }
        Ok(config)
    }

    fn webpki_verifier(
        &self,
        root_cert: &Path,
        provider: &Arc<CryptoProvider>,
    ) -> Result<Arc<WebPkiServerVerifier>, String> {
        let mut roots = RootCertStore::empty();
        let (added, _) =
            roots.add_parsable_certificates(read_certificates(root_cert, "sslrootcert")?);
        if added == 0 {
            return Err(format!(
                "sslrootcert {}: no usable CA certificate",
                root_cert.display()
            ));
        }
        let mut crls = Vec::new();
        if let Some(file) = &self.crl_file {
            crls.extend(read_crls(file)?);
        }
        if let Some(dir) = &self.crl_dir {
            let entries = std::fs::read_dir(dir)
                .map_err(|error| format!("sslcrldir {}: {error}", dir.display()))?;
            for entry in entries {
                let path = entry
                    .map_err(|error| format!("sslcrldir {}: {error}", dir.display()))?
                    .path();
                if path.is_file() {
                    crls.extend(read_crls(&path)?);
                }
            }
        }
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::clone(provider))
            .with_crls(crls)
            .build()
            .map_err(|error| format!("sslrootcert {}: {error}", root_cert.display()))
    }
}

fn read_certificates(file: &Path, option: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let unusable = |error: &dyn std::fmt::Display| format!("{option} {}: {error}", file.display());
    let certificates = CertificateDer::pem_file_iter(file)
        .map_err(|error| unusable(&error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| unusable(&error))?;
    if certificates.is_empty() {
        return Err(unusable(&"no PEM certificate in the file"));
    }
    Ok(certificates)
}

fn read_crls(file: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let unusable = |error: &dyn std::fmt::Display| format!("CRL {}: {error}", file.display());
    CertificateRevocationListDer::pem_file_iter(file)
        .map_err(|error| unusable(&error))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| unusable(&error))
}

/// sslmode allow, prefer or require without a root certificate: any
/// certificate is accepted, as libpq does, but the handshake signatures are
/// verified, so the server holds the key of the certificate it presents.
#[derive(Debug)]
struct NoCertificateCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertificateCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// sslmode verify-ca: webpki's verification, except that a certificate not
/// valid for the host name is accepted. webpki checks the name last, after
/// the chain, validity dates, usage and revocation, so nothing else is skipped.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.0.root_hint_subjects()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory of its own under the system's temporary directory.
    fn scratch_dir() -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("todo-connect-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A CA certificate, written to `dir/name`.
    fn write_ca(dir: &Path, name: &str) -> PathBuf {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = rcgen::KeyPair::generate().unwrap();
        let path = dir.join(name);
        std::fs::write(&path, params.self_signed(&key).unwrap().pem()).unwrap();
        path
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn parse(url: &str) -> Result<AsyncConnector, ConnectionError> {
        AsyncConnector::from_url(url, "", no_env)
    }

    fn message(error: ConnectionError) -> String {
        match error {
            ConnectionError::InvalidConnectionUrl(message)
            | ConnectionError::BadConnection(message) => message,
            other => panic!("unexpected error {other:?}"),
        }
    }

    #[test]
    fn each_sslmode_maps_to_the_tls_libpq_would_use() {
        let dir = scratch_dir();
        let ca = write_ca(&dir, "ca.pem");
        let base = "postgres://app:hunter2@db.example:5432/todo";
        let cases = [
            ("", PgSslMode::Prefer, Check::Nothing),
            ("?sslmode=disable", PgSslMode::Disable, Check::Nothing),
            ("?sslmode=allow", PgSslMode::Prefer, Check::Nothing),
            ("?sslmode=prefer", PgSslMode::Prefer, Check::Nothing),
            ("?sslmode=require", PgSslMode::Require, Check::Nothing),
            (
                "?sslmode=require&sslrootcert=CA",
                PgSslMode::Require,
                Check::Chain,
            ),
            (
                "?sslmode=prefer&sslrootcert=CA",
                PgSslMode::Prefer,
                Check::Chain,
            ),
            (
                "?sslmode=verify-ca&sslrootcert=CA",
                PgSslMode::Require,
                Check::Chain,
            ),
            (
                "?sslmode=verify-full&sslrootcert=CA",
                PgSslMode::Require,
                Check::ChainAndName,
            ),
        ];
        for (query, ssl_mode, check) in cases {
            let url = format!("{base}{}", query.replace("CA", ca.to_str().unwrap()));
            let connector = parse(&url).unwrap_or_else(|error| panic!("{query}: {error}"));
            assert_eq!(connector.config.get_ssl_mode(), ssl_mode, "{query}");
            assert_eq!(connector.tls.check(), check, "{query}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_url_the_app_builds_parses_with_libpq_units() {
        let url = todo_common::pg_url::with_connection_options(
            &SecretString::from("postgres://app:p%40ss@db:6432/todo?sslmode=require"),
            Duration::from_secs(1),
            "todo-app",
        );

        let connector = AsyncConnector::new(&url, "-c statement_timeout=5000").unwrap();

        let config = &connector.config;
        assert_eq!(config.get_user(), Some("app"));
        assert_eq!(config.get_password(), Some(&b"p@ss"[..]));
        assert_eq!(config.get_dbname(), Some("todo"));
        assert_eq!(config.get_hosts(), [Host::Tcp("db".into())]);
        assert_eq!(config.get_ports(), [6432]);
        assert_eq!(config.get_application_name(), Some("todo-app"));
        assert!(config.get_keepalives());
        assert_eq!(config.get_keepalives_idle(), Duration::from_secs(10));
        assert_eq!(
            config.get_keepalives_interval(),
            Some(Duration::from_secs(5))
        );
        // keepalives_count, under tokio-postgres's name.
        assert_eq!(config.get_keepalives_retries(), Some(3));
        // Milliseconds, as libpq reads them (not 10000 seconds).
        assert_eq!(
            config.get_tcp_user_timeout(),
            Some(&Duration::from_secs(10))
        );
        // libpq's minimum of 2 seconds.
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(2)));
        assert_eq!(connector.attempt_timeout, Some(Duration::from_secs(2)));
        assert_eq!(config.get_options(), Some("-c statement_timeout=5000"));
    }

    #[test]
    fn session_options_are_appended_to_the_urls_options() {
        let connector = AsyncConnector::from_url(
            "postgres://app@db/todo?options=-c%20search_path%3Dtodo&keepalives=0",
            "-c statement_timeout=5000 -c enable_seqscan=off",
            no_env,
        )
        .unwrap();

        assert_eq!(
            connector.config.get_options(),
            Some("-c search_path=todo -c statement_timeout=5000 -c enable_seqscan=off")
        );
        assert!(!connector.config.get_keepalives());
    }

    #[test]
    fn hosts_ports_and_sockets_read_as_libpq_reads_them() {
        let config = parse("postgresql://app@h1:5433,[::1],h3:/todo")
            .unwrap()
            .config;
        assert_eq!(
            config.get_hosts(),
            [
                Host::Tcp("h1".into()),
                Host::Tcp("::1".into()),
                Host::Tcp("h3".into())
            ]
        );
        assert_eq!(config.get_ports(), [5433, 5432, 5432]);

        // A query's host replaces the authority's; a socket directory gets no TLS.
        let socket =
            parse("postgres://app@ignored/todo?host=%2Fvar%2Frun%2Fpostgresql&sslmode=require")
                .unwrap();
        assert_eq!(
            socket.config.get_hosts(),
            [Host::Unix("/var/run/postgresql".into())]
        );
        assert_eq!(socket.config.get_ssl_mode(), PgSslMode::Disable);

        // hostaddr alone: the address stands in for the TLS name...
        let addr = parse("postgres://app@/todo?hostaddr=10.0.0.7&sslmode=require").unwrap();
        assert_eq!(addr.config.get_hosts(), [Host::Tcp("10.0.0.7".into())]);
        // ...but gives verify-full no name to check.
        let dir = scratch_dir();
        let ca = write_ca(&dir, "ca.pem");
        let error = parse(&format!(
            "postgres://app@/todo?hostaddr=10.0.0.7&sslmode=verify-full&sslrootcert={}",
            ca.display()
        ))
        .unwrap_err();
        assert!(message(error).contains("host name"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_environment_fills_what_the_url_leaves_out() {
        let env = |name: &str| match name {
            "PGPASSWORD" => Some("from-env".to_string()),
            "PGSSLMODE" => Some("require".to_string()),
            "PGPORT" => Some("6543".to_string()),
            "PGAPPNAME" => Some("env-app".to_string()),
            _ => None,
        };

        let bare = AsyncConnector::from_url("postgres://app@db/todo", "", env).unwrap();
        assert_eq!(bare.config.get_password(), Some(&b"from-env"[..]));
        assert_eq!(bare.config.get_ssl_mode(), PgSslMode::Require);
        assert_eq!(bare.config.get_ports(), [6543]);
        assert_eq!(bare.config.get_application_name(), Some("env-app"));

        let explicit = AsyncConnector::from_url(
            "postgres://app:url-pw@db:5432/todo?sslmode=disable&application_name=url-app",
            "",
            env,
        )
        .unwrap();
        assert_eq!(explicit.config.get_password(), Some(&b"url-pw"[..]));
        assert_eq!(explicit.config.get_ssl_mode(), PgSslMode::Disable);
        assert_eq!(explicit.config.get_ports(), [5432]);
        assert_eq!(explicit.config.get_application_name(), Some("url-app"));
    }

    #[test]
    fn verify_modes_without_a_root_certificate_say_where_it_was_looked_for() {
        let home = scratch_dir();
        let env = |name: &str| (name == "HOME").then(|| home.display().to_string());

        for mode in ["verify-ca", "verify-full"] {
            let url = format!("postgres://app:hunter2@db/todo?sslmode={mode}");
            let text = message(AsyncConnector::from_url(&url, "", env).unwrap_err());
            assert!(text.contains(&format!("sslmode={mode}")), "{text}");
            assert!(text.contains("sslrootcert"), "{text}");
            assert!(text.contains(".postgresql/root.crt"), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
        }

        // libpq's default file, when it exists, serves (and makes require check the chain).
        std::fs::create_dir_all(home.join(".postgresql")).unwrap();
        write_ca(&home.join(".postgresql"), "root.crt");
        let full = AsyncConnector::from_url("postgres://app@db/todo?sslmode=verify-full", "", env)
            .unwrap();
        assert_eq!(full.tls.check(), Check::ChainAndName);
        let require =
            AsyncConnector::from_url("postgres://app@db/todo?sslmode=require", "", env).unwrap();
        assert_eq!(require.tls.check(), Check::Chain);
        std::fs::remove_dir_all(home).unwrap();
    }

    #[test]
    fn unusable_certificate_files_are_refused_at_once() {
        let dir = scratch_dir();
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        for query in [
            format!(
                "sslmode=require&sslrootcert={}",
                dir.join("missing.pem").display()
            ),
            format!("sslmode=verify-full&sslrootcert={}", not_pem.display()),
            "sslmode=verify-full&sslrootcert=system".to_string(),
        ] {
            let url = format!("postgres://app:hunter2@db/todo?{query}");
            let text = message(parse(&url).unwrap_err());
            assert!(text.contains("sslrootcert"), "{query}: {text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_bad_url_is_refused_without_its_password_or_user() {
        let cases = [
            ("mysql://app:hunter2@db/todo", "postgres://"),
            ("postgres://app:hunter2%zz@db/todo", "%-escapes"),
            ("postgres://app:hunter2@db:54x2/todo", "port"),
            ("postgres://app:hunter2@db/todo?hunter2", "no '='"),
            // A raw '/' in the password ends the authority early.
            ("postgres://app:hunter2/x@db/todo", "no user"),
            ("postgres://u@app:hunter2/x@db/todo", "port"),
            (
                "postgres://app:hunter2@db/todo?sslmode=verify",
                "sslmode=verify",
            ),
            (
                "postgres://app:hunter2@db/todo?keepalives_count=many",
                "keepalives_count",
            ),
            (
                "postgres://app:hunter2@db/todo?tcp_user_timeout=x",
                "tcp_user_timeout",
            ),
            ("postgres://app:hunter2@db/todo?hostaddr=db", "hostaddr"),
            (
                "postgres://app:hunter2@db/todo?target_session_attrs=primary",
                "target_session_attrs",
            ),
            (
                "postgres://app:hunter2@db/todo?frobnicate=1",
                "unknown option `frobnicate`",
            ),
            (
                "postgres://app:hunter2@db/todo?sslpassword=hunter2",
                "sslpassword",
            ),
            (
                "postgres://app:hunter2@db/todo?require_auth=scram-sha-256",
                "require_auth",
            ),
            (
                "postgres://app:hunter2@db/todo?gssencmode=require",
                "gssencmode",
            ),
            (
                "postgres://app:hunter2@db/todo?client_encoding=LATIN1",
                "client_encoding",
            ),
            (
                "postgres://app:hunter2@db/todo?ssl_min_protocol_version=TLSv1.3&ssl_max_protocol_version=TLSv1.2",
                "TLS",
            ),
            (
                "postgres://app:hunter2@db/todo?sslnegotiation=direct",
                "sslnegotiation=direct",
            ),
            ("postgres://:hunter2@db/todo", "no user"),
            ("postgres://app:hunter2@/todo", "no host"),
            ("postgres://app:hunter2@[::1/todo", "'['"),
        ];
        for (url, expected) in cases {
            let text = message(parse(url).unwrap_err());
            assert!(text.contains(expected), "{url}: {text}");
            assert!(
                !text.contains("hunter2") && !text.contains("app"),
                "{url}: {text}"
            );
        }
    }

    #[test]
    fn no_certificate_file_is_read_where_tls_is_not_used() {
        let home = scratch_dir();
        std::fs::create_dir_all(home.join(".postgresql")).unwrap();
        std::fs::write(home.join(".postgresql/root.crt"), "not a certificate").unwrap();
        let env = |name: &str| (name == "HOME").then(|| home.display().to_string());

        let disabled =
            AsyncConnector::from_url("postgres://app@db/todo?sslmode=disable", "", env).unwrap();
        assert_eq!(disabled.tls.check(), Check::Nothing);
        let socket = AsyncConnector::from_url(
            "postgres://app@%2Frun%2Fpostgresql/todo?sslmode=verify-full&sslcert=/nonexistent&sslkey=/nonexistent",
            "",
            no_env,
        )
        .unwrap();
        assert_eq!(socket.config.get_ssl_mode(), PgSslMode::Disable);
        // Where TLS is used, the broken default file is refused.
        let text = message(
            AsyncConnector::from_url("postgres://app@db/todo?sslmode=require", "", env)
                .unwrap_err(),
        );
        assert!(text.contains("root.crt"), "{text}");
        std::fs::remove_dir_all(home).unwrap();
    }

    #[test]
    fn ignored_options_are_accepted() {
        let connector = parse(
            "postgres://app@db/todo?sslcompression=1&gssencmode=prefer&krbsrvname=postgres\
             &client_encoding=UTF8&fallback_application_name=fallback&sslsni=0",
        )
        .unwrap();
        assert_eq!(connector.config.get_application_name(), Some("fallback"));
        assert!(!connector.tls.sni);
    }

    #[test]
    fn debug_output_holds_no_credentials() {
        let connector = parse("postgres://someone:hunter2@db/todo?options=-c%20role%3Dx").unwrap();
        let debug = format!("{connector:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("someone"),
            "{debug}"
        );
        assert!(debug.contains("db"), "{debug}");
    }

    #[tokio::test]
    async fn a_refused_connection_says_why_without_the_password() {
        // Port 1 on loopback: nothing listens there.
        let connector = parse("postgres://app:hunter2@127.0.0.1:1/todo?sslmode=require").unwrap();

        let Err(error) = connector.connect().await else {
            panic!("nothing listens on port 1");
        };
        let text = message(error);

        assert!(text.contains("error connecting to server"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }
}
