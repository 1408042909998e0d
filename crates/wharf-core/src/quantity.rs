//! Resource quantities written in the definition file: `cpu: 0.5`, `memory: 256Mi`.

/// Parses a memory size: a number of bytes with an optional unit (`Ki`, `Mi`, `Gi`,
/// `Ti` are powers of 1024; `K`, `M`, `G`, `T` of 1000).
pub fn parse_memory(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let factor: u64 = match unit.trim() {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "K" | "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        other => return Err(format!("`{text}`: unknown unit `{other}`")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a memory size"))?;
    if !value.is_finite() || value < 0.0 {
        return Err(format!("`{text}` is not a memory size"));
    }
    Ok((value * factor as f64) as u64)
}

/// CPU cores as thousandths of a core.
pub fn cpu_millis(cores: f64) -> Result<u64, String> {
    if !cores.is_finite() || cores < 0.0 {
        return Err(format!("`{cores}` is not a number of CPU cores"));
    }
    Ok((cores * 1000.0).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_units() {
        assert_eq!(parse_memory("256Mi").unwrap(), 256 << 20);
        assert_eq!(parse_memory("1.5Gi").unwrap(), 3 << 29);
        assert_eq!(parse_memory("512M").unwrap(), 512_000_000);
        assert_eq!(parse_memory("1024").unwrap(), 1024);
        assert!(parse_memory("lots").is_err());
        assert!(parse_memory("5Qi").is_err());
        assert_eq!(cpu_millis(0.5).unwrap(), 500);
        assert!(cpu_millis(-1.0).is_err());
    }
}
