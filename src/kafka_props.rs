//! `[kafka]`: librdkafka client properties (`security.protocol`, `sasl.*`,
//! `ssl.*`, `client.id`, `message.max.bytes`, ...) passed through to every
//! Kafka client the binary creates. Shared, as source, by the job and the
//! courier (`#[path]` include), so that both read the table the same way.
//!
//! A value `env:NAME` is read from the environment variable `NAME`, and
//! `file:PATH` from the file at `PATH` (surrounding whitespace trimmed), so
//! that secrets need not sit in the configuration file. `bootstrap.servers`
//! and `group.id` are not allowed here: `--brokers` and the binaries' own
//! flags set them. Values never appear in logs or `Debug` output.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The `[kafka]` table as written.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct KafkaProperties(pub BTreeMap<String, String>);

impl std::fmt::Debug for KafkaProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Why the `[kafka]` table cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PropertyError {
    #[error("kafka.\"{name}\" is set by the command line, not the [kafka] table")]
    Reserved { name: String },
    #[error("kafka.\"{name}\" = \"env:{var}\": the environment variable {var} is not set")]
    Env { name: String, var: String },
    #[error("kafka.\"{name}\" = \"file:{path}\": {source}")]
    File {
        name: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kafka.\"{name}\": an empty property name or value")]
    Empty { name: String },
}

/// Properties set by the binaries from their flags.
const RESERVED: [&str; 2] = ["bootstrap.servers", "group.id"];

/// The `[kafka]` table with its `env:` and `file:` values read.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ResolvedProperties(pub Vec<(String, String)>);

impl std::fmt::Debug for ResolvedProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries(self.0.iter().map(|(k, _)| k))
            .finish()
    }
}

impl KafkaProperties {
    /// Reads every `env:` and `file:` value; checks names.
    pub fn resolve(&self) -> Result<ResolvedProperties, PropertyError> {
        let mut out = Vec::with_capacity(self.0.len());
        for (name, value) in &self.0 {
            if RESERVED.contains(&name.as_str()) {
                return Err(PropertyError::Reserved { name: name.clone() });
            }
            if name.trim().is_empty() || value.is_empty() {
                return Err(PropertyError::Empty { name: name.clone() });
            }
            let v = if let Some(var) = value.strip_prefix("env:") {
                std::env::var(var).map_err(|_| PropertyError::Env {
                    name: name.clone(),
                    var: var.to_string(),
                })?
            } else if let Some(path) = value.strip_prefix("file:") {
                std::fs::read_to_string(path)
                    .map_err(|source| PropertyError::File {
                        name: name.clone(),
                        path: path.to_string(),
                        source,
                    })?
                    .trim()
                    .to_string()
            } else {
                value.clone()
            };
            out.push((name.clone(), v));
        }
        Ok(ResolvedProperties(out))
    }
}

impl ResolvedProperties {
    /// Sets every property on `config` (after the binary's own settings,
    /// so that the table wins where both set one).
    pub fn apply<'a>(
        &self,
        config: &'a mut rdkafka::config::ClientConfig,
    ) -> &'a mut rdkafka::config::ClientConfig {
        for (k, v) in &self.0 {
            config.set(k, v);
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> KafkaProperties {
        KafkaProperties(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn values_come_from_the_table_the_environment_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("password");
        std::fs::write(&secret, "s3cret\n").unwrap();
        std::env::set_var("KAFKA_PROPS_TEST_USER", "svc-tripwire");
        let p = props(&[
            ("security.protocol", "SASL_SSL"),
            ("sasl.username", "env:KAFKA_PROPS_TEST_USER"),
            ("sasl.password", &format!("file:{}", secret.display())),
        ])
        .resolve()
        .unwrap();
        let mut c = rdkafka::config::ClientConfig::new();
        p.apply(&mut c);
        assert_eq!(c.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(c.get("sasl.username"), Some("svc-tripwire"));
        assert_eq!(c.get("sasl.password"), Some("s3cret"));
        // Names only, never values, in Debug output.
        let shown = format!("{p:?}");
        assert!(
            shown.contains("sasl.password") && !shown.contains("s3cret"),
            "{shown}"
        );
    }

    #[test]
    fn reserved_missing_and_empty_are_errors() {
        let e = props(&[("bootstrap.servers", "x:9092")])
            .resolve()
            .unwrap_err();
        assert!(e.to_string().contains("command line"), "{e}");
        let e = props(&[("sasl.password", "env:KAFKA_PROPS_TEST_NOT_SET")])
            .resolve()
            .unwrap_err();
        assert!(e.to_string().contains("KAFKA_PROPS_TEST_NOT_SET"), "{e}");
        let e = props(&[("ssl.ca.location", "file:/nonexistent/ca.pem")])
            .resolve()
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        assert!(props(&[("client.id", "")]).resolve().is_err());
    }
}
