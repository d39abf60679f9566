//! Query-string parsing with errors a user can act on.

use std::str::FromStr;

use crate::store::{Quantity, Tier};
use crate::timefmt;

use super::ApiError;

/// Longest query string accepted, in bytes.
pub const MAX_QUERY_LEN: usize = 8 * 1024;
/// Most circuits one request may name.
pub const MAX_CIRCUITS: usize = 256;

/// The parameters of one request, checked against the names the endpoint knows.
#[derive(Debug, Default)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses `raw` (without `?`), refusing oversized strings, bad encoding, unknown and
    /// repeated names.
    pub fn parse(raw: &str, allowed: &[&str]) -> Result<Params, ApiError> {
        if raw.len() > MAX_QUERY_LEN {
            return Err(ApiError::bad(
                "query string too long",
                format!("{} bytes; at most {MAX_QUERY_LEN}", raw.len()),
            ));
        }
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw)
            .map_err(|e| ApiError::bad("malformed query string", e.to_string()))?;
        for (i, (key, _)) in pairs.iter().enumerate() {
            if !allowed.contains(&key.as_str()) {
                return Err(ApiError::param(
                    key,
                    "unknown parameter",
                    format!(
                        "{key:?} is not a parameter of this endpoint; known: {}",
                        allowed.join(", ")
                    ),
                ));
            }
            if pairs[..i].iter().any(|(k, _)| k == key) {
                return Err(ApiError::param(
                    key,
                    "repeated parameter",
                    format!("{key:?} is given more than once (lists are comma-separated)"),
                ));
            }
        }
        Ok(Params { pairs })
    }

    /// The value of `key`, if given (an empty value counts as absent).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, v)| k == key && !v.is_empty())
            .map(|(_, v)| v.as_str())
    }

    /// A required value.
    pub fn required(&self, key: &str) -> Result<&str, ApiError> {
        self.get(key).ok_or_else(|| {
            ApiError::param(key, "missing parameter", format!("{key:?} is required"))
        })
    }

    /// A timestamp (RFC 3339 with offset, or ms since the epoch).
    pub fn time(&self, key: &str) -> Result<Option<i64>, ApiError> {
        self.get(key)
            .map(|v| {
                timefmt::parse_time(v).map_err(|e| ApiError::param(key, "malformed timestamp", e))
            })
            .transpose()
    }

    /// An unsigned integer in `min..=max`.
    pub fn uint(&self, key: &str, min: u64, max: u64) -> Result<Option<u64>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let n: u64 = v.parse().map_err(|_| {
            ApiError::param(
                key,
                "bad number",
                format!("{v:?} is not a non-negative integer"),
            )
        })?;
        if n < min || n > max {
            return Err(ApiError::param(
                key,
                "number out of range",
                format!("{n} is not in {min}..={max}"),
            ));
        }
        Ok(Some(n))
    }

    /// A comma-separated list (empty items dropped, repeats removed, order kept).
    pub fn list(&self, key: &str) -> Result<Vec<String>, ApiError> {
        let mut out: Vec<String> = Vec::new();
        if let Some(v) = self.get(key) {
            for item in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if !out.iter().any(|o| o == item) {
                    out.push(item.to_string());
                }
            }
        }
        if out.len() > MAX_CIRCUITS {
            return Err(ApiError::param(
                key,
                "list too long",
                format!("{} items; at most {MAX_CIRCUITS}", out.len()),
            ));
        }
        Ok(out)
    }

    /// Quantities (`voltage,real_power`); `default` when absent.
    pub fn quantities(&self, key: &str, default: &[Quantity]) -> Result<Vec<Quantity>, ApiError> {
        let names = self.list(key)?;
        if names.is_empty() {
            return Ok(default.to_vec());
        }
        names
            .iter()
            .map(|n| {
                Quantity::from_str(n)
                    .map_err(|e| ApiError::param(key, "unknown quantity", e.to_string()))
            })
            .collect()
    }

    /// A resolution: `auto` (None) or a tier name.
    pub fn resolution(&self, key: &str, default: Option<Tier>) -> Result<Option<Tier>, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some("auto") => Ok(None),
            Some(v) => Tier::from_str(v).map(Some).map_err(|_| {
                ApiError::param(
                    key,
                    "unknown resolution",
                    format!("{v:?}; expected one of: auto, raw, 1m, 15m, 1h, 1d"),
                )
            }),
        }
    }
}
