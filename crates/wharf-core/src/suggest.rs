//! "Did you mean ...?" hints.

/// The candidate closest to `given`, if it is close enough to be a plausible typo.
pub fn closest<'a>(given: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(given, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// A hint line for an unknown name: the closest candidate, else the list of valid ones.
pub fn hint_for(given: &str, what: &str, candidates: &[&str]) -> String {
    match closest(given, candidates.iter().copied()) {
        Some(best) => format!("did you mean `{best}`?"),
        None if candidates.is_empty() => format!("no {what} is defined"),
        None => {
            let list: Vec<String> = candidates.iter().map(|c| format!("`{c}`")).collect();
            format!("valid {what}s: {}", list.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_misses_only() {
        assert_eq!(closest("oders", ["orders", "catalog"]), Some("orders"));
        assert_eq!(closest("helth", ["health", "run"]), Some("health"));
        assert_eq!(closest("zzz", ["orders", "catalog"]), None);
    }
}
