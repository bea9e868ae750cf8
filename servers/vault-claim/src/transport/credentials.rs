//! HTTP credentials for git remotes, from `git-credentials` in the local state folder.
//!
//! The file uses git's credential-store format, one URL a line, so an existing
//! `~/.git-credentials` line can be copied over:
//!
//! ```text
//! https://alice:ghp_secret@git.example.com
//! https://bob:token@git.example.com:8443/team/vault.git
//! https://bearer:eyJhbGciOi...@git.example.com
//! ```
//!
//! A line whose user is literally `bearer` sends its secret as `Authorization: Bearer`;
//! any other line sends HTTP basic auth. The first line matching the remote's scheme, host,
//! port (and path prefix and user, when the line or the remote URL names them) wins.
//! The file lives in the state folder, never in the vault, so it never syncs; it must be
//! readable by its owner only (mode 0600), as ssh demands of keys.

use std::fmt;
use std::path::Path;

use reqwest::Url;

use super::{TransportError, check_private};

/// What to send in `Authorization` for one remote.
#[derive(Clone, PartialEq, Eq)]
pub enum HttpAuth {
    /// HTTP basic authentication.
    Basic {
        /// The user name.
        user: String,
        /// The password or access token.
        password: String,
    },
    /// An OAuth-style bearer token.
    Bearer {
        /// The token.
        token: String,
    },
}

impl HttpAuth {
    /// Says which credential this is without showing the secret, for error messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Basic { user, .. } => format!("user `{user}`"),
            Self::Bearer { .. } => "a bearer token".to_owned(),
        }
    }
}

// Never print a secret, even in a debug log.
impl fmt::Debug for HttpAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Basic { user, .. } => write!(f, "Basic({user}, <redacted>)"),
            Self::Bearer { .. } => f.write_str("Bearer(<redacted>)"),
        }
    }
}

/// The user name a credential line must have to mean a bearer token.
const BEARER_USER: &str = "bearer";

/// Finds the credential for `remote` in the credentials file at `path`. A missing file
/// means no credentials; a file others can read, or a malformed line, is an error.
pub fn lookup(path: &Path, remote: &Url) -> Result<Option<HttpAuth>, TransportError> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(TransportError::CredentialsRead {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    check_private(path, &meta)?;
    let text = std::fs::read_to_string(path).map_err(|source| TransportError::CredentialsRead {
        path: path.to_path_buf(),
        source,
    })?;
    find(&text, remote).map_err(|line| TransportError::CredentialsLine {
        path: path.to_path_buf(),
        line,
    })
}

/// Finds the first line of `text` that matches `remote`; `Err` holds the 1-based number of
/// a malformed line (every line up to the match is checked, so typos do not go unnoticed).
fn find(text: &str, remote: &Url) -> Result<Option<HttpAuth>, usize> {
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry = Url::parse(line).map_err(|_| index + 1)?;
        if !matches!(entry.scheme(), "http" | "https")
            || entry.host_str().is_none()
            || entry.username().is_empty()
        {
            return Err(index + 1);
        }
        let Some(password) = entry.password() else {
            return Err(index + 1);
        };
        if !same_place(&entry, remote) {
            continue;
        }
        let user = percent_decode(entry.username());
        let secret = percent_decode(password);
        return Ok(Some(if user == BEARER_USER {
            HttpAuth::Bearer { token: secret }
        } else {
            HttpAuth::Basic {
                user,
                password: secret,
            }
        }));
    }
    Ok(None)
}

/// True when a credential line `entry` applies to `remote`.
fn same_place(entry: &Url, remote: &Url) -> bool {
    if entry.scheme() != remote.scheme()
        || entry.host_str() != remote.host_str()
        || entry.port_or_known_default() != remote.port_or_known_default()
    {
        return false;
    }
    // A user named in the remote URL picks among several lines for one host.
    if !remote.username().is_empty() && remote.username() != entry.username() {
        return false;
    }
    let prefix = entry.path().trim_end_matches('/');
    let path = remote.path();
    prefix.is_empty()
        || path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Decodes `%XX` escapes, as git's credential store writes special characters.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|b| hex(*b)),
                bytes.get(i + 2).and_then(|b| hex(*b)),
            )
        {
            // Two hex digits make one byte: hi * 16 + lo < 256.
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).expect("test URL")
    }

    /// Host, port and scheme must all match; the first matching line wins.
    #[test]
    fn lookup_matches_scheme_host_and_port() {
        let text = "\
# a comment
https://alice:one@git.example.com
https://bob:two@git.example.com:8443
http://carol:three@127.0.0.1:9000
";
        let auth = find(text, &url("https://git.example.com/team/vault.git"));
        assert_eq!(
            auth,
            Ok(Some(HttpAuth::Basic {
                user: "alice".into(),
                password: "one".into()
            }))
        );
        let auth = find(text, &url("https://git.example.com:8443/vault.git"));
        assert!(matches!(auth, Ok(Some(HttpAuth::Basic { user, .. })) if user == "bob"));
        let auth = find(text, &url("http://127.0.0.1:9000/r.git"));
        assert!(matches!(auth, Ok(Some(HttpAuth::Basic { user, .. })) if user == "carol"));
        assert_eq!(
            find(text, &url("https://other.example.com/r.git")),
            Ok(None)
        );
        assert_eq!(find(text, &url("http://git.example.com/r.git")), Ok(None));
    }

    /// A path on the line limits it to repositories under that path.
    #[test]
    fn lookup_respects_path_prefix_and_user() {
        let text = "\
https://a:1@h.example/team/vault.git
https://b:2@h.example
";
        let user_of = |u: &str| match find(text, &url(u)) {
            Ok(Some(HttpAuth::Basic { user, .. })) => user,
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(user_of("https://h.example/team/vault.git"), "a");
        assert_eq!(user_of("https://h.example/team/vault.git/"), "a");
        assert_eq!(user_of("https://h.example/team/vault.gitx"), "b");
        assert_eq!(user_of("https://b@h.example/team/vault.git"), "b");
    }

    /// `bearer` as the user means a bearer token; escapes are decoded.
    #[test]
    fn bearer_lines_and_percent_escapes() {
        let text = "https://bearer:tok%2Fen@h.example\nhttps://u%40x:p%3Aw@g.example\n";
        assert_eq!(
            find(text, &url("https://h.example/r")),
            Ok(Some(HttpAuth::Bearer {
                token: "tok/en".into()
            }))
        );
        assert_eq!(
            find(text, &url("https://g.example/r")),
            Ok(Some(HttpAuth::Basic {
                user: "u@x".into(),
                password: "p:w".into()
            }))
        );
    }

    /// A line without a secret, or not a URL, is reported by number.
    #[test]
    fn malformed_lines_are_reported() {
        assert_eq!(
            find("https://h.example\n", &url("https://h.example/")),
            Err(1)
        );
        assert_eq!(find("\n\nnot a url\n", &url("https://h.example/")), Err(3));
        assert_eq!(
            find("ftp://u:p@h.example\n", &url("https://h.example/")),
            Err(1)
        );
    }

    /// Debug output never shows the secret.
    #[test]
    fn debug_redacts_secrets() {
        let basic = HttpAuth::Basic {
            user: "u".into(),
            password: "hunter2".into(),
        };
        let bearer = HttpAuth::Bearer {
            token: "hunter2".into(),
        };
        assert!(!format!("{basic:?} {bearer:?}").contains("hunter2"));
        assert!(!basic.describe().contains("hunter2"));
    }

    /// A missing file is no credentials; a world-readable one is refused with a fix.
    #[cfg(unix)]
    #[test]
    fn file_must_be_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("git-credentials");
        let remote = url("https://h.example/r.git");
        assert!(matches!(lookup(&path, &remote), Ok(None)));
        std::fs::write(&path, "https://u:p@h.example\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = lookup(&path, &remote).expect_err("0644 must be refused");
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(lookup(&path, &remote), Ok(Some(_))));
    }
}
