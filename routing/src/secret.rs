//! Credentials in a type that never prints them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret value (an API key). `Debug` and `Display` print `*****`.
///
/// It serializes transparently because the snapshot that carries resolved
/// credentials from the operator to the proxies is serialized; nothing else
/// may serialize it. `RoutingTable` itself never holds one, which is why
/// `/debug/table` can print the table as it is.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Redacted(String);

impl Redacted {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it upstream.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

impl fmt::Display for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let key = Redacted::new("sk-live-123");
        assert_eq!(format!("{key:?}"), "*****");
        assert_eq!(format!("{key}"), "*****");
        assert_eq!(key.expose(), "sk-live-123");
    }
}
