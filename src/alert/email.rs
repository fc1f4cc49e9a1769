//! Email alerts through an SMTP relay (lettre): STARTTLS (required, never silently plain) or
//! TLS from the first byte, or plain to a relay on this host only; AUTH with a password from
//! a secret. A plain-text message a tired operator can act on.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::{ContentType, MIME_VERSION_1_0};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};
use secrecy::ExposeSecret;

use super::{Event, Kind, Notifier};
use crate::config::{EmailConfig, SmtpTls};

const TIMEOUT: Duration = Duration::from_secs(15);

pub struct Email {
    transport: SmtpTransport,
    from: Mailbox,
    to: Vec<Mailbox>,
    relay: String,
}

impl Email {
    pub fn new(c: &EmailConfig) -> Result<Email, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let tls = match c.tls {
            SmtpTls::None => None,
            SmtpTls::StartTls | SmtpTls::Tls => {
                let mut params = TlsParameters::builder(c.smtp_host.clone());
                if let Some(ca) = &c.ca_file {
                    let pem = std::fs::read(ca)
                        .map_err(|e| format!("cannot read ca_file {}: {e}", ca.display()))?;
                    let cert = Certificate::from_pem(&pem)
                        .map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
                    params = params.add_root_certificate(cert);
                }
                Some(params.build().map_err(|e| format!("TLS set-up: {e}"))?)
            }
        };
        let mut builder = SmtpTransport::builder_dangerous(&c.smtp_host)
            .port(c.smtp_port)
            .timeout(Some(TIMEOUT));
        builder = match (c.tls, tls) {
            (SmtpTls::StartTls, Some(p)) => builder.tls(Tls::Required(p)),
            (SmtpTls::Tls, Some(p)) => builder.tls(Tls::Wrapper(p)),
            _ => builder.tls(Tls::None),
        };
        if let (Some(user), Some(password)) = (&c.username, &c.password) {
            let password = password.load()?;
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_string(),
            ));
        }
        let parse = |a: &str| {
            a.parse::<Mailbox>()
                .map_err(|e| format!("'{a}' is not an email address: {e}"))
        };
        Ok(Email {
            transport: builder.build(),
            from: parse(&c.from)?,
            to: c.to.iter().map(|a| parse(a)).collect::<Result<_, _>>()?,
            relay: format!("{}:{}", c.smtp_host, c.smtp_port),
        })
    }

    /// The message for `event`.
    fn message(&self, event: &Event) -> Result<Message, String> {
        // Gmail refuses mail without a Message-ID (550-5.7.1) and Postfix adds none by default:
        // every message gets its own, on the sender's domain (lettre adds `Date`).
        // lettre's `body` sets the transfer encoding but no MIME-Version: without it a reader
        // may ignore the charset and the encoding (RFC 2045 §4) and show an error chain
        // that is not ASCII as quoted-printable.
        let mut message = Message::builder()
            .from(self.from.clone())
            .message_id(Some(message_id(self.from.email.domain())))
            .subject(event.subject())
            .header(MIME_VERSION_1_0)
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            message = message.to(to.clone());
        }
        message
            .body(event.text())
            .map_err(|e| format!("building the message: {e}"))
    }
}

/// A unique RFC 5322 `Message-ID`: `<time.random@domain>`.
fn message_id(domain: &str) -> String {
    format!(
        "<{}.{:016x}.coffer@{domain}>",
        chrono::Utc::now().format("%Y%m%d%H%M%S%.6f"),
        rand::random::<u64>()
    )
}

impl Notifier for Email {
    fn name(&self) -> &'static str {
        "email"
    }

    fn wants(&self, _: &Event) -> bool {
        true
    }

    fn send(&self, event: &Event) -> Result<(), String> {
        let message = self.message(event)?;
        self.transport
            .send(&message)
            .map(drop)
            .map_err(|e| format!("SMTP relay {}: {e}", self.relay))?;
        if event.kind == Kind::Test {
            tracing::info!("test email sent through {}", self.relay);
        }
        Ok(())
    }

    fn check(&self) -> Result<String, String> {
        match self.transport.test_connection() {
            Ok(true) => Ok(format!(
                "relay {} accepts the connection and the login",
                self.relay
            )),
            Ok(false) => Err(format!("relay {} did not answer NOOP", self.relay)),
            Err(e) => Err(format!("SMTP relay {}: {e}", self.relay)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_declares_mime_version_charset_and_encoding() {
        let config = crate::config::Config::parse(
            "[encryption]\nrecipients = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\n\
             [store]\ntype = \"local\"\npath = \"/srv/store\"\n\
             [[source]]\nname = \"files\"\ntype = \"directory\"\npath = \"/srv/site\"\n\
             [alerts.email]\nto = [\"ops@example.com\"]\nfrom = \"coffer@example.com\"\n\
             smtp_host = \"127.0.0.1\"\ntls = \"none\"\n",
            std::path::Path::new("/etc/coffer/coffer.toml"),
        )
        .unwrap();
        let email = Email::new(config.alerts.email.as_ref().unwrap()).unwrap();
        let alerts = super::super::Alerts::from_config(&config);
        let mut event = alerts.event(Kind::Failed, "backup", "pg_dump: ошибка".into());
        event.errors = vec!["pg_dump: ошибка: нет доступа к таблице счёт".into()];
        let text = String::from_utf8(email.message(&event).unwrap().formatted()).unwrap();
        let head = &text[..text.find("\r\n\r\n").unwrap()];
        for field in [
            "MIME-Version: 1.0\r\n",
            "Content-Type: text/plain; charset=utf-8\r\n",
            "Content-Transfer-Encoding: ",
            "Message-ID: <",
            "Date: ",
        ] {
            assert!(head.contains(field), "{field:?} not in:\n{head}");
        }
    }
}
