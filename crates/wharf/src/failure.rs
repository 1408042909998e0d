//! Errors the user sees, and the exit codes they map to: 0 success, 1 the operation
//! failed (for example a deploy that was rolled back), 2 bad usage or bad input.

use std::fmt;

/// An error with an exit code and an optional hint, raised anywhere in the binary.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
    pub hint: Option<String>,
}

impl Failure {
    /// Bad usage or input: exit code 2.
    pub fn input(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
            hint: None,
        }
    }

    /// The operation failed: exit code 1.
    pub fn operation(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

impl From<wharf_client::ClientError> for Failure {
    fn from(e: wharf_client::ClientError) -> Self {
        let code = if e.is_input_error() { 2 } else { 1 };
        Self {
            code,
            message: e.to_string(),
            hint: e.hint(),
        }
    }
}

impl From<wharf_core::spec::SpecError> for Failure {
    fn from(e: wharf_core::spec::SpecError) -> Self {
        Failure::input(e.to_string()).hint(e.hint())
    }
}

/// Turns any error into the exit code and the text printed on stderr.
pub fn report(error: &anyhow::Error) -> (u8, String) {
    if let Some(defs) = error.downcast_ref::<wharf_core::DefinitionErrors>() {
        return (2, defs.to_string());
    }
    let (code, hint) = match error.downcast_ref::<Failure>() {
        Some(f) => (f.code, f.hint.clone()),
        None => match error.downcast_ref::<wharf_client::ClientError>() {
            Some(c) => (if c.is_input_error() { 2 } else { 1 }, c.hint()),
            None => (1, None),
        },
    };
    let mut text = format!("error: {error}");
    for cause in error.chain().skip(1) {
        text.push_str(&format!("\n  Caused by: {cause}"));
    }
    if let Some(hint) = hint {
        text.push_str(&format!("\n\nhint: {hint}"));
    }
    (code, text)
}
