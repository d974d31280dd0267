//! Vendor credentials: read from a Secret, sent to Leen, never shown. A change is told by a
//! salted hash, so that status can record what was sent without holding it.

use std::{collections::BTreeMap, fmt};

use k8s_openapi::ByteString;
use serde_json::Value;

use crate::resource::CREDENTIALS_JSON_KEY;

/// Vendor credentials as Leen takes them: a JSON object. Its `Debug` and `Display` never
/// show the values.
#[derive(Clone, PartialEq)]
pub struct Credentials(Value);

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

impl fmt::Display for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Why a Secret's data cannot be credentials. The messages name keys, never values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    /// The Secret has no data.
    #[error(
        "has no data: put one key per credential field, or the whole object under credentials.json"
    )]
    Empty,
    /// A value is not UTF-8 text.
    #[error("key {0:?} is not UTF-8 text")]
    NotText(String),
    /// credentials.json is not a JSON object.
    #[error("key credentials.json is not a JSON object")]
    NotAnObject,
    /// credentials.json sits beside other keys.
    #[error(
        "key credentials.json holds the whole object; the other keys ({0}) would be ignored: use one form or the other"
    )]
    Mixed(String),
}

impl Credentials {
    /// Credentials from a Secret's data: each key becomes `credentials.<key>` (a string; a
    /// trailing newline, as `echo` leaves it, is dropped), or the one key
    /// `credentials.json` holds the whole object.
    pub fn from_secret_data(data: &BTreeMap<String, ByteString>) -> Result<Self, CredentialsError> {
        if data.is_empty() {
            return Err(CredentialsError::Empty);
        }
        let text = |k: &String, v: &ByteString| {
            String::from_utf8(v.0.clone()).map_err(|_| CredentialsError::NotText(k.clone()))
        };
        if let Some(json) = data.get(CREDENTIALS_JSON_KEY) {
            if data.len() > 1 {
                let others: Vec<&str> = data
                    .keys()
                    .filter(|k| *k != CREDENTIALS_JSON_KEY)
                    .map(String::as_str)
                    .collect();
                return Err(CredentialsError::Mixed(others.join(", ")));
            }
            let value: Value =
                serde_json::from_str(&text(&CREDENTIALS_JSON_KEY.to_string(), json)?)
                    .map_err(|_| CredentialsError::NotAnObject)?;
            if !value.is_object() {
                return Err(CredentialsError::NotAnObject);
            }
            return Ok(Self(value));
        }
        let mut map = serde_json::Map::new();
        for (k, v) in data {
            let value = text(k, v)?;
            let value = value
                .strip_suffix("\r\n")
                .or_else(|| value.strip_suffix('\n'))
                .unwrap_or(&value)
                .to_string();
            map.insert(k.clone(), Value::String(value));
        }
        Ok(Self(Value::Object(map)))
    }

    /// The object itself, for the request body and nothing else.
    pub fn expose(&self) -> &Value {
        &self.0
    }

    /// Every string value, at any depth: what must be redacted from Leen's answers.
    pub fn secrets(&self) -> Vec<String> {
        fn walk(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::String(s) if s.len() >= 4 => out.push(s.clone()),
                Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
                Value::Object(map) => map.values().for_each(|i| walk(i, out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        walk(&self.0, &mut out);
        // Longest first, so that a value containing another is replaced whole.
        out.sort_by_key(|s| std::cmp::Reverse(s.len()));
        out
    }

    /// HMAC-SHA-256 of the canonical JSON, keyed with `salt` (the resource's uid): tells a
    /// change without recording the plain digest of a secret, and differs per resource.
    pub fn salted_hash(&self, salt: &str) -> String {
        use aws_lc_rs::hmac;
        let key = hmac::Key::new(hmac::HMAC_SHA256, salt.as_bytes());
        let canonical = canonical_json(&self.0);
        let tag = hmac::sign(&key, canonical.as_bytes());
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("hmac-sha256:{hex}")
    }
}

/// JSON with object keys sorted at every depth, whatever the map type keeps.
fn canonical_json(v: &Value) -> String {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical_json(&map[k])))
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(canonical_json)
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn each_key_is_a_field_or_json_is_the_whole() {
        let c = Credentials::from_secret_data(&data(&[
            ("client_id", "id\n"),
            ("client_secret", "s3cret"),
        ]))
        .expect("flat");
        assert_eq!(
            c.expose(),
            &serde_json::json!({"client_id": "id", "client_secret": "s3cret"})
        );
        let c = Credentials::from_secret_data(&data(&[(
            "credentials.json",
            r#"{"aws": {"aws_access_key_id": "AKIA", "aws_secret_access_key": "x"}}"#,
        )]))
        .expect("nested");
        assert_eq!(c.expose()["aws"]["aws_access_key_id"], "AKIA");
    }

    #[test]
    fn malformed_data_is_named_without_values() {
        assert_eq!(
            Credentials::from_secret_data(&data(&[])),
            Err(CredentialsError::Empty)
        );
        assert_eq!(
            Credentials::from_secret_data(&data(&[("credentials.json", "[1]")])),
            Err(CredentialsError::NotAnObject)
        );
        let mixed =
            Credentials::from_secret_data(&data(&[("credentials.json", "{}"), ("x", "hunter2")]))
                .expect_err("mixed");
        assert!(!mixed.to_string().contains("hunter2"));
        assert_eq!(
            mixed,
            CredentialsError::Mixed("x".into()),
            "names the other keys only"
        );
        let mut bin = BTreeMap::new();
        bin.insert("k".to_string(), ByteString(vec![0xff, 0xfe]));
        assert_eq!(
            Credentials::from_secret_data(&bin),
            Err(CredentialsError::NotText("k".into()))
        );
    }

    #[test]
    fn the_hash_is_salted_stable_and_secret_free() {
        let a = Credentials::from_secret_data(&data(&[("a", "1"), ("b", "hunter22")])).expect("a");
        let b = Credentials(serde_json::json!({"b": "hunter22", "a": "1"}));
        assert_eq!(a.salted_hash("uid-1"), b.salted_hash("uid-1"));
        assert_ne!(a.salted_hash("uid-1"), a.salted_hash("uid-2"));
        assert!(!a.salted_hash("uid-1").contains("hunter22"));
        assert_eq!(format!("{a:?} {a}"), "Credentials(<redacted>) <redacted>");
        assert_eq!(a.secrets(), vec!["hunter22".to_string()]);
        // At any depth, in arrays too; longest first; too short to matter left out.
        let nested = Credentials(
            serde_json::json!({"aws": {"keys": ["key-one", "k2"], "secret": "longest-secret"}, "n": 5}),
        );
        assert_eq!(
            nested.secrets(),
            vec!["longest-secret".to_string(), "key-one".to_string()]
        );
    }
}
