//! The structural check: walks a marked YAML tree against the JSON Schema generated from
//! [`crate::raw`], reporting every unknown key, wrong type and missing field with its
//! location, and converting the tree into JSON that serde can then read without surprises.

use serde_json::{Map, Value};

use crate::suggest;
use crate::yaml::{Location, Node, NodeValue, ScalarKind, YamlProblem};

/// Checks `root` against `schema`; returns the converted value (with unknown keys left
/// out and wrong values as null) and every problem found.
pub fn check(root: &Node, schema: &Value) -> (Value, Vec<YamlProblem>) {
    let walker = Walker { root: schema };
    let mut problems = Vec::new();
    let value = walker.walk(root, schema, "", &mut problems);
    (value, problems)
}

struct Walker<'s> {
    root: &'s Value,
}

impl<'s> Walker<'s> {
    fn resolve(&self, schema: &'s Value) -> &'s Value {
        let mut schema = schema;
        while let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let name = reference.rsplit('/').next().unwrap_or_default();
            match self.root.get("$defs").and_then(|d| d.get(name)) {
                Some(target) => schema = target,
                None => break,
            }
        }
        schema
    }

    fn walk(
        &self,
        node: &Node,
        schema: &'s Value,
        path: &str,
        out: &mut Vec<YamlProblem>,
    ) -> Value {
        let schema = self.resolve(schema);
        if let Some(branches) = schema
            .get("anyOf")
            .or_else(|| schema.get("oneOf"))
            .and_then(Value::as_array)
        {
            return self.walk_alternatives(node, branches, path, out);
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
            return self.walk_enum(node, allowed, path, out);
        }
        let types = schema_types(schema);
        if types.is_empty() {
            return to_plain_json(node);
        }
        match (&node.value, node.scalar_kind()) {
            (NodeValue::Mapping(_), _) if types.contains(&"object") => {
                self.walk_object(node, schema, path, out)
            }
            (NodeValue::Sequence(items), _) if types.contains(&"array") => {
                let item_schema = schema.get("items").unwrap_or(&Value::Bool(true));
                Value::Array(
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| self.walk(item, item_schema, &format!("{path}[{i}]"), out))
                        .collect(),
                )
            }
            (NodeValue::Scalar { text, .. }, Some(kind)) => {
                match scalar_value(text, kind, &types, schema) {
                    Ok(value) => value,
                    Err(reason) => {
                        out.push(problem(
                            node.location,
                            format!("{} {reason}", at(path)),
                            None,
                        ));
                        Value::Null
                    }
                }
            }
            _ => {
                out.push(problem(
                    node.location,
                    format!(
                        "{} expects {}, found {}",
                        at(path),
                        describe(schema),
                        node.kind_name()
                    ),
                    None,
                ));
                Value::Null
            }
        }
    }

    fn walk_alternatives(
        &self,
        node: &Node,
        branches: &'s [Value],
        path: &str,
        out: &mut Vec<YamlProblem>,
    ) -> Value {
        // A scalar written as a number goes to the number alternative even though any
        // scalar could be read as a string: `port: 70000` is a bad number, not a name.
        if let Some(kind) = node.scalar_kind() {
            let native = branches
                .iter()
                .find(|b| natively_typed(kind, &schema_types(self.resolve(b))));
            if let (Some(branch), false) = (native, kind == ScalarKind::String) {
                return self.walk(node, branch, path, out);
            }
        }
        let mut fitting_kind = Vec::new();
        for branch in branches {
            let mut scratch = Vec::new();
            let value = self.walk(node, branch, path, &mut scratch);
            if scratch.is_empty() {
                return value;
            }
            if kind_fits(node, &schema_types(self.resolve(branch))) {
                fitting_kind.push(scratch);
            }
        }
        // Exactly one alternative has the right shape: its own complaints are the useful ones.
        if fitting_kind.len() == 1 {
            out.extend(fitting_kind.pop().unwrap_or_default());
        } else {
            let expected: Vec<String> =
                branches.iter().map(|b| describe(self.resolve(b))).collect();
            out.push(problem(
                node.location,
                format!(
                    "{} expects {}, found {}",
                    at(path),
                    expected.join(" or "),
                    node.kind_name()
                ),
                None,
            ));
        }
        Value::Null
    }

    fn walk_enum(
        &self,
        node: &Node,
        allowed: &[Value],
        path: &str,
        out: &mut Vec<YamlProblem>,
    ) -> Value {
        let names: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
        if let NodeValue::Scalar { text, .. } = &node.value {
            if names.contains(&text.as_str()) {
                return Value::String(text.clone());
            }
            out.push(problem(
                node.location,
                format!("{} does not accept `{text}`", at(path)),
                Some(suggest::hint_for(text, "value", &names)),
            ));
        } else {
            out.push(problem(
                node.location,
                format!(
                    "{} expects one of {}, found {}",
                    at(path),
                    quoted(&names),
                    node.kind_name()
                ),
                None,
            ));
        }
        Value::Null
    }

    fn walk_object(
        &self,
        node: &Node,
        schema: &'s Value,
        path: &str,
        out: &mut Vec<YamlProblem>,
    ) -> Value {
        let NodeValue::Mapping(entries) = &node.value else {
            unreachable!()
        };
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties");
        let mut result = Map::new();
        for entry in entries {
            let child_path = if path.is_empty() {
                entry.key.clone()
            } else {
                format!("{path}.{}", entry.key)
            };
            let child_schema = properties
                .and_then(|p| p.get(&entry.key))
                .or(match additional {
                    Some(Value::Bool(false)) => None,
                    Some(other) => Some(other),
                    None if properties.is_some() => None,
                    None => Some(&Value::Bool(true)),
                });
            // Top-level `x-` keys are extensions, as in compose files: a place for the
            // anchors that services alias (`x-defaults: &defaults {...}`), ignored.
            if path.is_empty() && entry.key.starts_with("x-") {
                continue;
            }
            match child_schema {
                Some(child_schema) => {
                    let value = self.walk(&entry.value, child_schema, &child_path, out);
                    result.insert(entry.key.clone(), value);
                }
                None => {
                    let known: Vec<&str> = properties
                        .map(|p| p.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    out.push(problem(
                        entry.key_location,
                        format!("unknown key `{}` {}", entry.key, within(path)),
                        Some(suggest::hint_for(&entry.key, "key", &known)),
                    ));
                }
            }
        }
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(name) = required.as_str() else {
                continue;
            };
            if !result.contains_key(name) && !entries.iter().any(|e| e.key == name) {
                out.push(problem(
                    node.location,
                    format!("missing key `{name}` {}", within(path)),
                    properties
                        .and_then(|p| p.get(name))
                        .and_then(|s| self.resolve(s).get("description"))
                        .and_then(Value::as_str)
                        .map(|d| format!("`{name}`: {}", first_sentence(d))),
                ));
            }
        }
        Value::Object(result)
    }
}

fn schema_types(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ if schema.get("properties").is_some() => vec!["object"],
        _ => vec![],
    }
}

fn natively_typed(kind: ScalarKind, types: &[&str]) -> bool {
    match kind {
        ScalarKind::Null => types.contains(&"null"),
        ScalarKind::Bool => types.contains(&"boolean"),
        ScalarKind::Integer => types.contains(&"integer") || types.contains(&"number"),
        ScalarKind::Float => types.contains(&"number"),
        ScalarKind::String => types.contains(&"string"),
    }
}

fn kind_fits(node: &Node, types: &[&str]) -> bool {
    match &node.value {
        NodeValue::Mapping(_) => types.contains(&"object"),
        NodeValue::Sequence(_) => types.contains(&"array"),
        NodeValue::Scalar { .. } => types.iter().any(|t| !matches!(*t, "object" | "array")),
    }
}

/// Converts a scalar to the JSON type the schema wants. Any non-null scalar may be a
/// string (so `LOG_LEVEL: 5` is the string "5"), but a number must be written as one.
fn scalar_value(
    text: &str,
    kind: ScalarKind,
    types: &[&str],
    schema: &Value,
) -> Result<Value, String> {
    if kind == ScalarKind::Null && types.contains(&"null") {
        return Ok(Value::Null);
    }
    if kind == ScalarKind::Integer && (types.contains(&"integer") || types.contains(&"number")) {
        let number: i64 = text
            .parse()
            .map_err(|_| format!("has `{text}`, which is too large"))?;
        let min = schema.get("minimum").and_then(Value::as_i64);
        let max = schema.get("maximum").and_then(Value::as_i64);
        if min.is_some_and(|m| number < m) || max.is_some_and(|m| number > m) {
            return Err(format!("expects {}, found {number}", describe(schema)));
        }
        return Ok(Value::from(number));
    }
    if matches!(kind, ScalarKind::Float | ScalarKind::Integer) && types.contains(&"number") {
        return text
            .parse::<f64>()
            .map(Value::from)
            .map_err(|e| e.to_string());
    }
    if kind == ScalarKind::Bool && types.contains(&"boolean") {
        return Ok(Value::Bool(text.eq_ignore_ascii_case("true")));
    }
    if kind != ScalarKind::Null && types.contains(&"string") {
        return Ok(Value::String(text.to_owned()));
    }
    let found = match kind {
        ScalarKind::Null => "nothing (null)".to_owned(),
        ScalarKind::String => format!("`{text}`"),
        _ => format!("`{text}`"),
    };
    Err(format!("expects {}, found {found}", describe(schema)))
}

fn to_plain_json(node: &Node) -> Value {
    match &node.value {
        NodeValue::Scalar { text, .. } => Value::String(text.clone()),
        NodeValue::Sequence(items) => Value::Array(items.iter().map(to_plain_json).collect()),
        NodeValue::Mapping(entries) => Value::Object(
            entries
                .iter()
                .map(|e| (e.key.clone(), to_plain_json(&e.value)))
                .collect(),
        ),
    }
}

/// What a schema accepts, in words.
fn describe(schema: &Value) -> String {
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        let names: Vec<&str> = allowed.iter().filter_map(Value::as_str).collect();
        return format!("one of {}", quoted(&names));
    }
    let words: Vec<String> = schema_types(schema)
        .into_iter()
        .filter(|t| *t != "null")
        .map(|t| match t {
            "object" => "a mapping".to_owned(),
            "array" => "a list".to_owned(),
            "string" => "a string".to_owned(),
            "boolean" => "`true` or `false`".to_owned(),
            "integer" => match (schema.get("minimum"), schema.get("maximum")) {
                (Some(min), Some(max)) => format!("a whole number from {min} to {max}"),
                (Some(min), None) => format!("a whole number of at least {min}"),
                _ => "a whole number".to_owned(),
            },
            "number" => "a number".to_owned(),
            other => other.to_owned(),
        })
        .collect();
    if words.is_empty() {
        "a value".to_owned()
    } else {
        words.join(" or ")
    }
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn at(path: &str) -> String {
    if path.is_empty() {
        "the file".to_owned()
    } else {
        format!("`{path}`")
    }
}

fn within(path: &str) -> String {
    if path.is_empty() {
        "at the top level".to_owned()
    } else {
        format!("in `{path}`")
    }
}

fn first_sentence(text: &str) -> &str {
    text.split_once(". ")
        .map(|(s, _)| s)
        .unwrap_or(text)
        .trim_end_matches('.')
}

fn problem(location: Location, message: String, hint: Option<String>) -> YamlProblem {
    YamlProblem {
        location,
        message,
        hint,
    }
}
