//! Bearer-token authentication in front of `/mcp`.
//!
//! Each client has a name, a role and the SHA-256 of its token; the gateway never keeps a
//! token itself. A request's token is hashed and compared with every configured hash in
//! constant time, so neither the comparison nor the scan order reveals how close a guess
//! came. A missing token gets `401` with `WWW-Authenticate: Bearer realm="aie"`, a wrong one
//! the same plus `error="invalid_token"` (RFC 6750). On success the request carries a
//! [`ClientIdentity`] in its extensions (rmcp hands the HTTP request parts to the handler,
//! so the gateway reads it there) and loses its `Authorization` header, so nothing
//! downstream of this layer, and no upstream, ever sees the token.

use std::sync::Arc;

use aie_shared::http::HttpRefusal;
use axum::{
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::guard::ClientIdentity;

/// The realm every challenge names.
const REALM: &str = "aie";

/// One client allowed through the gateway: who it is and the SHA-256 of its token.
#[derive(Clone, PartialEq, Eq)]
pub struct ClientToken {
    /// Who the token belongs to.
    pub identity: ClientIdentity,
    /// SHA-256 of the token.
    token_sha256: [u8; 32],
}

impl std::fmt::Debug for ClientToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The hash is not secret, but it has no business in logs either.
        f.debug_struct("ClientToken")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// Why a configured token hash is unusable.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The hash is not 64 hexadecimal digits.
    #[error(
        "token_sha256 of client `{client}` must be 64 hexadecimal digits (the SHA-256 of the token, e.g. from `sha256sum`)"
    )]
    BadHash {
        /// The client it belongs to.
        client: String,
    },
    /// The token itself is empty.
    #[error("the token of client `{client}` is empty")]
    EmptyToken {
        /// The client it belongs to.
        client: String,
    },
}

impl ClientToken {
    /// A client whose token has the SHA-256 `hex` (64 hexadecimal digits, any case).
    pub fn from_sha256_hex(identity: ClientIdentity, hex: &str) -> Result<Self, TokenError> {
        let hash = parse_hex32(hex.trim()).ok_or_else(|| TokenError::BadHash {
            client: identity.name.clone(),
        })?;
        Ok(Self {
            identity,
            token_sha256: hash,
        })
    }

    /// A client whose token is `token` (only its hash is kept).
    pub fn from_token(identity: ClientIdentity, token: &str) -> Result<Self, TokenError> {
        if token.is_empty() {
            return Err(TokenError::EmptyToken {
                client: identity.name,
            });
        }
        Ok(Self {
            identity,
            token_sha256: Sha256::digest(token.as_bytes()).into(),
        })
    }
}

/// The SHA-256 of `token` in lowercase hex, as `token_sha256` expects it.
pub fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// The clients the bearer layer lets through.
#[derive(Debug, Clone)]
pub struct BearerAuth {
    clients: Arc<[ClientToken]>,
}

impl BearerAuth {
    /// Accepts the tokens of `clients`.
    pub fn new(clients: Vec<ClientToken>) -> Self {
        Self {
            clients: clients.into(),
        }
    }

    /// The client whose token is `token`, if any. Every configured hash is compared, in
    /// constant time each, whatever matches first.
    pub fn identify(&self, token: &str) -> Option<&ClientIdentity> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for client in self.clients.iter() {
            let equal: bool = presented.ct_eq(&client.token_sha256).into();
            if equal && found.is_none() {
                found = Some(&client.identity);
            }
        }
        found
    }
}

/// The axum middleware: lets a request with a known bearer token through, as its client,
/// without the token; answers anything else with 401.
pub async fn require_bearer(
    State(auth): State<BearerAuth>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| bearer_token(value).map(str::to_owned));
    let identity = match presented {
        None => {
            return unauthorized(
                None,
                "Unauthorized: send `Authorization: Bearer <token>`",
                "no bearer token",
            );
        }
        Some(None) => {
            return unauthorized(
                Some("invalid_request"),
                "Unauthorized: the Authorization header must be `Bearer <token>`",
                "not a Bearer credential",
            );
        }
        Some(Some(token)) => match auth.identify(&token) {
            Some(identity) => identity.clone(),
            None => {
                return unauthorized(
                    Some("invalid_token"),
                    "Unauthorized: unknown token",
                    "invalid token",
                );
            }
        },
    };
    // Nothing past this layer needs the token, and no upstream may ever see it.
    request.headers_mut().remove(header::AUTHORIZATION);
    // The endpoint bounds sessions and requests in service per client by this key.
    request
        .extensions_mut()
        .insert(aie_shared::ClientKey::new(&identity.name));
    request.extensions_mut().insert(identity);
    next.run(request).await
}

/// The token of a `Bearer` credential (the scheme is case-insensitive).
pub(super) fn bearer_token(value: &HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// A 401 with its challenge, marked as an [`HttpRefusal`] for `why` (never the token).
fn unauthorized(error: Option<&str>, message: &'static str, why: &str) -> Response {
    let challenge = match error {
        None => format!("Bearer realm=\"{REALM}\""),
        Some(error) => format!("Bearer realm=\"{REALM}\", error=\"{error}\""),
    };
    let mut response = (
        StatusCode::UNAUTHORIZED,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message,
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    HttpRefusal::new(StatusCode::UNAUTHORIZED, why).mark(response)
}

#[cfg(test)]
mod tests {
    use axum::{Router, body::Body, middleware, routing::post};
    use tower::ServiceExt;

    use super::*;

    fn auth() -> BearerAuth {
        BearerAuth::new(vec![
            ClientToken::from_token(ClientIdentity::new("laptop", "owner"), "s3cret").unwrap(),
            ClientToken::from_sha256_hex(
                ClientIdentity::new("cloud", "agent"),
                &sha256_hex("other-token"),
            )
            .unwrap(),
        ])
    }

    /// The echo app answers with the identity it got and whether Authorization survived.
    fn app() -> Router {
        Router::new()
            .route(
                "/mcp",
                post(|request: Request| async move {
                    let who = request
                        .extensions()
                        .get::<ClientIdentity>()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    let leaked = request.headers().contains_key(header::AUTHORIZATION);
                    format!("{who} leaked={leaked}")
                }),
            )
            .layer(middleware::from_fn_with_state(auth(), require_bearer))
    }

    async fn call(authorization: Option<&str>) -> Response {
        let mut request = Request::post("/mcp");
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        app()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn text(response: Response) -> String {
        let bytes = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// A known token passes as its client, and the header is gone past the layer.
    #[tokio::test]
    async fn known_tokens_pass_as_their_client_without_the_header() {
        let response = call(Some("Bearer s3cret")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(text(response).await, "laptop (owner) leaked=false");
        let response = call(Some("bearer other-token")).await;
        assert_eq!(text(response).await, "cloud (agent) leaked=false");
    }

    /// No token: 401 with the bare challenge.
    #[tokio::test]
    async fn missing_token_gets_a_challenge() {
        let response = call(None).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"aie\""
        );
        let refusal = response.extensions().get::<HttpRefusal>().unwrap();
        assert_eq!(refusal.to_string(), "401: no bearer token");
    }

    /// A wrong token or a wrong scheme: 401 naming the error.
    #[tokio::test]
    async fn wrong_tokens_are_invalid() {
        let response = call(Some("Bearer nope")).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"aie\", error=\"invalid_token\""
        );
        let refusal = response.extensions().get::<HttpRefusal>().unwrap();
        assert_eq!(refusal.to_string(), "401: invalid token");
        let response = call(Some("Basic czNjcmV0")).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(
            response.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .contains("invalid_request")
        );
    }

    /// Hashes are validated when configured.
    #[test]
    fn bad_hashes_are_refused_naming_the_client() {
        let err = ClientToken::from_sha256_hex(ClientIdentity::new("x", "y"), "abc").unwrap_err();
        assert!(err.to_string().contains("`x`"), "{err}");
        assert!(ClientToken::from_token(ClientIdentity::new("x", "y"), "").is_err());
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
