//! TEMPORARY stand-in for the helper's connector (plain TCP, no TLS).

use secrecy::{ExposeSecret, SecretString};

pub struct AsyncConnector {
    config: tokio_postgres::Config,
}

impl AsyncConnector {
    pub fn new(url: &SecretString, session_options: &str) -> Result<AsyncConnector, diesel::ConnectionError> {
        let text: String = url
            .expose_secret()
            .split(['?', '&'])
            .enumerate()
            .filter(|(i, part)| *i == 0 || !part.starts_with("keepalives_count"))
            .fold(String::new(), |mut acc, (i, part)| {
                if i == 0 { acc.push_str(part) } else { acc.push(if acc.contains('?') { '&' } else { '?' }); acc.push_str(part) }
                acc
            });
        let mut config: tokio_postgres::Config = text
            .parse()
            .map_err(|e: tokio_postgres::Error| diesel::ConnectionError::InvalidConnectionUrl(e.to_string()))?;
        config.options(session_options);
        Ok(AsyncConnector { config })
    }

    pub async fn connect(&self) -> Result<diesel_async::AsyncPgConnection, diesel::ConnectionError> {
        let (client, connection) = self
            .config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| diesel::ConnectionError::BadConnection(e.to_string()))?;
        diesel_async::AsyncPgConnection::try_from_client_and_connection(client, connection).await
    }
}
