//! Rendering definition-file problems the way rustc and cargo do: the message, the
//! `file:line:column`, the offending line with a caret, and a hint.

use std::fmt;

use crate::yaml::YamlProblem;

/// Every problem found in one definition file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct DefinitionErrors {
    /// The file name as the user should see it.
    pub file: String,
    /// The file's text, kept to quote the offending lines.
    pub source_text: String,
    pub problems: Vec<YamlProblem>,
}

impl fmt::Display for DefinitionErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<&str> = self.source_text.lines().collect();
        for (n, p) in self.problems.iter().enumerate() {
            if n > 0 {
                writeln!(f)?;
            }
            writeln!(f, "error: {}", p.message)?;
            let (line, column) = (p.location.line, p.location.column);
            let gutter = " ".repeat(line.to_string().len());
            writeln!(f, "{gutter}--> {}:{line}:{column}", self.file)?;
            if let Some(text) = line.checked_sub(1).and_then(|i| lines.get(i)) {
                writeln!(f, "{gutter} |")?;
                writeln!(f, "{line} | {text}")?;
                let pad = " ".repeat(column.saturating_sub(1));
                let marks = "^".repeat(token_width(text, column));
                writeln!(f, "{gutter} | {pad}{marks}")?;
            }
            if let Some(hint) = &p.hint {
                writeln!(f, "{gutter} = hint: {hint}")?;
            }
        }
        let count = self.problems.len();
        write!(
            f,
            "{} has {count} error{}",
            self.file,
            if count == 1 { "" } else { "s" }
        )
    }
}

/// The width of the YAML token starting at `column` (1-based), at least 1.
fn token_width(line: &str, column: usize) -> usize {
    let rest: String = line.chars().skip(column.saturating_sub(1)).collect();
    let quoted = rest.starts_with('"') || rest.starts_with('\'');
    let width = if quoted {
        let quote = rest.chars().next().unwrap_or('"');
        rest.chars()
            .skip(1)
            .position(|c| c == quote)
            .map(|i| i + 2)
            .unwrap_or(rest.chars().count())
    } else {
        rest.chars()
            .take_while(|c| !matches!(c, ':' | ',' | ']' | '}' | '#') && !c.is_whitespace())
            .count()
    };
    width.max(1)
}
