//! What one configuration revision changed from the one before it.

use std::collections::BTreeMap;

/// One key's change between two revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyChange {
    Added {
        key: String,
        value: String,
    },
    Changed {
        key: String,
        from: String,
        to: String,
    },
    Removed {
        key: String,
        was: String,
    },
}

/// The keys that differ from `before` to `after`, in key order.
pub fn config_diff(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<KeyChange> {
    let mut keys: Vec<&String> = before.keys().chain(after.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter_map(|key| match (before.get(key), after.get(key)) {
            (None, Some(value)) => Some(KeyChange::Added {
                key: key.clone(),
                value: value.clone(),
            }),
            (Some(from), Some(to)) if from != to => Some(KeyChange::Changed {
                key: key.clone(),
                from: from.clone(),
                to: to.clone(),
            }),
            (Some(was), None) => Some(KeyChange::Removed {
                key: key.clone(),
                was: was.clone(),
            }),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn each_key_is_added_changed_removed_or_left_out() {
        type Pairs<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(Pairs, Pairs, &[KeyChange])] = &[
            (&[], &[], &[]),
            (&[("A", "1")], &[("A", "1")], &[]),
            (
                &[],
                &[("A", "1")],
                &[KeyChange::Added {
                    key: "A".into(),
                    value: "1".into(),
                }],
            ),
            (
                &[("A", "1")],
                &[("A", "2")],
                &[KeyChange::Changed {
                    key: "A".into(),
                    from: "1".into(),
                    to: "2".into(),
                }],
            ),
            (
                &[("B", "x"), ("A", "1")],
                &[("A", "1"), ("C", "y")],
                &[
                    KeyChange::Removed {
                        key: "B".into(),
                        was: "x".into(),
                    },
                    KeyChange::Added {
                        key: "C".into(),
                        value: "y".into(),
                    },
                ],
            ),
        ];
        for (before, after, expected) in cases {
            assert_eq!(
                config_diff(&map(before), &map(after)),
                *expected,
                "{before:?} -> {after:?}"
            );
        }
    }
}
