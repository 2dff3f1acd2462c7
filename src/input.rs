//! Reading any of our YAML inputs (manifest, org policy, language file) the same way:
//! spanned parse, schema check reporting every structural problem, then serde.

use serde::de::DeserializeOwned;
use serde_json::Value as Json;

use crate::error::{Diagnostic, SourceFile};
use crate::schema::{Checked, SpanIndex, check};
use crate::yaml::{ParseOptions, parse};

/// A document read as far as possible.
#[derive(Debug)]
pub struct Loaded<T> {
    /// The typed value (invalid parts left out); `None` when the file is not even valid YAML.
    pub value: Option<T>,
    /// The schema check: spans, invalid paths and structural diagnostics.
    pub checked: Checked,
}

impl<T> Loaded<T> {
    /// Every structural problem.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.checked.diagnostics
    }

    /// The value when there were no structural problems at all.
    pub fn into_clean(self) -> Result<T, Vec<Diagnostic>> {
        match self.value {
            Some(v) if self.checked.diagnostics.is_empty() => Ok(v),
            _ => Err(self.checked.diagnostics),
        }
    }
}

/// Parses `file` and checks it against `schema`, then deserializes what is valid into `T`.
pub fn load_document<T: DeserializeOwned>(file: &SourceFile, schema: &Json) -> Loaded<T> {
    let node = match parse(file, ParseOptions::default()) {
        Ok(n) => n,
        Err(d) => {
            return Loaded {
                value: None,
                checked: Checked {
                    value: Json::Null,
                    spans: SpanIndex::default(),
                    invalid: std::iter::once(String::new()).collect(),
                    diagnostics: vec![d],
                },
            };
        }
    };
    let mut checked = check(&node, schema, file);
    let value = match serde_json::from_value::<T>(checked.value.clone()) {
        Ok(v) => Some(v),
        Err(e) => {
            // The schema check should make this impossible; report it rather than panic.
            if checked.diagnostics.is_empty() {
                checked.diagnostics.push(Diagnostic::file_level(
                    file.name.clone(),
                    format!("cannot read this file: {e}"),
                    "this is a pipeforge bug: the schema accepted a document its types reject; please report it",
                ));
            }
            None
        }
    };
    Loaded { value, checked }
}
