//! The https git transport against a real smart-HTTP server on loopback: `git http-backend`
//! (git's own server side) run as CGI behind a small axum app, served over TLS with a
//! self-signed certificate.

mod transport_support;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use aie_vault_claim::transport::TransportConfig;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::io::AsyncWriteExt as _;
use tokio_util::sync::CancellationToken;
use transport_support::{commit_and_push, git, seed_bare_repo};

/// What the test server does in front of `git http-backend`.
#[derive(Clone)]
enum Gate {
    /// Every request goes to git.
    Open,
    /// Requests need this exact `Authorization` header, else 401.
    Basic { header: String },
    /// Answers every request with an HTML login page, as a web portal would.
    HtmlLoginPage,
}

/// The server's shared state.
struct Backend {
    project_root: PathBuf,
    gate: Gate,
}

/// A TLS smart-HTTP git server on 127.0.0.1; stops when dropped.
struct GitHttpsServer {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for GitHttpsServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl GitHttpsServer {
    /// Serves the bare repositories under `project_root` over TLS with `cert_dir`'s files.
    async fn start(project_root: &Path, tls: &TlsFixture, gate: Gate) -> Self {
        let backend = Arc::new(Backend {
            project_root: project_root.to_path_buf(),
            gate,
        });
        let app = Router::new().fallback(cgi).with_state(backend);
        let tls_config = aie_shared::http::load_tls(&aie_shared::TlsFiles {
            cert: tls.cert.clone(),
            key: tls.key.clone(),
        })
        .expect("load TLS");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let stop = CancellationToken::new();
        let shutdown = stop.clone();
        tokio::spawn(async move {
            let _ = aie_shared::serve(
                listener,
                app,
                Some(tls_config),
                CancellationToken::new(),
                shutdown.cancelled_owned(),
            )
            .await;
        });
        Self { addr, stop }
    }

    /// The https URL of a repository under the project root.
    fn url(&self, repo: &str) -> String {
        format!("https://127.0.0.1:{}/{repo}", self.addr.port())
    }
}

/// Runs one request through `git http-backend` as CGI (RFC 3875).
async fn cgi(State(backend): State<Arc<Backend>>, request: Request) -> Response {
    match &backend.gate {
        Gate::Open => {}
        Gate::Basic { header: expected } => {
            let given = request.headers().get(header::AUTHORIZATION);
            if given.and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Basic realm=\"git\"")],
                    "authentication required",
                )
                    .into_response();
            }
        }
        Gate::HtmlLoginPage => {
            return (
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                "<html><body>Please log in</body></html>",
            )
                .into_response();
        }
    }
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 256 * 1024 * 1024)
        .await
        .expect("request body");
    let header_str = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env("GIT_PROJECT_ROOT", &backend.project_root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or_default())
        .env("CONTENT_TYPE", header_str(header::CONTENT_TYPE))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_USER", "tester")
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run git http-backend");
    let mut stdin = child.stdin.take().expect("stdin");
    // Write the body while git reads it, so neither side waits on a full pipe.
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let output = child.wait_with_output().await.expect("git http-backend");
    let _ = writer.await;
    cgi_response(&output.stdout, &output.stderr)
}

/// Turns a CGI program's output (headers, blank line, body) into a response.
fn cgi_response(stdout: &[u8], stderr: &[u8]) -> Response {
    let split = |sep: &[u8]| stdout.windows(sep.len()).position(|w| w == sep);
    let (head_end, body_start) = match (split(b"\r\n\r\n"), split(b"\n\n")) {
        (Some(crlf), Some(lf)) if lf < crlf => (lf, lf + 2),
        (Some(crlf), _) => (crlf, crlf + 4),
        (None, Some(lf)) => (lf, lf + 2),
        (None, None) => {
            let message = format!("bad CGI output: {}", String::from_utf8_lossy(stderr));
            return (StatusCode::BAD_GATEWAY, message).into_response();
        }
    };
    let mut response = Response::new(Body::from(Bytes::copy_from_slice(&stdout[body_start..])));
    for line in String::from_utf8_lossy(&stdout[..head_end]).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("500");
            *response.status_mut() = code.parse().unwrap_or(StatusCode::BAD_GATEWAY);
        } else if let (Ok(name), Ok(value)) = (
            header::HeaderName::try_from(name.trim()),
            HeaderValue::try_from(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    response
}

/// A self-signed certificate for 127.0.0.1, written as PEM files.
struct TlsFixture {
    cert: PathBuf,
    key: PathBuf,
}

impl TlsFixture {
    /// Generates a fresh certificate and key into `dir`.
    fn generate(dir: &Path, name: &str) -> Self {
        let certified = rcgen::generate_simple_self_signed(vec![
            "127.0.0.1".to_owned(),
            "localhost".to_owned(),
        ])
        .expect("generate certificate");
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, certified.cert.pem()).expect("write cert");
        std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write key");
        Self { cert, key }
    }
}

/// Creates `<root>/vault.git` with one seed commit on main, push over HTTP allowed.
fn seed_vault_repo(root: &Path) {
    let bare = seed_bare_repo(root, "vault.git");
    git(&bare, &["config", "http.receivepack", "true"]);
}

/// Clones `url` into `into` with aie's transports and `config`, on a blocking thread.
async fn clone(url: String, into: PathBuf, config: TransportConfig) -> Result<PathBuf, String> {
    tokio::task::spawn_blocking(move || {
        transport_support::clone(&url, &into, &config)?;
        Ok(into)
    })
    .await
    .expect("clone thread")
}

/// A config trusting only `ca`, with `state` as the state folder.
fn config(ca: &Path, state: Option<&Path>) -> TransportConfig {
    TransportConfig {
        ca_file: Some(ca.to_path_buf()),
        state_dir: state.map(Path::to_path_buf),
        ..TransportConfig::default()
    }
}

/// Writes a private `git-credentials` file into `state`.
fn write_credentials(state: &Path, lines: &str) {
    std::fs::create_dir_all(state).expect("state dir");
    let path = state.join("git-credentials");
    std::fs::write(&path, lines).expect("write credentials");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// Clone, commit, push and clone again over https with a configured CA: the second clone
/// sees the pushed commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_commit_push_and_clone_again_over_https() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path();
    seed_vault_repo(root);
    let tls = TlsFixture::generate(root, "server");
    let server = GitHttpsServer::start(root, &tls, Gate::Open).await;
    let url = server.url("vault.git");
    let cfg = config(&tls.cert, None);

    let first = clone(url.clone(), root.join("first"), cfg.clone())
        .await
        .expect("first clone");
    let pushed = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || {
            let repo = git2::Repository::open(&first).expect("open clone");
            assert!(first.join("Dashboard.md").exists(), "seed file checked out");
            commit_and_push(
                &repo,
                &cfg,
                "Updates/note.md",
                "from the cloud\n",
                "cloud note",
            )
        }
    })
    .await
    .expect("push thread");
    pushed.expect("push over https");

    let second = clone(url, root.join("second"), cfg)
        .await
        .expect("second clone");
    let note = std::fs::read_to_string(second.join("Updates/note.md")).expect("pushed file");
    assert_eq!(note, "from the cloud\n");
    let repo = git2::Repository::open(&second).expect("open");
    let head = repo.head().expect("head").peel_to_commit().expect("commit");
    assert_eq!(head.summary().ok().flatten(), Some("cloud note"));
}

/// A server whose certificate the configured CA did not sign fails with a TLS error that
/// names the URL and says how to trust a private CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untrusted_certificate_gives_a_clear_tls_error() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path();
    seed_vault_repo(root);
    let tls = TlsFixture::generate(root, "server");
    let other = TlsFixture::generate(root, "other");
    let server = GitHttpsServer::start(root, &tls, Gate::Open).await;
    let url = server.url("vault.git");

    let err = clone(url.clone(), root.join("c1"), config(&other.cert, None))
        .await
        .expect_err("a certificate from another CA must be refused");
    assert!(err.contains("TLS failed"), "{err}");
    assert!(err.contains(&url), "{err}");
    assert!(err.contains("AIE_GIT_CA"), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // Without a CA bundle the system roots apply, which do not know a self-signed server.
    let no_ca = TransportConfig::default();
    let err = clone(url.clone(), root.join("c2"), no_ca)
        .await
        .expect_err("a self-signed server must not pass the system roots");
    assert!(err.contains("TLS failed"), "{err}");
}

/// A server requiring basic auth works with credentials from the state folder's
/// `git-credentials`, and without them fails with a 401 that names the URL and the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_uses_state_folder_credentials_and_explains_401() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path();
    seed_vault_repo(root);
    let tls = TlsFixture::generate(root, "server");
    // base64("alice:s3cret-token")
    let gate = Gate::Basic {
        header: "Basic YWxpY2U6czNjcmV0LXRva2Vu".to_owned(),
    };
    let server = GitHttpsServer::start(root, &tls, gate).await;
    let url = server.url("vault.git");
    let port = server.addr.port();

    // No credentials at all: a 401 naming the URL and where credentials go.
    let empty_state = root.join("state-empty");
    std::fs::create_dir_all(&empty_state).expect("state dir");
    let err = clone(
        url.clone(),
        root.join("c0"),
        config(&tls.cert, Some(&empty_state)),
    )
    .await
    .expect_err("no credentials must fail");
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(err.contains(&url), "{err}");
    assert!(err.contains("git-credentials"), "{err}");

    // Wrong secret: refused, and the message names the user but never the secret.
    let wrong_state = root.join("state-wrong");
    write_credentials(
        &wrong_state,
        &format!("https://alice:wrong-guess@127.0.0.1:{port}\n"),
    );
    let err = clone(
        url.clone(),
        root.join("c1"),
        config(&tls.cert, Some(&wrong_state)),
    )
    .await
    .expect_err("wrong credentials must fail");
    assert!(err.contains("HTTP 401") && err.contains("refused"), "{err}");
    assert!(
        err.contains("alice") && !err.contains("wrong-guess"),
        "{err}"
    );

    // Right secret: clone and push work.
    let state = root.join("state");
    write_credentials(
        &state,
        &format!("https://other:x@example.test\nhttps://alice:s3cret-token@127.0.0.1:{port}\n"),
    );
    let cfg = config(&tls.cert, Some(&state));
    let dir = clone(url.clone(), root.join("c2"), cfg.clone())
        .await
        .expect("clone with credentials");
    let pushed = tokio::task::spawn_blocking({
        let cfg = cfg.clone();
        move || {
            let repo = git2::Repository::open(&dir).expect("open");
            commit_and_push(&repo, &cfg, "Done/task.md", "done\n", "done with auth")
        }
    })
    .await
    .expect("push thread");
    pushed.expect("push with credentials");
    let again = clone(url, root.join("c3"), cfg).await.expect("clone again");
    assert!(again.join("Done/task.md").exists());

    // A credentials file others can read is refused before anything is sent.
    let loose = root.join("state-loose");
    write_credentials(
        &loose,
        &format!("https://alice:s3cret-token@127.0.0.1:{port}\n"),
    );
    std::fs::set_permissions(
        loose.join("git-credentials"),
        std::fs::Permissions::from_mode(0o644),
    )
    .expect("chmod");
    let err = clone(
        server.url("vault.git"),
        root.join("c4"),
        config(&tls.cert, Some(&loose)),
    )
    .await
    .expect_err("a world-readable credentials file must be refused");
    assert!(err.contains("chmod 600"), "{err}");
}

/// A URL that answers with a web page instead of git's protocol is named as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_login_page_is_not_taken_for_a_git_server() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path();
    let tls = TlsFixture::generate(root, "server");
    let server = GitHttpsServer::start(root, &tls, Gate::HtmlLoginPage).await;
    let url = server.url("vault.git");
    let err = clone(url.clone(), root.join("c"), config(&tls.cert, None))
        .await
        .expect_err("an HTML page is not a git server");
    assert!(err.contains("not a git smart-HTTP endpoint"), "{err}");
    assert!(err.contains("text/html"), "{err}");
    assert!(err.contains(&url), "{err}");
}

/// A repository that does not exist on the server is a 404 naming the URL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_repository_is_a_clear_404() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path();
    let tls = TlsFixture::generate(root, "server");
    let server = GitHttpsServer::start(root, &tls, Gate::Open).await;
    let url = server.url("nothing-here.git");
    let err = clone(url.clone(), root.join("c"), config(&tls.cert, None))
        .await
        .expect_err("no such repository");
    assert!(err.contains("HTTP 404") && err.contains(&url), "{err}");
}
