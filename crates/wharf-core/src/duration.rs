//! Durations written in the definition file, such as `5s` or `200ms`.

use std::time::Duration;

/// Parses a human duration (`5s`, `200ms`, `1m 30s`).
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("`{text}` is not a duration ({e})"))
}
