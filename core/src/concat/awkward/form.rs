//! Awkward forms: each input's form parsed into [`Node`]s (which name its
//! buffers), and the type `ak.concatenate` gives them, as a [`Merged`] tree
//! with the form JSON and buffer keys of the output.
//!
//! The merge follows awkward's rules for the node kinds anncat writes:
//! options absorb non-options (and the inputs that lack the key, which
//! anndata fills with `None`), numbers promote as numpy does, regular
//! arrays of different sizes (or with variable lists) become variable
//! lists, and records merge field by field when they have the same fields.
//! What awkward can only merge into a union type is refused.

use serde_json::{Map, Value, json};

use crate::anndata::DType;
use crate::concat::values::promote;

/// One node of an input's awkward form.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    /// A leaf: `{key}-data`, values of `dtype`, `inner_shape` per entry.
    Leaf {
        key: String,
        dtype: DType,
        inner_shape: Vec<u64>,
        params: Value,
    },
    /// Variable-length lists: `{key}-offsets` (int64).
    List {
        key: String,
        content: Box<Node>,
        params: Value,
    },
    /// Fixed-size lists (no buffer).
    Regular {
        size: u64,
        content: Box<Node>,
        params: Value,
    },
    /// Records (no buffer).
    Record {
        fields: Vec<String>,
        contents: Vec<Node>,
        params: Value,
    },
    /// Missing values: `{key}-index` (int64, -1 where missing).
    Option {
        key: String,
        content: Box<Node>,
        params: Value,
    },
    /// No values at all (`?unknown`'s content).
    Empty,
}

/// The parameters of a form node (`{}` when absent).
fn params_of(form: &Value) -> Value {
    match form.get("parameters") {
        Some(Value::Object(m)) => Value::Object(m.clone()),
        _ => Value::Object(Map::new()),
    }
}

/// Parses `form`, or says which part anncat does not concatenate.
pub(super) fn parse(form: &Value) -> Result<Node, String> {
    let class = form["class"].as_str().unwrap_or("");
    let key = || -> Result<String, String> {
        form["form_key"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("a {class} node without a form_key"))
    };
    let content = || parse(&form["content"]).map(Box::new);
    let params = params_of(form);
    match class {
        "NumpyArray" => {
            let primitive = form["primitive"].as_str().unwrap_or("");
            let dtype = match DType::from_v3(&json!(primitive)) {
                DType::Other(_) | DType::String | DType::Structured(_) => {
                    return Err(format!("awkward {primitive} leaves"));
                }
                d => d,
            };
            let inner_shape = form["inner_shape"]
                .as_array()
                .map(|dims| dims.iter().map(|d| d.as_u64().unwrap_or(0)).collect())
                .unwrap_or_default();
            Ok(Node::Leaf {
                key: key()?,
                dtype,
                inner_shape,
                params,
            })
        }
        "ListOffsetArray" if form["offsets"] == "i64" => Ok(Node::List {
            key: key()?,
            content: content()?,
            params,
        }),
        "RegularArray" => Ok(Node::Regular {
            size: form["size"]
                .as_u64()
                .ok_or("a RegularArray without a size")?,
            content: content()?,
            params,
        }),
        "RecordArray" => {
            let contents: Vec<Node> = form["contents"]
                .as_array()
                .ok_or("a RecordArray without contents")?
                .iter()
                .map(parse)
                .collect::<Result<_, _>>()?;
            let fields: Vec<String> = match form["fields"].as_array() {
                Some(names) => names
                    .iter()
                    .map(|n| n.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or("a RecordArray with a field name that is not a string")?,
                // A tuple: fields "0", "1", …
                None => (0..contents.len()).map(|i| i.to_string()).collect(),
            };
            if fields.len() != contents.len() {
                return Err("a RecordArray whose fields and contents differ in number".into());
            }
            Ok(Node::Record {
                fields,
                contents,
                params,
            })
        }
        "IndexedOptionArray" if form["index"] == "i64" => Ok(Node::Option {
            key: key()?,
            content: content()?,
            params,
        }),
        "EmptyArray" => Ok(Node::Empty),
        other => Err(format!("awkward {other} nodes")),
    }
}

impl Node {
    /// The fields of the first record level (through options and lists),
    /// as `ak.Array.fields` gives them; empty when there is no record.
    pub(super) fn fields(&self) -> Vec<String> {
        match self {
            Node::Record { fields, .. } => fields.clone(),
            Node::List { content, .. }
            | Node::Regular { content, .. }
            | Node::Option { content, .. } => content.fields(),
            Node::Leaf { .. } | Node::Empty => Vec::new(),
        }
    }

    /// This node with its first record level cut to `keep`, in that order
    /// (anndata's inner join selects the common fields: `el[common]`).
    pub(super) fn project(&self, keep: &[String]) -> Node {
        match self {
            Node::Record {
                fields,
                contents,
                params,
            } => {
                let (fields, contents) = keep
                    .iter()
                    .filter_map(|k| {
                        let at = fields.iter().position(|f| f == k)?;
                        Some((k.clone(), contents[at].clone()))
                    })
                    .unzip();
                Node::Record {
                    fields,
                    contents,
                    params: params.clone(),
                }
            }
            Node::List {
                key,
                content,
                params,
            } => Node::List {
                key: key.clone(),
                content: Box::new(content.project(keep)),
                params: params.clone(),
            },
            Node::Regular {
                size,
                content,
                params,
            } => Node::Regular {
                size: *size,
                content: Box::new(content.project(keep)),
                params: params.clone(),
            },
            Node::Option {
                key,
                content,
                params,
            } => Node::Option {
                key: key.clone(),
                content: Box::new(content.project(keep)),
                params: params.clone(),
            },
            Node::Leaf { .. } | Node::Empty => self.clone(),
        }
    }

    /// The child of a record node named `field`.
    pub(super) fn field(&self, field: &str) -> Option<&Node> {
        match self {
            Node::Record {
                fields, contents, ..
            } => fields.iter().position(|f| f == field).map(|i| &contents[i]),
            _ => None,
        }
    }
}

/// A node of the output's type, with the key its buffers are written under.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Merged {
    /// Values of `dtype`, `inner_shape` per entry.
    Leaf {
        key: String,
        dtype: DType,
        inner_shape: Vec<u64>,
        params: Value,
    },
    /// Variable-length lists.
    List {
        key: String,
        content: Box<Merged>,
        params: Value,
    },
    /// Fixed-size lists.
    Regular {
        key: String,
        size: u64,
        content: Box<Merged>,
        params: Value,
    },
    /// Records.
    Record {
        key: String,
        fields: Vec<String>,
        contents: Vec<Merged>,
        params: Value,
    },
    /// Missing values.
    Option {
        key: String,
        content: Box<Merged>,
        params: Value,
    },
    /// No values (every input lacks the key, or holds only `None`).
    Empty,
}

impl Merged {
    /// The type of one input's `node` (keys are assigned later).
    pub(super) fn of(node: &Node) -> Merged {
        match node {
            Node::Leaf {
                dtype,
                inner_shape,
                params,
                ..
            } => Merged::Leaf {
                key: String::new(),
                dtype: dtype.clone(),
                inner_shape: inner_shape.clone(),
                params: params.clone(),
            },
            Node::List {
                content, params, ..
            } => Merged::List {
                key: String::new(),
                content: Box::new(Merged::of(content)),
                params: params.clone(),
            },
            Node::Regular {
                size,
                content,
                params,
            } => Merged::Regular {
                key: String::new(),
                size: *size,
                content: Box::new(Merged::of(content)),
                params: params.clone(),
            },
            Node::Record {
                fields,
                contents,
                params,
            } => Merged::Record {
                key: String::new(),
                fields: fields.clone(),
                contents: contents.iter().map(Merged::of).collect(),
                params: params.clone(),
            },
            Node::Option {
                content, params, ..
            } => Merged::Option {
                key: String::new(),
                content: Box::new(Merged::of(content)),
                params: params.clone(),
            },
            Node::Empty => Merged::Empty,
        }
    }

    /// The type of `None`s: what anndata fills an input lacking the key with.
    pub(super) fn missing() -> Merged {
        Merged::Option {
            key: String::new(),
            content: Box::new(Merged::Empty),
            params: json!({}),
        }
    }

    fn params(&self) -> Option<&Value> {
        match self {
            Merged::Leaf { params, .. }
            | Merged::List { params, .. }
            | Merged::Regular { params, .. }
            | Merged::Record { params, .. }
            | Merged::Option { params, .. } => Some(params),
            Merged::Empty => None,
        }
    }

    /// The type `ak.concatenate` gives values of types `self` and `other`.
    pub(super) fn unify(self, other: Merged) -> Result<Merged, String> {
        use Merged::*;
        let union = |a: &Merged, b: &Merged| {
            Err(format!(
                "awkward arrays of types {} and {} (awkward merges them into a union type, which \
                 anncat does not write)",
                a.describe(),
                b.describe()
            ))
        };
        if let (Some(a), Some(b)) = (self.params(), other.params())
            && a != b
            && !matches!(self, Option { .. })
            && !matches!(other, Option { .. })
        {
            return union(&self, &other);
        }
        match (self, other) {
            (Empty, x) | (x, Empty) => Ok(x),
            (
                Option {
                    content: a, params, ..
                },
                Option { content: b, .. },
            ) => Ok(Option {
                key: String::new(),
                content: Box::new(a.unify(*b)?),
                params,
            }),
            (
                Option {
                    content: a, params, ..
                },
                b,
            )
            | (
                b,
                Option {
                    content: a, params, ..
                },
            ) => Ok(Option {
                key: String::new(),
                content: Box::new(a.unify(b)?),
                params,
            }),
            (
                Leaf {
                    dtype: da,
                    inner_shape: sa,
                    params,
                    ..
                },
                Leaf {
                    dtype: db,
                    inner_shape: sb,
                    ..
                },
            ) if sa == sb => match promote(&da, &db) {
                Some(dtype) => Ok(Leaf {
                    key: String::new(),
                    dtype,
                    inner_shape: sa,
                    params,
                }),
                None => Err(format!(
                    "awkward leaves of dtypes {} and {} are not merged by anncat",
                    da.display_name(),
                    db.display_name()
                )),
            },
            (
                Regular {
                    size: na,
                    content: a,
                    params,
                    ..
                },
                Regular {
                    size: nb,
                    content: b,
                    ..
                },
            ) if na == nb => Ok(Regular {
                key: String::new(),
                size: na,
                content: Box::new(a.unify(*b)?),
                params,
            }),
            (
                List {
                    content: a, params, ..
                }
                | Regular {
                    content: a, params, ..
                },
                List { content: b, .. } | Regular { content: b, .. },
            ) => Ok(List {
                key: String::new(),
                content: Box::new(a.unify(*b)?),
                params,
            }),
            (
                Record {
                    fields: fa,
                    contents: ca,
                    params,
                    ..
                },
                Record {
                    fields: fb,
                    contents: cb,
                    ..
                },
            ) if fa.len() == fb.len() && fa.iter().all(|f| fb.contains(f)) => {
                let mut contents = Vec::with_capacity(ca.len());
                for (name, a) in fa.iter().zip(ca) {
                    let at = fb.iter().position(|f| f == name).unwrap_or(0);
                    contents.push(a.unify(cb[at].clone())?);
                }
                Ok(Record {
                    key: String::new(),
                    fields: fa,
                    contents,
                    params,
                })
            }
            (a, b) => union(&a, &b),
        }
    }

    /// A short spelling of the type, for messages.
    fn describe(&self) -> String {
        match self {
            Merged::Leaf {
                dtype, inner_shape, ..
            } => {
                let dims: String = inner_shape.iter().map(|d| format!("{d} * ")).collect();
                format!("{dims}{}", dtype.display_name())
            }
            Merged::List { content, .. } => format!("var * {}", content.describe()),
            Merged::Regular { size, content, .. } => format!("{size} * {}", content.describe()),
            Merged::Record { fields, .. } => format!("{{{}}}", fields.join(", ")),
            Merged::Option { content, .. } => format!("?{}", content.describe()),
            Merged::Empty => "unknown".into(),
        }
    }

    /// Numbers the nodes `node0`, `node1`, … in the order `ak.to_buffers`
    /// does (a node, then its contents).
    pub(super) fn assign_keys(&mut self, next: &mut usize) {
        let mut take = |key: &mut String| {
            *key = format!("node{next}");
            *next += 1;
        };
        match self {
            Merged::Leaf { key, .. } => take(key),
            Merged::List { key, content, .. }
            | Merged::Regular { key, content, .. }
            | Merged::Option { key, content, .. } => {
                take(key);
                content.assign_keys(next);
            }
            Merged::Record { key, contents, .. } => {
                take(key);
                for c in contents {
                    c.assign_keys(next);
                }
            }
            Merged::Empty => {}
        }
    }

    /// The form JSON awkward reads the output with.
    pub(super) fn form(&self) -> Value {
        match self {
            Merged::Leaf {
                key,
                dtype,
                inner_shape,
                params,
            } => json!({
                "class": "NumpyArray",
                "primitive": dtype.v3_name().unwrap_or("float64"),
                "inner_shape": inner_shape,
                "parameters": params,
                "form_key": key,
            }),
            Merged::List {
                key,
                content,
                params,
            } => json!({
                "class": "ListOffsetArray",
                "offsets": "i64",
                "content": content.form(),
                "parameters": params,
                "form_key": key,
            }),
            Merged::Regular {
                key,
                size,
                content,
                params,
            } => json!({
                "class": "RegularArray",
                "size": size,
                "content": content.form(),
                "parameters": params,
                "form_key": key,
            }),
            Merged::Record {
                key,
                fields,
                contents,
                params,
            } => json!({
                "class": "RecordArray",
                "fields": fields,
                "contents": contents.iter().map(Merged::form).collect::<Vec<_>>(),
                "parameters": params,
                "form_key": key,
            }),
            Merged::Option {
                key,
                content,
                params,
            } => json!({
                "class": "IndexedOptionArray",
                "index": "i64",
                "content": content.form(),
                "parameters": params,
                "form_key": key,
            }),
            Merged::Empty => json!({"class": "EmptyArray", "parameters": {}, "form_key": null}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(primitive: &str, key: &str) -> Value {
        json!({"class": "NumpyArray", "primitive": primitive, "inner_shape": [], "parameters": {}, "form_key": key})
    }

    fn list(content: Value, key: &str) -> Value {
        json!({"class": "ListOffsetArray", "offsets": "i64", "content": content, "parameters": {}, "form_key": key})
    }

    #[test]
    fn forms_parse_into_the_nodes_anncat_concatenates() {
        let form = json!({"class": "RecordArray", "fields": ["a", "b"], "contents": [
            leaf("int64", "node1"),
            list(json!({"class": "NumpyArray", "primitive": "float64", "inner_shape": [3],
                        "parameters": {}, "form_key": "node3"}), "node2"),
        ], "parameters": {}, "form_key": "node0"});
        let node = parse(&form).expect("parse");
        assert_eq!(node.fields(), ["a", "b"]);
        assert!(matches!(
            node.field("b"),
            Some(Node::List { key, content, .. }) if key == "node2"
                && matches!(&**content, Node::Leaf { inner_shape, .. } if *inner_shape == [3])
        ));
        let union = json!({"class": "UnionArray"});
        assert!(parse(&union).expect_err("union").contains("UnionArray"));
    }

    #[test]
    fn types_merge_as_awkward_concatenate_merges_them() {
        let ints = Merged::of(&parse(&list(leaf("int64", "node1"), "node0")).expect("ints"));
        let floats = Merged::of(&parse(&list(leaf("float64", "x"), "y")).expect("floats"));
        // var * int64 + var * float64 = var * float64; with None: an option.
        let mut merged = ints
            .clone()
            .unify(floats)
            .and_then(|m| m.unify(Merged::missing()))
            .expect("merge");
        merged.assign_keys(&mut 0);
        assert_eq!(
            merged.form(),
            json!({"class": "IndexedOptionArray", "index": "i64", "parameters": {}, "form_key": "node0",
                   "content": list(leaf("float64", "node2"), "node1")})
        );
        // Regular arrays of two sizes become variable lists.
        let regular = |n: u64| {
            Merged::of(
                &parse(
                    &json!({"class": "RegularArray", "size": n, "content": leaf("int32", "a"),
                               "parameters": {}, "form_key": "b"}),
                )
                .expect("regular"),
            )
        };
        assert!(matches!(
            regular(2).unify(regular(3)),
            Ok(Merged::List { .. })
        ));
        assert!(matches!(
            regular(2).unify(regular(2)),
            Ok(Merged::Regular { size: 2, .. })
        ));
        // A leaf and a list: a union, refused.
        let flat = Merged::of(&parse(&leaf("int64", "k")).expect("leaf"));
        assert!(flat.unify(ints).expect_err("union").contains("union"));
    }

    #[test]
    fn projection_keeps_the_common_fields_in_the_given_order() {
        let form = json!({"class": "RecordArray", "fields": ["y", "x", "z"], "contents": [
            leaf("int64", "node1"), leaf("int64", "node2"), leaf("int64", "node3"),
        ], "parameters": {}, "form_key": "node0"});
        let node = parse(&form)
            .expect("parse")
            .project(&["x".into(), "y".into()]);
        assert_eq!(node.fields(), ["x", "y"]);
        assert!(matches!(node.field("x"), Some(Node::Leaf { key, .. }) if key == "node2"));
    }
}
