//! Per-object findings of loading and compiling.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::table::ObjectRef;

/// Whether a finding kept something out of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Something was left out of the table (an object, a target, a canary).
    Error,
    /// Served, but probably not what was meant.
    Warning,
}

/// The status condition a finding belongs to (Gateway API meanings).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Condition {
    /// The spec is valid and the alias is not in conflict.
    Accepted,
    /// Every ProviderSecret, Secret key and fallback alias exists.
    ResolvedRefs,
}

/// One finding about one object, ready to become a status condition or a log line.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Diagnostic {
    pub object: ObjectRef,
    pub severity: Severity,
    pub condition: Condition,
    /// CamelCase reason, one of the constants in [`reason`].
    pub reason: String,
    /// Field path inside the object, e.g. `spec.targets[1].provider`.
    pub field: Option<String>,
    /// Lowercase, says what is wrong and how to fix it; never contains a secret.
    pub message: String,
}

impl Diagnostic {
    /// An error about `field` of `object`, filed under `condition`.
    pub fn error(
        object: &ObjectRef,
        condition: Condition,
        reason: &str,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            object: object.clone(),
            severity: Severity::Error,
            condition,
            reason: reason.to_owned(),
            field: Some(field.into()),
            message: message.into(),
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}", self.object)?;
        // Compile messages usually start with their field already.
        if let Some(field) = &self.field
            && !self.message.contains(&format!("`{field}`"))
        {
            write!(f, ": `{field}`")?;
        }
        write!(f, ": {} ({})", self.message, self.reason)
    }
}

/// Condition reasons.
pub mod reason {
    pub const INVALID: &str = "Invalid";
    pub const CONFLICT: &str = "Conflict";
    pub const PROVIDER_NOT_FOUND: &str = "ProviderNotFound";
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const SECRET_KEY_NOT_FOUND: &str = "SecretKeyNotFound";
    pub const FALLBACK_NOT_FOUND: &str = "FallbackNotFound";
    pub const FALLBACK_CYCLE: &str = "FallbackCycle";
    pub const NO_USABLE_TARGET: &str = "NoUsableTarget";
    pub const INVALID_PROVIDER: &str = "InvalidProvider";
    /// The referenced Secret key is empty or not UTF-8 text.
    pub const INVALID_SECRET: &str = "InvalidSecret";
    /// The same object is defined more than once (manifests only).
    pub const DUPLICATE: &str = "Duplicate";
    /// Accepted, but not acted on yet (e.g. `mirror`).
    pub const UNSUPPORTED_VALUE: &str = "UnsupportedValue";
    /// A field that has no effect for this object (e.g. `apiKey` for `mock`).
    pub const IGNORED_FIELD: &str = "IgnoredField";
    /// A static header looks like it carries a credential.
    pub const CREDENTIAL_IN_HEADER: &str = "CredentialInHeader";
}
