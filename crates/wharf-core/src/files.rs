//! Files beside the definition: env files (docker compose's `.env` format) read into
//! configuration, and the paths of the files rendered into an instance's folder.

/// The digest of a definition revision: sha256 of its text and, when it refers to
/// files, of theirs (a changed template makes a new revision). Without files it is the
/// text's own sha256, as revisions from before files were.
pub fn definition_digest(
    source: &str,
    files: &std::collections::BTreeMap<String, String>,
) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(source.as_bytes());
    for (path, text) in files {
        for part in [path, text] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
    }
    hex::encode(hasher.finalize())
}

/// A line of an env file that cannot be read: its number (from 1) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFileError {
    pub line: usize,
    pub message: String,
}

/// Reads `KEY=VALUE` lines: blank lines and `#` comments are skipped, `export ` is
/// allowed before a key, a value may be quoted ('...' as it stands, "..." with `\n`,
/// `\"` and `\\`), and an unquoted value ends at ` #`.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, EnvFileError> {
    let mut pairs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let fail = |message: String| EnvFileError {
            line: i + 1,
            message,
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        let Some((key, value)) = line.split_once('=') else {
            return Err(fail(format!(
                "`{}` is not `KEY=VALUE`",
                line.chars().take(40).collect::<String>()
            )));
        };
        let key = key.trim();
        if !is_variable_name(key) {
            return Err(fail(format!(
                "`{key}` is not a variable name (letters, digits and `_`, not starting with a digit)"
            )));
        }
        pairs.push((key.to_owned(), value_of(value.trim()).map_err(fail)?));
    }
    Ok(pairs)
}

fn value_of(raw: &str) -> Result<String, String> {
    if let Some(rest) = raw.strip_prefix('\'') {
        return match rest.split_once('\'') {
            Some((inner, after)) if trailing_ok(after) => Ok(inner.to_owned()),
            Some(_) => Err("text after the closing quote".into()),
            None => Err("the value's quote is not closed".into()),
        };
    }
    if let Some(rest) = raw.strip_prefix('"') {
        let mut value = String::new();
        let mut chars = rest.chars();
        while let Some(c) = chars.next() {
            match c {
                '"' => {
                    return if trailing_ok(chars.as_str()) {
                        Ok(value)
                    } else {
                        Err("text after the closing quote".into())
                    };
                }
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some(other) => value.push(other),
                    None => break,
                },
                c => value.push(c),
            }
        }
        return Err("the value's quote is not closed".into());
    }
    let value = match raw.find(" #") {
        Some(at) => &raw[..at],
        None => raw,
    };
    Ok(value.trim_end().to_owned())
}

fn trailing_ok(after: &str) -> bool {
    let after = after.trim();
    after.is_empty() || after.starts_with('#')
}

/// Whether `name` can be an environment variable's name.
pub fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// An env file's value as a configuration value: configuration values are templates,
/// but an env file's are taken as they stand (a password may well contain `{{`).
pub fn literal(value: &str) -> Option<String> {
    if !["{{", "{%", "{#"].iter().any(|m| value.contains(m)) {
        return Some(value.to_owned());
    }
    // A value that itself closes a raw block cannot be quoted this way.
    (!value.contains("endraw")).then(|| format!("{{% raw %}}{value}{{% endraw %}}"))
}

/// Why `path` cannot name a file in an instance's folder, if it cannot: it must be
/// relative and stay inside the folder.
pub fn instance_file_problem(path: &str) -> Option<String> {
    if path.is_empty() {
        return Some("the file name is empty".into());
    }
    if path.starts_with('/') {
        return Some(format!("`{path}` is absolute"));
    }
    if path.contains('\0') || path.contains('\\') {
        return Some(format!("`{path}` holds a NUL or a backslash"));
    }
    if path
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Some(format!(
            "`{path}` has an empty, `.` or `..` part: files stay inside the instance's folder"
        ));
    }
    None
}

/// A user as `user:` names it: a name `useradd` would take (`www-data`, `_apt`), or a
/// numeric `UID` with an optional `:GID`.
pub fn is_user(text: &str) -> bool {
    let numeric = |part: &str| {
        !part.is_empty() && part.len() <= 10 && part.bytes().all(|b| b.is_ascii_digit())
    };
    if let Some((uid, gid)) = text.split_once(':') {
        return numeric(uid) && numeric(gid);
    }
    if numeric(text) {
        return true;
    }
    let mut bytes = text.bytes();
    text.len() <= 32
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Vec<(String, String)> {
        parse_env_file(text).unwrap()
    }

    #[test]
    fn env_files_read_the_compose_format() {
        let text = "# settings\n\nA=1\nexport B = two words \nC='{{ raw }} # kept'\nD=\"line\\nnext\"\nE=x # comment\nF=\n";
        assert_eq!(
            parsed(text),
            [
                ("A", "1"),
                ("B", "two words"),
                ("C", "{{ raw }} # kept"),
                ("D", "line\nnext"),
                ("E", "x"),
                ("F", "")
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn env_file_errors_name_the_line() {
        for (text, line, says) in [
            ("A=1\nnot a pair\n", 2, "is not `KEY=VALUE`"),
            ("1A=x", 1, "not a variable name"),
            ("A='open", 1, "not closed"),
            ("A=\"x\" y", 1, "after the closing quote"),
        ] {
            let e = parse_env_file(text).unwrap_err();
            assert_eq!(e.line, line, "{text}");
            assert!(e.message.contains(says), "{text}: {}", e.message);
        }
    }

    #[test]
    fn env_file_values_are_not_templates() {
        assert_eq!(literal("plain").unwrap(), "plain");
        assert_eq!(
            crate::template::check(&literal("p{{w").unwrap(), &[]),
            Ok(())
        );
        assert_eq!(literal("{% endraw %}"), None);
    }

    #[test]
    fn instance_files_stay_inside_the_folder() {
        assert_eq!(instance_file_problem("nginx.conf"), None);
        assert_eq!(instance_file_problem("conf.d/site.conf"), None);
        for bad in ["", "/etc/passwd", "../x", "a//b", "./a", "a/.."] {
            assert!(instance_file_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn users_are_names_or_numbers() {
        for good in ["nobody", "www-data", "_apt", "1000", "1000:1000", "0:0"] {
            assert!(is_user(good), "{good}");
        }
        for bad in ["", "Root", "1000:", ":1", "a b", "x;rm", "-x", "1:2:3"] {
            assert!(!is_user(bad), "{bad}");
        }
    }
}
