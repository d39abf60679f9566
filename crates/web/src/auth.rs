//! The login: one password for the site, hashed with Argon2id (`web-auth.json` in the data
//! directory, a PHC string), sessions in memory with an HttpOnly SameSite=Strict cookie, and a
//! CSRF token per session that every POST must carry in `X-CSRF-Token`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use serde::{Deserialize, Serialize};

use crate::config::WebError;
use crate::settings::save_json;

/// File name inside the data directory.
pub const AUTH_FILE: &str = "web-auth.json";
/// Name of the session cookie.
pub const COOKIE: &str = "pmon_session";
/// A session ends after this long without a request.
pub const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);
/// Most sessions kept at once (the oldest goes).
pub const MAX_SESSIONS: usize = 64;
/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 8;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AuthFile {
    /// Argon2id PHC string.
    password_hash: String,
}

/// A logged-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token every POST must send in `X-CSRF-Token`.
    pub csrf: String,
    last_used: Instant,
}

/// The password and the sessions.
#[derive(Debug)]
pub struct Auth {
    path: PathBuf,
    hash: Mutex<Option<String>>,
    sessions: Mutex<HashMap<String, Session>>,
}

fn token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hashes a password with Argon2id and a random salt (a PHC string).
pub fn hash_password(password: &str) -> Result<String, WebError> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(WebError::Password(format!(
            "use at least {MIN_PASSWORD} characters"
        )));
    }
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| WebError::Password(e.to_string()))
}

/// Stores a new password hash in `data_dir` (`pmon web --set-password`).
pub fn store_password(data_dir: &Path, password: &str) -> Result<(), WebError> {
    let hash = hash_password(password)?;
    std::fs::create_dir_all(data_dir).map_err(|source| WebError::File {
        path: data_dir.display().to_string(),
        source,
    })?;
    save_json(
        &data_dir.join(AUTH_FILE),
        &AuthFile {
            password_hash: hash,
        },
    )
}

/// Constant-time comparison.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Auth {
    /// Loads the password hash from `data_dir`; with none stored and `initial` given, stores
    /// that one.
    pub fn load(data_dir: &Path, initial: Option<&str>) -> Result<Auth, WebError> {
        let path = data_dir.join(AUTH_FILE);
        let hash = match std::fs::read(&path) {
            Ok(bytes) => {
                let file: AuthFile =
                    serde_json::from_slice(&bytes).map_err(|e| WebError::Corrupt {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
                PasswordHash::new(&file.password_hash).map_err(|e| WebError::Corrupt {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                Some(file.password_hash)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match initial {
                Some(password) => {
                    store_password(data_dir, password)?;
                    return Auth::load(data_dir, None);
                }
                None => None,
            },
            Err(source) => {
                return Err(WebError::File {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        Ok(Auth {
            path,
            hash: Mutex::new(hash),
            sessions: Mutex::new(HashMap::new()),
        })
    }

    /// Whether a password is set (without one, nothing can be changed from the browser).
    pub fn password_set(&self) -> bool {
        self.hash.lock().map(|h| h.is_some()).unwrap_or(false)
    }

    /// The file holding the hash.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks a password (slow on purpose: Argon2id); on success opens a session and returns
    /// its id and CSRF token.
    pub fn login(&self, password: &str) -> Option<(String, String)> {
        let hash = self.hash.lock().ok()?.clone()?;
        let parsed = PasswordHash::new(&hash).ok()?;
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .ok()?;
        let (id, csrf) = (token(), token());
        let mut sessions = self.sessions.lock().ok()?;
        sessions.retain(|_, s| s.last_used.elapsed() < SESSION_IDLE);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
            {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
                last_used: Instant::now(),
            },
        );
        Some((id, csrf))
    }

    /// The session of a cookie header, if it is live (and marks it used).
    pub fn session(&self, cookie_header: Option<&str>) -> Option<(String, Session)> {
        let id = cookie_value(cookie_header?, COOKIE)?;
        let mut sessions = self.sessions.lock().ok()?;
        let session = sessions.get_mut(id)?;
        if session.last_used.elapsed() >= SESSION_IDLE {
            sessions.remove(id);
            return None;
        }
        session.last_used = Instant::now();
        Some((id.to_string(), session.clone()))
    }

    /// Checks the CSRF token of a session.
    pub fn csrf_ok(session: &Session, token: Option<&str>) -> bool {
        token.is_some_and(|t| same(t, &session.csrf))
    }

    /// Ends a session.
    pub fn logout(&self, id: &str) {
        if let Ok(mut sessions) = self.sessions.lock() {
            sessions.remove(id);
        }
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}
