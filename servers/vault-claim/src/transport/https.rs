//! Git's smart-HTTP protocol over reqwest (blocking) on rustls.
//!
//! The protocol (git's `gitprotocol-http`) is two requests per service:
//! `GET <repo>/info/refs?service=git-upload-pack` answers the ref advertisement with
//! content type `application/x-git-upload-pack-advertisement`, then each negotiation step
//! is `POST <repo>/git-upload-pack` with an `...-request` body and an `...-result` answer
//! (the same with `git-receive-pack` for push). libgit2 speaks the pkt-lines; this module
//! only moves bytes, adds credentials, and turns HTTP failures into errors a person can act
//! on. Dumb HTTP (plain files) is not supported: it cannot push.
//!
//! reqwest's blocking client runs its own runtime thread, so these calls must run on a
//! blocking thread (`spawn_blocking`), never on an async runtime thread.

use std::error::Error as _;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use git2::transport::{Service, SmartSubtransport, SmartSubtransportStream};
use reqwest::Url;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{ACCEPT, CONTENT_TYPE};

use super::credentials::{self, HttpAuth};
use super::{TransportConfig, TransportError};

/// Sent as `User-Agent`; some hosts only speak the smart protocol to agents named `git/…`.
const USER_AGENT: &str = concat!("git/2.0 (aie-vault-claim/", env!("CARGO_PKG_VERSION"), ")");

/// The most response body quoted in an error message.
const BODY_HINT_CHARS: usize = 200;

/// A remote URL checked for use over HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// The repository's base URL without user or password and without a trailing `/`.
    pub base: Url,
    /// The URL as given, with a user name kept for choosing credentials (no password).
    pub lookup: Url,
}

impl HttpTarget {
    /// The URL for one endpoint under the repository, e.g. `info/refs`.
    fn endpoint(&self, tail: &str) -> String {
        format!("{}/{tail}", self.base.as_str().trim_end_matches('/'))
    }

    /// The URL to name in messages.
    fn display(&self) -> String {
        self.base.as_str().trim_end_matches('/').to_owned()
    }
}

/// Parses and checks an `https://` (or loopback `http://`) remote URL.
pub fn parse_http_url(url: &str) -> Result<HttpTarget, TransportError> {
    let shown = redact(url);
    let bad = |reason: &str| TransportError::BadUrl {
        url: shown.clone(),
        reason: reason.to_owned(),
    };
    let mut lookup = Url::parse(url).map_err(|e| bad(&format!("not a valid URL ({e})")))?;
    if !matches!(lookup.scheme(), "https" | "http") {
        return Err(bad("not an http(s) URL"));
    }
    let Some(host) = lookup.host_str().map(str::to_owned) else {
        return Err(bad("the URL has no host"));
    };
    if lookup.password().is_some() {
        return Err(TransportError::PasswordInUrl { url: shown });
    }
    // Plain HTTP would send credentials and the vault in the clear; it is only for tests.
    if lookup.scheme() == "http" && !is_loopback(&host) {
        return Err(bad(
            "plain http:// is only allowed to loopback addresses (127.0.0.1, ::1, localhost); \
             use https://",
        ));
    }
    if lookup.query().is_some() {
        return Err(bad("a git remote URL cannot have a query string (`?…`)"));
    }
    lookup.set_fragment(None);
    let mut base = lookup.clone();
    // Both setters only fail for URLs without a host, excluded above.
    let _ = base.set_username("");
    let _ = base.set_password(None);
    let path = base.path().trim_end_matches('/').to_owned();
    base.set_path(&path);
    Ok(HttpTarget { base, lookup })
}

/// True for 127.0.0.0/8, ::1 and `localhost` (as a URL writes them: IPv6 in brackets).
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The URL with any user and password removed, for messages; best effort on bad URLs.
pub fn redact(url: &str) -> String {
    if let Ok(mut parsed) = Url::parse(url) {
        if parsed.has_host() {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
        }
        return parsed.to_string();
    }
    // Not parseable: drop everything between `://` and the last `@` of the authority.
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    }
}

/// The git program a service talks to on the server.
fn service_name(service: Service) -> &'static str {
    match service {
        Service::UploadPackLs | Service::UploadPack => "git-upload-pack",
        Service::ReceivePackLs | Service::ReceivePack => "git-receive-pack",
    }
}

/// Checks a response's content type against the one git's protocol requires, ignoring
/// parameters such as `; charset=…` and case.
pub fn content_type_is(got: Option<&str>, expected: &str) -> bool {
    got.and_then(|ct| ct.split(';').next())
        .is_some_and(|ct| ct.trim().eq_ignore_ascii_case(expected))
}

/// One connection's worth of state: the client, the repository and its credentials.
#[derive(Clone)]
struct Session {
    /// The URL libgit2 asked for, to notice a different one.
    requested: String,
    client: Client,
    target: HttpTarget,
    auth: Option<HttpAuth>,
    config: Arc<TransportConfig>,
}

impl Session {
    /// Adds the credentials, if any, to a request.
    fn authorize(&self, request: RequestBuilder) -> RequestBuilder {
        match &self.auth {
            Some(HttpAuth::Basic { user, password }) => request.basic_auth(user, Some(password)),
            Some(HttpAuth::Bearer { token }) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a request, mapping a failure to connect (TLS included) to a clear error.
    fn send(&self, request: RequestBuilder) -> Result<Response, TransportError> {
        self.authorize(request)
            .send()
            .map_err(|e| classify(e, &self.target.display()))
    }

    /// Checks status and content type, turning every other answer into its error.
    fn check(&self, response: Response, expected: &str) -> Result<Response, TransportError> {
        let url = self.target.display();
        let status = response.status().as_u16();
        match status {
            200 => {
                let got = response
                    .headers()
                    .get(CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok());
                if content_type_is(got, expected) {
                    Ok(response)
                } else {
                    Err(TransportError::NotSmartHttp {
                        url,
                        got: got.unwrap_or("(none)").to_owned(),
                        expected: expected.to_owned(),
                    })
                }
            }
            401 => Err(TransportError::Unauthorized {
                url,
                detail: self.credentials_hint(),
            }),
            403 => Err(TransportError::Forbidden {
                url,
                detail: match &self.auth {
                    Some(auth) => format!(" for {}", auth.describe()),
                    None => String::new(),
                },
            }),
            404 => Err(TransportError::NotFound { url }),
            _ => Err(TransportError::Status {
                url,
                status,
                body: body_hint(response),
            }),
        }
    }

    /// Says which credentials were refused, or where the missing ones belong.
    fn credentials_hint(&self) -> String {
        let file = self.config.credentials_path();
        match (&self.auth, file) {
            (Some(auth), Some(file)) => format!(
                "the credentials for {} from {} were refused",
                auth.describe(),
                file.display()
            ),
            (Some(auth), None) => format!("the credentials for {} were refused", auth.describe()),
            (None, Some(file)) => format!(
                "none found for this host in {}; add a line `{}://USER:TOKEN@{}` there (mode 0600)",
                file.display(),
                self.target.base.scheme(),
                host_port(&self.target.base)
            ),
            (None, None) => "no state folder is configured, so aie has no credentials to send \
                             (they go in `git-credentials` there)"
                .to_owned(),
        }
    }
}

/// `host` or `host:port` of a URL, for hints.
fn host_port(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    }
}

/// The start of a response body on one line, for an error message.
fn body_hint(response: Response) -> String {
    let mut body = String::new();
    let _ = response
        .take(4 * BODY_HINT_CHARS as u64)
        .read_to_string(&mut body);
    let line: String = body
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(BODY_HINT_CHARS)
        .collect();
    if line.is_empty() {
        "(empty body)".to_owned()
    } else {
        line
    }
}

/// Turns a reqwest failure into a TLS or connection error naming `url`.
fn classify(error: reqwest::Error, url: &str) -> TransportError {
    let error = error.without_url();
    if let Some(detail) = tls_reason(&error) {
        return TransportError::Tls {
            url: url.to_owned(),
            detail,
        };
    }
    let mut detail = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !detail.contains(&text) {
            detail.push_str(": ");
            detail.push_str(&text);
        }
        source = e.source();
    }
    if error.is_timeout() {
        detail.push_str(" (timed out)");
    }
    TransportError::Connect {
        url: url.to_owned(),
        detail,
    }
}

/// Finds a rustls error anywhere in an error's chain. An `io::Error`'s `source()` skips
/// the error it wraps (and hyper wraps rustls' in two of them), so those are opened with
/// `get_ref` instead.
fn tls_reason(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls.to_string());
        }
        current = match e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// Builds the HTTP client: rustls, the configured CA bundle, git's user agent, timeouts.
fn build_client(config: &TransportConfig) -> Result<Client, TransportError> {
    let mut builder = Client::builder()
        .user_agent(USER_AGENT)
        .connect_timeout(config.connect_timeout)
        .timeout(config.io_timeout)
        // Hosts move repositories with redirects; a few hops are normal, a loop is not.
        .redirect(reqwest::redirect::Policy::limited(5));
    if let Some(path) = &config.ca_file {
        let bad = |detail: String| TransportError::CaBundle {
            path: path.clone(),
            detail,
        };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no PEM certificate in it".to_owned()));
        }
        builder = builder.tls_certs_only(certs);
    }
    builder.build().map_err(|e| TransportError::Connect {
        url: "(https client)".to_owned(),
        detail: format!("cannot set up the HTTPS client: {e}"),
    })
}

/// libgit2's handle on the https transport for one remote connection.
pub struct HttpsSubtransport {
    config: Arc<TransportConfig>,
    /// Built at the first action and kept for the ones that follow (ls, then the POSTs).
    session: Mutex<Option<Session>>,
}

impl HttpsSubtransport {
    /// A transport using `config` for credentials and trust.
    pub fn new(config: Arc<TransportConfig>) -> Self {
        Self {
            config,
            session: Mutex::new(None),
        }
    }

    /// The session for `url`, built on first use.
    fn session(&self, url: &str) -> Result<Session, TransportError> {
        let mut slot = self.session.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(session) = slot.as_ref().filter(|s| s.requested == url) {
            return Ok(session.clone());
        }
        let target = parse_http_url(url)?;
        let auth = match self.config.credentials_path() {
            Some(path) => credentials::lookup(&path, &target.lookup)?,
            None => None,
        };
        let session = Session {
            requested: url.to_owned(),
            client: build_client(&self.config)?,
            target,
            auth,
            config: self.config.clone(),
        };
        *slot = Some(session.clone());
        Ok(session)
    }

    /// Remembers where `info/refs` was redirected to, so the POSTs go there as git does.
    fn follow_redirect(&self, session: &mut Session, landed: &Url) -> Result<(), TransportError> {
        let mut base = landed.clone();
        base.set_query(None);
        let Some(path) = base.path().strip_suffix("/info/refs").map(str::to_owned) else {
            return Ok(());
        };
        base.set_path(&path);
        if base == session.target.base {
            return Ok(());
        }
        if session.target.base.scheme() == "https" && base.scheme() != "https" {
            return Err(TransportError::BadUrl {
                url: session.target.display(),
                reason: format!("the server redirected to insecure {base}; refusing"),
            });
        }
        let same_origin = base.origin() == session.target.base.origin();
        session.target = HttpTarget {
            lookup: base.clone(),
            base,
        };
        // Credentials belong to one host: never carry them to another.
        if !same_origin {
            session.auth = match self.config.credentials_path() {
                Some(path) => credentials::lookup(&path, &session.target.lookup)?,
                None => None,
            };
        }
        let mut slot = self.session.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(session.clone());
        Ok(())
    }

    /// Starts one action: the ref advertisement now, or an RPC stream that posts on read.
    fn start(
        &self,
        url: &str,
        action: Service,
    ) -> Result<Box<dyn SmartSubtransportStream>, TransportError> {
        let mut session = self.session(url)?;
        let service = service_name(action);
        match action {
            Service::UploadPackLs | Service::ReceivePackLs => {
                let refs = format!("{}?service={service}", session.target.endpoint("info/refs"));
                let response = session.send(
                    session
                        .client
                        .get(&refs)
                        .header(ACCEPT, "*/*")
                        .header("Pragma", "no-cache"),
                )?;
                let landed = response.url().clone();
                let response =
                    session.check(response, &format!("application/x-{service}-advertisement"))?;
                self.follow_redirect(&mut session, &landed)?;
                Ok(Box::new(Advertisement { response }))
            }
            Service::UploadPack | Service::ReceivePack => Ok(Box::new(RpcStream {
                session,
                service,
                request: Vec::new(),
                response: None,
            })),
        }
    }
}

impl SmartSubtransport for HttpsSubtransport {
    fn action(
        &self,
        url: &str,
        action: Service,
    ) -> Result<Box<dyn SmartSubtransportStream>, git2::Error> {
        self.start(url, action).map_err(TransportError::into_git2)
    }

    fn close(&self) -> Result<(), git2::Error> {
        // Each request finishes on its own; nothing stays open between actions.
        Ok(())
    }
}

/// The `info/refs` answer: libgit2 only reads it.
struct Advertisement {
    response: Response,
}

impl Read for Advertisement {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.response.read(buf)
    }
}

impl Write for Advertisement {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        Err(io::Error::other(
            "git protocol error: a write to the ref advertisement",
        ))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One protocol step: libgit2 writes the request body, then reads the answer; the POST is
/// sent at the first read, when the body is complete.
struct RpcStream {
    session: Session,
    service: &'static str,
    request: Vec<u8>,
    response: Option<Response>,
}

impl RpcStream {
    /// Sends the buffered request and checks the answer.
    fn post(&mut self) -> Result<Response, TransportError> {
        let service = self.service;
        let session = &self.session;
        let request = session
            .client
            .post(session.target.endpoint(service))
            .header(CONTENT_TYPE, format!("application/x-{service}-request"))
            .header(ACCEPT, format!("application/x-{service}-result"))
            .body(std::mem::take(&mut self.request));
        let response = session.send(request)?;
        session.check(response, &format!("application/x-{service}-result"))
    }
}

impl Read for RpcStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.response.is_none() {
            self.response = Some(self.post()?);
        }
        match self.response.as_mut() {
            Some(response) => response.read(buf),
            None => Ok(0),
        }
    }
}

impl Write for RpcStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.response.is_some() {
            return Err(io::Error::other(
                "git protocol error: a write after the answer was read",
            ));
        }
        self.request.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Userinfo is split off the base; a user name stays for credential lookup.
    #[test]
    fn parse_strips_userinfo_and_trailing_slash() {
        let t = parse_http_url("https://alice@git.example.com/team/vault.git/").expect("parse");
        assert_eq!(t.base.as_str(), "https://git.example.com/team/vault.git");
        assert_eq!(t.lookup.username(), "alice");
        assert_eq!(
            t.endpoint("info/refs"),
            "https://git.example.com/team/vault.git/info/refs"
        );
        let t = parse_http_url("https://git.example.com:8443").expect("parse");
        assert_eq!(
            t.endpoint("git-upload-pack"),
            "https://git.example.com:8443/git-upload-pack"
        );
    }

    /// A password in the URL is refused, and the message does not repeat it.
    #[test]
    fn parse_refuses_passwords_without_echoing_them() {
        let err = parse_http_url("https://alice:hunter2@git.example.com/r.git")
            .expect_err("password must be refused");
        assert!(matches!(err, TransportError::PasswordInUrl { .. }));
        let text = err.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("https://git.example.com/r.git"), "{text}");
    }

    /// Plain http only to loopback; other schemes and queries are refused.
    #[test]
    fn parse_limits_plain_http_to_loopback() {
        assert!(parse_http_url("http://127.0.0.1:8080/r.git").is_ok());
        assert!(parse_http_url("http://[::1]:8080/r.git").is_ok());
        assert!(parse_http_url("http://localhost/r.git").is_ok());
        let err = parse_http_url("http://git.example.com/r.git").expect_err("must refuse");
        assert!(err.to_string().contains("use https://"), "{err}");
        assert!(parse_http_url("ftp://h.example/r.git").is_err());
        assert!(parse_http_url("https://h.example/r.git?x=1").is_err());
        assert!(parse_http_url("not a url").is_err());
    }

    /// Redaction removes secrets even from URLs that do not parse.
    #[test]
    fn redact_removes_userinfo() {
        assert_eq!(
            redact("https://u:secret@h.example/r.git"),
            "https://h.example/r.git"
        );
        assert_eq!(
            redact("https://u:sec ret@h.example/r"),
            "https://h.example/r"
        );
        assert_eq!(redact("/local/path"), "/local/path");
    }

    /// Content types match git's, ignoring parameters and case; HTML does not pass.
    #[test]
    fn content_type_checks() {
        let adv = "application/x-git-upload-pack-advertisement";
        assert!(content_type_is(Some(adv), adv));
        assert!(content_type_is(
            Some("Application/X-Git-Upload-Pack-Advertisement; charset=utf-8"),
            adv
        ));
        assert!(!content_type_is(Some("text/html; charset=utf-8"), adv));
        assert!(!content_type_is(Some("text/plain"), adv));
        assert!(!content_type_is(None, adv));
        assert!(!content_type_is(
            Some("application/x-git-receive-pack-advertisement"),
            adv
        ));
    }
}
