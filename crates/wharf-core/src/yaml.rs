//! A YAML tree that remembers where every node came from.
//!
//! serde alone stops at the first error and forgets positions, but `wharf validate` must
//! report every problem of a file with its line and column. So the file is first read
//! into this marked tree; the structural check and the semantic validation both walk it.

use saphyr_parser::{Event, Parser, ScalarStyle};

/// A 1-based line and column in the definition file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// One YAML node with the location where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub location: Location,
    pub value: NodeValue,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    /// A scalar and whether it was written plain (unquoted), which decides its YAML type.
    Scalar {
        text: String,
        plain: bool,
    },
    Sequence(Vec<Node>),
    Mapping(Vec<Entry>),
}

/// A mapping entry; keys keep their own location so unknown keys can be pointed at.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_location: Location,
    pub value: Node,
}

/// A YAML syntax problem, or a construct wharf does not accept (duplicate keys, non-string keys).
#[derive(Debug, Clone, PartialEq)]
pub struct YamlProblem {
    pub location: Location,
    pub message: String,
    pub hint: Option<String>,
}

/// The scalar type of a plain YAML scalar under the YAML 1.2 core schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScalarKind {
    Null,
    Bool,
    Integer,
    Float,
    String,
}

impl Node {
    /// Returns the node's kind in words, for error messages.
    pub fn kind_name(&self) -> &'static str {
        match &self.value {
            NodeValue::Scalar { .. } => match self.scalar_kind() {
                Some(ScalarKind::Null) => "null",
                Some(ScalarKind::Bool) => "a boolean",
                Some(ScalarKind::Integer) => "an integer",
                Some(ScalarKind::Float) => "a number",
                _ => "a string",
            },
            NodeValue::Sequence(_) => "a list",
            NodeValue::Mapping(_) => "a mapping",
        }
    }

    /// The core-schema type of a scalar node, `None` for collections.
    pub fn scalar_kind(&self) -> Option<ScalarKind> {
        let NodeValue::Scalar { text, plain } = &self.value else {
            return None;
        };
        if !plain {
            return Some(ScalarKind::String);
        }
        Some(classify_plain(text))
    }

    /// Looks a key up in a mapping node.
    pub fn get(&self, key: &str) -> Option<&Entry> {
        match &self.value {
            NodeValue::Mapping(entries) => entries.iter().find(|e| e.key == key),
            _ => None,
        }
    }

    /// Follows a path of keys and indexes; returns the deepest node found and, when the
    /// last step is a key, that key's location (errors about a key point at the key).
    pub fn locate(&self, path: &[PathSegment]) -> Location {
        let mut node = self;
        let mut location = self.location;
        for segment in path {
            match (segment, &node.value) {
                (PathSegment::Key(key), NodeValue::Mapping(entries)) => {
                    match entries.iter().find(|e| &e.key == key) {
                        Some(entry) => {
                            location = entry.key_location;
                            node = &entry.value;
                        }
                        None => return location,
                    }
                }
                (PathSegment::Value, _) => location = node.location,
                (PathSegment::Index(i), NodeValue::Sequence(items)) => match items.get(*i) {
                    Some(item) => {
                        node = item;
                        location = item.location;
                    }
                    None => return location,
                },
                _ => return location,
            }
        }
        location
    }
}

/// A step in a path through the tree, used to point semantic errors at their place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathSegment {
    Key(String),
    Index(usize),
    /// Point at the value of the previous key rather than at the key itself.
    Value,
}

fn classify_plain(text: &str) -> ScalarKind {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return ScalarKind::Null,
        "true" | "True" | "TRUE" | "false" | "False" | "FALSE" => return ScalarKind::Bool,
        _ => {}
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return ScalarKind::Integer;
    }
    if text.parse::<f64>().is_ok() && text.bytes().any(|b| b.is_ascii_digit()) {
        return ScalarKind::Float;
    }
    ScalarKind::String
}

/// Parses one YAML document into a marked tree. An empty document is an empty mapping.
pub fn parse(text: &str) -> Result<Node, YamlProblem> {
    let mut builder = TreeBuilder::default();
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| YamlProblem {
            location: Location {
                line: e.marker().line(),
                column: e.marker().col() + 1,
            },
            message: format!("invalid YAML: {}", e.info()),
            hint: None,
        })?;
        let location = Location {
            line: span.start.line(),
            column: span.start.col() + 1,
        };
        builder.push(event, location)?;
    }
    Ok(builder.root.unwrap_or(Node {
        location: Location { line: 1, column: 1 },
        value: NodeValue::Mapping(Vec::new()),
    }))
}

#[derive(Default)]
struct TreeBuilder {
    stack: Vec<Node>,
    /// Pending key for each open mapping (parallel to `stack` entries that are mappings).
    keys: Vec<Option<(String, Location)>>,
    /// Keys already seen in each open collection, for finding duplicates in constant
    /// time (a definition may have tens of thousands of services).
    seen: Vec<std::collections::HashMap<String, Location>>,
    root: Option<Node>,
    documents: usize,
    /// Anchored nodes by anchor id, with their size in nodes.
    anchors: std::collections::HashMap<usize, (Node, usize)>,
    /// The anchor of each open collection (0: none).
    open_anchors: Vec<usize>,
    /// Nodes produced by aliases so far, against [`MAX_ALIASED_NODES`].
    aliased: usize,
}

/// How much aliases (and the copies anchors keep) may produce in one file, in values
/// (each 64 bytes of text counting as one more): enough for any real definition, far
/// too little for an alias bomb, by count or by length, to exhaust memory.
pub const MAX_ALIASED_NODES: usize = 1_000_000;

/// The cost of `node`'s tree against [`MAX_ALIASED_NODES`].
fn size(node: &Node) -> usize {
    1 + match &node.value {
        NodeValue::Scalar { text, .. } => text.len() / 64,
        NodeValue::Sequence(items) => items.iter().map(size).sum(),
        NodeValue::Mapping(entries) => entries
            .iter()
            .map(|e| size(&e.value) + e.key.len() / 64)
            .sum(),
    }
}

/// Applies the merge keys (`<<: *base`, or `<<: [*a, *b]`) of a mapping: the entries of
/// the merged mappings that the mapping does not give itself (earlier ones first).
fn merge(node: &mut Node) -> Result<(), YamlProblem> {
    let NodeValue::Mapping(entries) = &mut node.value else {
        return Ok(());
    };
    if !entries.iter().any(|e| e.key == "<<") {
        return Ok(());
    }
    let (merges, mut own): (Vec<Entry>, Vec<Entry>) = std::mem::take(entries)
        .into_iter()
        .partition(|e| e.key == "<<");
    for merged in merges {
        let was_sequence = matches!(merged.value.value, NodeValue::Sequence(_));
        let sources = match merged.value.value {
            NodeValue::Mapping(_) => vec![merged.value],
            NodeValue::Sequence(items) => items,
            NodeValue::Scalar { .. } => Vec::new(),
        };
        if sources.is_empty() && !was_sequence {
            return Err(YamlProblem {
                location: merged.key_location,
                message: "a merge key `<<` takes a mapping or a list of mappings".into(),
                hint: Some("e.g. `<<: *defaults` where `&defaults` marks a mapping".into()),
            });
        }
        for source in sources {
            let NodeValue::Mapping(theirs) = source.value else {
                return Err(YamlProblem {
                    location: source.location,
                    message: "a merge key `<<` takes a mapping or a list of mappings".into(),
                    hint: None,
                });
            };
            for entry in theirs {
                if !own.iter().any(|e| e.key == entry.key) {
                    own.push(entry);
                }
            }
        }
    }
    *entries = own;
    Ok(())
}

impl TreeBuilder {
    fn push(&mut self, event: Event<'_>, location: Location) -> Result<(), YamlProblem> {
        match event {
            Event::DocumentStart(_) => {
                self.documents += 1;
                if self.documents > 1 {
                    return Err(YamlProblem {
                        location,
                        message: "a definition file holds one YAML document, found a second".into(),
                        hint: Some("remove the `---` separator and merge the documents".into()),
                    });
                }
            }
            Event::Alias(id) => {
                let Some((anchored, count)) = self.anchors.get(&id) else {
                    return Err(YamlProblem {
                        location,
                        message: "this alias names no anchor defined before it".into(),
                        hint: Some("define `&name` on a value above its first `*name`".into()),
                    });
                };
                let (mut node, count) = (anchored.clone(), *count);
                self.spend(count, location)?;
                node.location = location;
                self.finish(node)?;
            }
            Event::Scalar(text, style, anchor, _) => {
                let node = Node {
                    location,
                    value: NodeValue::Scalar {
                        text: text.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    },
                };
                if anchor > 0 {
                    let count = size(&node);
                    self.spend(count, location)?;
                    self.anchors.insert(anchor, (node.clone(), count));
                }
                self.finish(node)?;
            }
            Event::SequenceStart(anchor, _) => {
                self.stack.push(Node {
                    location,
                    value: NodeValue::Sequence(Vec::new()),
                });
                self.keys.push(None);
                self.seen.push(Default::default());
                self.open_anchors.push(anchor);
            }
            Event::MappingStart(anchor, _) => {
                self.stack.push(Node {
                    location,
                    value: NodeValue::Mapping(Vec::new()),
                });
                self.keys.push(None);
                self.seen.push(Default::default());
                self.open_anchors.push(anchor);
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let Some(mut node) = self.stack.pop() else {
                    return Err(YamlProblem {
                        location,
                        message: "unbalanced YAML collection".into(),
                        hint: None,
                    });
                };
                self.keys.pop();
                self.seen.pop();
                merge(&mut node)?;
                let anchor = self.open_anchors.pop().unwrap_or(0);
                if anchor > 0 {
                    // The copy an anchor keeps counts too (nested anchors copy again).
                    let count = size(&node);
                    self.spend(count, location)?;
                    self.anchors.insert(anchor, (node.clone(), count));
                }
                self.finish(node)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Counts what aliases and anchors copy against [`MAX_ALIASED_NODES`].
    fn spend(&mut self, count: usize, location: Location) -> Result<(), YamlProblem> {
        self.aliased = self.aliased.saturating_add(count);
        if self.aliased > MAX_ALIASED_NODES {
            return Err(YamlProblem {
                location,
                message: format!(
                    "the aliases of this file expand to more than {MAX_ALIASED_NODES} values"
                ),
                hint: Some("an alias of an alias of an alias...: write the values out".into()),
            });
        }
        Ok(())
    }

    /// Attaches a completed node to its parent (or makes it the root).
    fn finish(&mut self, node: Node) -> Result<(), YamlProblem> {
        let Some(parent) = self.stack.last_mut() else {
            self.root = Some(node);
            return Ok(());
        };
        match &mut parent.value {
            NodeValue::Sequence(items) => items.push(node),
            NodeValue::Mapping(entries) => {
                let (Some(pending), Some(seen)) = (self.keys.last_mut(), self.seen.last_mut())
                else {
                    return Err(YamlProblem {
                        location: node.location,
                        message: "unbalanced YAML mapping".into(),
                        hint: None,
                    });
                };
                match pending.take() {
                    None => {
                        let NodeValue::Scalar { text, .. } = node.value else {
                            return Err(YamlProblem {
                                location: node.location,
                                message: "mapping keys must be plain strings".into(),
                                hint: None,
                            });
                        };
                        if let Some(first) = seen.get(&text) {
                            return Err(YamlProblem {
                                location: node.location,
                                message: format!(
                                    "duplicate key `{text}` (first defined at line {})",
                                    first.line
                                ),
                                hint: Some(
                                    "each name may appear once; remove or rename one".into(),
                                ),
                            });
                        }
                        seen.insert(text.clone(), node.location);
                        *pending = Some((text, node.location));
                    }
                    Some((key, key_location)) => entries.push(Entry {
                        key,
                        key_location,
                        value: node,
                    }),
                }
            }
            NodeValue::Scalar { .. } => {
                return Err(YamlProblem {
                    location: node.location,
                    message: "a value inside a scalar".into(),
                    hint: None,
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_locations_of_keys_and_values() {
        let root = parse("a:\n  b: 1\n  c: [x, \"2\"]\n").unwrap();
        let a = root.get("a").unwrap();
        assert_eq!(a.key_location, Location { line: 1, column: 1 });
        let c = a.value.get("c").unwrap();
        assert_eq!(c.key_location, Location { line: 3, column: 3 });
        let NodeValue::Sequence(items) = &c.value.value else {
            panic!()
        };
        assert_eq!(items[1].scalar_kind(), Some(ScalarKind::String));
        assert_eq!(
            a.value.get("b").unwrap().value.scalar_kind(),
            Some(ScalarKind::Integer)
        );
    }

    #[test]
    fn duplicate_keys_are_reported_with_both_places() {
        let err = parse("a: 1\nb: 2\na: 3\n").unwrap_err();
        assert_eq!(err.location.line, 3);
        assert!(
            err.message.contains("first defined at line 1"),
            "{}",
            err.message
        );
    }

    fn json(node: &Node) -> String {
        match &node.value {
            NodeValue::Scalar { text, .. } => text.clone(),
            NodeValue::Sequence(items) => {
                format!("[{}]", items.iter().map(json).collect::<Vec<_>>().join(","))
            }
            NodeValue::Mapping(entries) => format!(
                "{{{}}}",
                entries
                    .iter()
                    .map(|e| format!("{}:{}", e.key, json(&e.value)))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }

    #[test]
    fn anchors_aliases_and_merge_keys_expand() {
        let root = parse(
            "base: &base { a: 1, b: 2 }\nlist: &l [x, y]\none:\n  <<: *base\n  b: 3\n  l: *l\ntwo:\n  <<: [{ c: 4 }, *base]\n  a: 0\n",
        )
        .unwrap();
        assert_eq!(
            json(&root.get("one").unwrap().value),
            "{b:3,l:[x,y],a:1}",
            "own keys win"
        );
        assert_eq!(json(&root.get("two").unwrap().value), "{a:0,c:4,b:2}");
        let aliased = &root.get("one").unwrap().value.get("l").unwrap().value;
        assert_eq!(
            aliased.location.line, 6,
            "an alias is located where it is written"
        );
    }

    #[test]
    fn bad_aliases_and_alias_bombs_are_refused() {
        let err = parse("a: *nothing\n").unwrap_err();
        assert!(err.message.contains("unknown anchor"), "{}", err.message);
        let err = parse("a: &s x\nb:\n  <<: *s\n").unwrap_err();
        assert!(err.message.contains("merge key"), "{}", err.message);
        // Each level repeats the last nine times: 9^8 values.
        let mut bomb = String::from("l0: &l0 [a, a, a, a, a, a, a, a, a]\n");
        for level in 1..8 {
            let previous = format!("*l{}", level - 1);
            let items = [previous.as_str(); 9].join(", ");
            bomb.push_str(&format!("l{level}: &l{level} [{items}]\n"));
        }
        let err = parse(&bomb).unwrap_err();
        assert!(
            err.message.contains("expand to more than"),
            "{}",
            err.message
        );
        // Few values, but long ones: 1 MB of text, ten copies a level, four levels.
        let mut long = format!("l0: &l0 \"{}\"\n", "x".repeat(1 << 20));
        for level in 1..5 {
            let previous = format!("*l{}", level - 1);
            let items = [previous.as_str(); 10].join(", ");
            long.push_str(&format!("l{level}: &l{level} [{items}]\n"));
        }
        let err = parse(&long).unwrap_err();
        assert!(
            err.message.contains("expand to more than"),
            "{}",
            err.message
        );
    }

    #[test]
    fn syntax_errors_carry_a_location() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.location.line >= 1);
        assert!(err.message.starts_with("invalid YAML"));
    }
}
