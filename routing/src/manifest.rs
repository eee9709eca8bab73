//! Reading the same YAML users `kubectl apply`: standalone mode's input.
//!
//! [`load_dir`] reads every `*.yaml` / `*.yml` file of one directory (not
//! recursively), sorted by file name; [`load_str`] reads one text. Each file
//! may hold many documents. Accepted are `switchyard.dev/v1alpha1`
//! `ModelRoute` and `ProviderSecret`, core/v1 `Secret` (`data` base64 and
//! `stringData`; `stringData` wins on the same key, as on the API server),
//! and `List`-style documents whose `items` are any of those. Other kinds are
//! skipped with a warning, empty documents silently.
//!
//! A malformed document becomes a [`ManifestError`] naming the file, the
//! document (1-based), the field path and, where the YAML parser knows it,
//! the line and column. It never stops the other documents or files from
//! loading: a document that is not valid YAML is cut off at the next `---`
//! line, so the documents after it still load. Unknown fields are errors, as
//! with `kubectl apply`'s default strict field validation: a typo such as
//! `weigth` would otherwise silently route traffic as if it were not there.
//!
//! Objects without a namespace get `default`. Every accepted object gets the
//! next load order (files in name order, documents in file order), which the
//! compile step uses for deterministic tie-breaks.
//!
//! In a directory, hidden entries (names starting with `.`) are skipped. That
//! covers the `..data` and `..2024_…` entries of a Kubernetes ConfigMap or
//! Secret volume, whose visible files are symlinks into `..data`; symlinked
//! files are followed.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use crate::api::{API_VERSION, GROUP, ModelRoute, ProviderSecret};
use crate::compile::{Input, Inputs, SecretInput};

/// What a load produced: the objects that parsed, and everything that did not.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// Every accepted object, in load order.
    pub inputs: Inputs,
    /// Documents (or files) that could not be read; they are left out.
    pub errors: Vec<ManifestError>,
    /// Documents that were skipped on purpose, such as other kinds.
    pub warnings: Vec<String>,
}

/// A file or document that could not be read.
///
/// Displays as `examples/x.yaml: document 2: `spec.targets[0].weight`:
/// invalid type: string "ten", expected u32 (line 14, column 13)`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct ManifestError {
    /// The file (or the source name given to [`load_str`]).
    pub path: PathBuf,
    /// 1-based index of the document in the file; 0 when the whole file
    /// (or directory) could not be read.
    pub doc_index: usize,
    /// Field path inside the document, e.g. `spec.targets[0].weight`.
    pub field: Option<String>,
    /// Line and column (1-based) in the file, where the YAML parser knows them.
    pub location: Option<(usize, usize)>,
    /// What is wrong; lowercase, never contains a Secret value.
    pub message: String,
}

impl ManifestError {
    fn render(&self) -> String {
        let mut out = self.path.display().to_string();
        if self.doc_index > 0 {
            out.push_str(&format!(": document {}", self.doc_index));
        }
        if let Some(field) = &self.field {
            out.push_str(&format!(": `{field}`"));
        }
        out.push_str(&format!(": {}", self.message));
        if let Some((line, column)) = self.location {
            out.push_str(&format!(" (line {line}, column {column})"));
        }
        out
    }
}

/// Reads every `*.yaml` / `*.yml` file in `dir`, sorted by name; see the
/// [module docs](self). An unreadable directory or file is reported in
/// [`Loaded::errors`], never a panic.
pub fn load_dir(dir: &Path) -> Loaded {
    let mut loader = Loader::default();
    match manifest_files(dir) {
        Ok(files) => {
            for file in files {
                match fs::read(&file) {
                    Ok(bytes) => match String::from_utf8(bytes) {
                        Ok(text) => loader.load_text(&file, &text),
                        Err(_) => loader.file_error(&file, "the file is not UTF-8 text".to_owned()),
                    },
                    Err(err) => loader.file_error(&file, format!("cannot read the file: {err}")),
                }
            }
        }
        Err(err) => loader.file_error(dir, format!("cannot read the directory: {err}")),
    }
    loader.loaded
}

/// Reads one text holding any number of YAML documents; `source_name` is
/// what errors and warnings call it.
pub fn load_str(source_name: &str, text: &str) -> Loaded {
    let mut loader = Loader::default();
    loader.load_text(Path::new(source_name), text);
    loader.loaded
}

/// The manifest files of `dir`, sorted by name.
fn manifest_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let lower = name.to_ascii_lowercase();
        if !(lower.ends_with(".yaml") || lower.ends_with(".yml")) {
            continue;
        }
        let path = entry.path();
        // `fs::metadata` follows symlinks; a dangling one is reported when read.
        if fs::metadata(&path).map_or(true, |m| m.is_file()) {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// One YAML document's text and where it starts in its file.
struct Chunk<'a> {
    text: &'a str,
    /// 1-based line of `text`'s first line in the file.
    first_line: usize,
}

impl Chunk<'_> {
    /// The text behind as many blank lines as precede it in the file, so
    /// that the parser's line numbers (in messages too) are the file's.
    /// Only used on error paths.
    fn padded(&self) -> String {
        let mut padded = "\n".repeat(self.first_line - 1);
        padded.push_str(self.text);
        padded
    }
}

/// Splits a YAML stream at `---` / `...` lines, so that a syntax error only
/// spoils its own document. A marker at column 0 always ends a document in
/// YAML (even inside a block scalar), so this split agrees with the parser.
/// Text before the first `---` or after a `...` counts as a document only if
/// it has content other than comments, blank lines and directives.
fn split_documents(text: &str) -> Vec<Chunk<'_>> {
    fn is_marker(line: &str, marker: &str) -> bool {
        line.strip_prefix(marker).is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r']))
    }
    fn has_content(text: &str) -> bool {
        text.lines().any(|line| {
            let line = line.trim_start();
            !(line.is_empty() || line.starts_with('#') || line.starts_with('%'))
        })
    }

    let mut chunks = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut explicit = false;
    let mut offset = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let line_no = index + 1;
        let bare = line.trim_end_matches(['\n', '\r']);
        if is_marker(bare, "---") {
            let body = &text[start..offset];
            if explicit || has_content(body) {
                chunks.push(Chunk { text: body, first_line: start_line });
            }
            start = offset;
            start_line = line_no;
            explicit = true;
        } else if is_marker(bare, "...") {
            let body = &text[start..offset];
            if explicit || has_content(body) {
                chunks.push(Chunk { text: body, first_line: start_line });
            }
            start = offset + line.len();
            start_line = line_no + 1;
            explicit = false;
        }
        offset += line.len();
    }
    let body = &text[start..];
    if explicit || has_content(body) {
        chunks.push(Chunk { text: body, first_line: start_line });
    }
    chunks
}

#[derive(Default)]
struct Loader {
    loaded: Loaded,
    next_order: u64,
}

/// Where a document came from, for messages.
struct Source<'a> {
    path: &'a Path,
    doc_index: usize,
    chunk: &'a Chunk<'a>,
}

/// A failure inside one document.
struct DocError {
    field: Option<String>,
    location: Option<(usize, usize)>,
    message: String,
}

impl DocError {
    fn new(field: Option<String>, message: impl Into<String>) -> Self {
        Self { field, location: None, message: message.into() }
    }
}

impl Loader {
    fn file_error(&mut self, path: &Path, message: String) {
        self.loaded.errors.push(ManifestError {
            path: path.to_owned(),
            doc_index: 0,
            field: None,
            location: None,
            message,
        });
    }

    fn load_text(&mut self, path: &Path, text: &str) {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let chunks = split_documents(text);
        for (i, chunk) in chunks.iter().enumerate() {
            let source = Source { path, doc_index: i + 1, chunk };
            if let Err(err) = self.load_document(&source) {
                self.loaded.errors.push(ManifestError {
                    path: path.to_owned(),
                    doc_index: source.doc_index,
                    field: err.field,
                    location: err.location,
                    message: err.message,
                });
            }
        }
    }

    fn load_document(&mut self, source: &Source<'_>) -> Result<(), DocError> {
        let mut value: Value = serde_yaml_ng::from_str(source.chunk.text).map_err(|err| {
            let err = serde_yaml_ng::from_str::<Value>(&source.chunk.padded()).err().unwrap_or(err);
            DocError { field: None, location: location(&err), message: format!("invalid YAML: {}", yaml_message(&err)) }
        })?;
        value
            .apply_merge()
            .map_err(|err| DocError::new(None, format!("invalid YAML merge key: {}", yaml_message(&err))))?;
        if value.is_null() {
            return Ok(());
        }
        let (api_version, kind) = type_of(&value, "")?;
        if kind == "List" || (kind.ends_with("List") && value.get("items").is_some()) {
            let Some(items) = value.get("items").and_then(Value::as_sequence) else {
                return Err(DocError::new(Some("items".to_owned()), format!("a `{kind}` needs an `items` list")));
            };
            // Errors in items are reported one by one; the good items load.
            let mut first_error = None;
            for (i, item) in items.iter().enumerate() {
                let prefix = format!("items[{i}]");
                let result = if item.is_null() {
                    Ok(())
                } else {
                    type_of(item, &prefix).and_then(|(av, k)| self.load_object(source, item, &av, &k, &prefix))
                };
                if let Err(err) = result {
                    match first_error {
                        None => first_error = Some(err),
                        Some(_) => self.loaded.errors.push(ManifestError {
                            path: source.path.to_owned(),
                            doc_index: source.doc_index,
                            field: err.field,
                            location: err.location,
                            message: err.message,
                        }),
                    }
                }
            }
            return first_error.map_or(Ok(()), Err);
        }
        self.load_object(source, &value, &api_version, &kind, "")
    }

    fn load_object(
        &mut self,
        source: &Source<'_>,
        value: &Value,
        api_version: &str,
        kind: &str,
        prefix: &str,
    ) -> Result<(), DocError> {
        let at_top = prefix.is_empty();
        match (api_version, kind) {
            (API_VERSION, "ModelRoute") => {
                let mut route: ModelRoute = typed(value, prefix, at_top.then_some(source.chunk))?;
                check_metadata(&mut route.metadata, prefix)?;
                let order = self.order();
                self.loaded.inputs.routes.push(Input { order, object: route });
            }
            (API_VERSION, "ProviderSecret") => {
                let mut provider: ProviderSecret = typed(value, prefix, at_top.then_some(source.chunk))?;
                check_metadata(&mut provider.metadata, prefix)?;
                let order = self.order();
                self.loaded.inputs.providers.push(Input { order, object: provider });
            }
            ("v1", "Secret") => {
                let mut secret: Secret = typed(value, prefix, at_top.then_some(source.chunk)).map_err(|mut err| {
                    let in_data = err.field.as_deref().is_some_and(|f| f.starts_with(&join(prefix, "data.")));
                    err.message = if in_data && !err.message.starts_with("invalid type") {
                        // The decoder's message names the offending character.
                        "not valid base64; `data` values must be base64-encoded, use `stringData` for plain text"
                            .to_owned()
                    } else {
                        redact_quoted(&err.message)
                    };
                    err
                })?;
                check_metadata(&mut secret.metadata, prefix)?;
                let order = self.order();
                self.loaded.inputs.secrets.push(Input { order, object: SecretInput::from_secret(&secret) });
            }
            (_, "ModelRoute" | "ProviderSecret") if api_version.starts_with(&format!("{GROUP}/")) => {
                return Err(DocError::new(
                    Some(join(prefix, "apiVersion")),
                    format!("unsupported apiVersion `{api_version}` for `{kind}`; this version reads `{API_VERSION}`"),
                ));
            }
            _ if api_version.starts_with(&format!("{GROUP}/")) => {
                return Err(DocError::new(
                    Some(join(prefix, "kind")),
                    format!("unknown kind `{kind}` in `{GROUP}`; expected `ModelRoute` or `ProviderSecret`"),
                ));
            }
            _ => {
                let name = value
                    .get("metadata")
                    .and_then(|m| m.get("name"))
                    .and_then(Value::as_str)
                    .map(|name| format!(" `{name}`"))
                    .unwrap_or_default();
                let item = if at_top { String::new() } else { format!(" (`{prefix}`)") };
                self.loaded.warnings.push(format!(
                    "{}: document {}{item}: skipped `{api_version}` `{kind}`{name}: only ModelRoute, ProviderSecret \
                     and Secret objects are read",
                    source.path.display(),
                    source.doc_index,
                ));
            }
        }
        Ok(())
    }

    fn order(&mut self) -> u64 {
        let order = self.next_order;
        self.next_order += 1;
        order
    }
}

/// `apiVersion` and `kind` of an object, or why it is not one.
fn type_of(value: &Value, prefix: &str) -> Result<(String, String), DocError> {
    if !value.is_mapping() {
        let what = match value {
            Value::Sequence(_) => "a list",
            Value::String(_) => "a string",
            Value::Number(_) => "a number",
            Value::Bool(_) => "a boolean",
            _ => "something else",
        };
        let field = (!prefix.is_empty()).then(|| prefix.to_owned());
        return Err(DocError::new(
            field,
            format!("expected a Kubernetes object (a mapping with `apiVersion` and `kind`), found {what}"),
        ));
    }
    let get = |key: &str| -> Result<String, DocError> {
        match value.get(key) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(_) => Err(DocError::new(Some(join(prefix, key)), format!("`{key}` must be a non-empty string"))),
            None => Err(DocError::new(Some(join(prefix, key)), format!("`{key}` is required"))),
        }
    };
    Ok((get("apiVersion")?, get("kind")?))
}

/// Deserializes one object, with field paths, rejecting unknown fields.
/// `chunk` is the document's text, used to find the line of an error.
fn typed<T: DeserializeOwned>(value: &Value, prefix: &str, chunk: Option<&Chunk<'_>>) -> Result<T, DocError> {
    let mut unknown = Vec::new();
    let result: Result<T, _> = {
        let mut record = |path: serde_ignored::Path<'_>| {
            let path = ignored_path(&path);
            // The generated root types read `apiVersion` and `kind` elsewhere.
            if path != "apiVersion" && path != "kind" {
                unknown.push(path);
            }
        };
        let de = serde_ignored::Deserializer::new(value.clone(), &mut record);
        serde_path_to_error::deserialize(de)
    };
    match result {
        Ok(object) => {
            let Some((first, rest)) = unknown.split_first() else { return Ok(object) };
            let name = first.rsplit(['.', '[']).next().unwrap_or(first).trim_end_matches(']');
            let mut message =
                format!("unknown field `{name}`; check the spelling (the API server would reject it too)");
            if !rest.is_empty() {
                let others: Vec<String> = rest.iter().map(|p| format!("`{}`", join(prefix, p))).collect();
                message.push_str(&format!("; also unknown: {}", others.join(", ")));
            }
            Err(DocError::new(Some(join(prefix, first)), message))
        }
        Err(err) => {
            let mut field = String::new();
            for segment in err.path() {
                match segment {
                    serde_path_to_error::Segment::Seq { index } => field.push_str(&format!("[{index}]")),
                    serde_path_to_error::Segment::Map { key } => {
                        if !field.is_empty() {
                            field.push('.');
                        }
                        field.push_str(key);
                    }
                    serde_path_to_error::Segment::Enum { .. } => {}
                    serde_path_to_error::Segment::Unknown => field.push_str(".?"),
                }
            }
            let field = join(prefix, &field);
            // The value-based error has a clean message; parse the text again
            // (only on this error path) to learn the line and column.
            let location =
                chunk.and_then(|chunk| serde_yaml_ng::from_str::<T>(&chunk.padded()).err().and_then(|e| location(&e)));
            let mut message = yaml_message(err.inner());
            if (message.starts_with("invalid type: integer") || message.starts_with("invalid type: floating point"))
                && message.ends_with("expected a string")
            {
                message.push_str("; write the value in quotes, such as `\"5\"` or `\"0.05\"`");
            }
            Err(DocError { field: (!field.is_empty()).then_some(field), location, message })
        }
    }
}

/// Replaces every quoted part of a message with `*****`: serde echoes
/// offending values (`invalid type: string "…"`), and in a Secret those may
/// be key material.
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut chars = message.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if matches!(c, '"' | '`' | '\'') {
            let mut closed = false;
            for inner in chars.by_ref() {
                if inner == c {
                    closed = true;
                    break;
                }
            }
            out.push_str("*****");
            if closed {
                out.push(c);
            }
        }
    }
    out
}

/// Requires a name and fills in the `default` namespace.
fn check_metadata(meta: &mut ObjectMeta, prefix: &str) -> Result<(), DocError> {
    if meta.name.as_deref().is_none_or(str::is_empty) {
        let hint = if meta.generate_name.is_some() { " (`generateName` is not supported here)" } else { "" };
        return Err(DocError::new(
            Some(join(prefix, "metadata.name")),
            format!("missing; every object needs a name{hint}"),
        ));
    }
    if meta.namespace.as_deref().is_none_or(str::is_empty) {
        meta.namespace = Some("default".to_owned());
    }
    Ok(())
}

/// `spec.targets[0].weigth` from serde_ignored's path.
fn ignored_path(path: &serde_ignored::Path<'_>) -> String {
    match path {
        serde_ignored::Path::Root => String::new(),
        serde_ignored::Path::Seq { parent, index } => format!("{}[{index}]", ignored_path(parent)),
        serde_ignored::Path::Map { parent, key } => join(&ignored_path(parent), key),
        serde_ignored::Path::Some { parent }
        | serde_ignored::Path::NewtypeStruct { parent }
        | serde_ignored::Path::NewtypeVariant { parent } => ignored_path(parent),
    }
}

fn join(prefix: &str, field: &str) -> String {
    match (prefix.is_empty(), field.is_empty()) {
        (true, _) => field.to_owned(),
        (false, true) => prefix.to_owned(),
        (false, false) if field.starts_with('[') => format!("{prefix}{field}"),
        (false, false) => format!("{prefix}.{field}"),
    }
}

/// Line and column of an error from parsing [`Chunk::padded`].
fn location(err: &serde_yaml_ng::Error) -> Option<(usize, usize)> {
    err.location().map(|l| (l.line(), l.column()))
}

/// The parser's message without its ` at line X column Y` for the main
/// problem, which [`ManifestError`] shows on its own.
fn yaml_message(err: &serde_yaml_ng::Error) -> String {
    let text = err.to_string();
    let text = match err.location() {
        Some(l) => {
            let suffix = format!(" at line {} column {}", l.line(), l.column());
            match text.find(&suffix) {
                Some(at) => format!("{}{}", &text[..at], &text[at + suffix.len()..]),
                None => text,
            }
        }
        None => text,
    };
    text.trim().to_owned()
}

impl fmt::Display for Loaded {
    /// A short summary for logs: counts of objects, errors and warnings.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} routes, {} provider secrets, {} secrets, {} errors, {} warnings",
            self.inputs.routes.len(),
            self.inputs.providers.len(),
            self.inputs.secrets.len(),
            self.errors.len(),
            self.warnings.len()
        )
    }
}

#[cfg(test)]
mod tests;
