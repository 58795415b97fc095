//! Awkward arrays in the concatenated axis' mapping (obsm along obs, varm
//! along var), as `anndata.concat` gives them (`ak.concatenate` along the
//! first axis, written with `ak.to_buffers(ak.to_packed(...))`).
//!
//! When every input holds the key with the same form, the result has that
//! form, `length` is the sum, and each buffer is the inputs' buffers one
//! after another: `offsets` shifted by the content before them, an option's
//! `index` by the valid entries before them, everything else as it is. The
//! buffers are copied a block at a time, so memory stays at a block
//! whatever their size. What would need awkward's type merging (forms that
//! differ, an input without the key, node kinds beyond lists, regular
//! arrays, records, options and leaves, unpacked buffers) is refused in one
//! line naming the element.

use serde_json::{Map, Value, json};

use super::in_order::{read_bytes, write_bytes};
use super::index::Join;
use super::matrix::write_values;
use super::values::Values;
use crate::anndata::layout::ArraySpec;
use crate::anndata::sparse::read_i64_range;
use crate::anndata::{DType, Element, Store};
use crate::error::{Error, Result};

/// Elements copied per read.
const BLOCK: u64 = 1 << 20;

/// One node of an awkward form, as far as anncat concatenates it.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    /// A leaf: `{key}-data`, `inner` values per entry.
    Leaf { key: String, inner: u64 },
    /// Variable-length lists: `{key}-offsets` (int64).
    List { key: String, content: Box<Node> },
    /// Fixed-size lists (no buffer).
    Regular { size: u64, content: Box<Node> },
    /// Records (no buffer).
    Record { contents: Vec<Node> },
    /// Missing values: `{key}-index` (int64, -1 where missing).
    Option { key: String, content: Box<Node> },
}

/// Parses `form`, or says which part anncat does not concatenate.
fn parse(form: &Value) -> std::result::Result<Node, String> {
    let class = form["class"].as_str().unwrap_or("");
    let key = || -> std::result::Result<String, String> {
        form["form_key"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("a {class} node without a form_key"))
    };
    let content = || parse(&form["content"]).map(Box::new);
    match class {
        "NumpyArray" => {
            let inner = form["inner_shape"]
                .as_array()
                .map(|dims| dims.iter().map(|d| d.as_u64().unwrap_or(0)).product())
                .unwrap_or(1);
            Ok(Node::Leaf { key: key()?, inner })
        }
        "ListOffsetArray" if form["offsets"] == "i64" => Ok(Node::List {
            key: key()?,
            content: content()?,
        }),
        "RegularArray" => Ok(Node::Regular {
            size: form["size"]
                .as_u64()
                .ok_or("a RegularArray without a size")?,
            content: content()?,
        }),
        "RecordArray" => Ok(Node::Record {
            contents: form["contents"]
                .as_array()
                .ok_or("a RecordArray without contents")?
                .iter()
                .map(parse)
                .collect::<std::result::Result<_, _>>()?,
        }),
        "IndexedOptionArray" if form["index"] == "i64" => Ok(Node::Option {
            key: key()?,
            content: content()?,
        }),
        other => Err(format!("awkward {other} nodes")),
    }
}

/// One input's awkward array.
struct Part<'a> {
    store: &'a Store,
    path: &'a str,
    length: u64,
}

impl Part<'_> {
    fn buffer(&self, key: &str, role: &str) -> String {
        format!("{}/{key}-{role}", self.path)
    }
}

/// Concatenates the awkward arrays `els` (one per input, `None`: the input
/// lacks the key) into `out_path` of `out`.
pub(crate) fn concat_awkward(
    out: &Store,
    out_path: &str,
    els: &[(&Store, Option<&Element>)],
    join: Join,
) -> Result<()> {
    let refuse = |why: String| Error::data(format!("{out_path}: {why}"));
    if els.iter().any(|(_, e)| e.is_none()) {
        return Err(refuse(
            "an awkward array some inputs lack (anndata makes it an option type) is not supported yet"
                .into(),
        ));
    }
    let mut parts = Vec::new();
    let mut forms = Vec::new();
    for (store, e) in els {
        let Some(e) = e else { continue };
        if e.encoding != crate::anndata::Encoding::AwkwardArray {
            return Err(refuse(
                "cannot concatenate an awkward array with other array types (anndata refuses it too)"
                    .into(),
            ));
        }
        let text = e.meta.attrs.get("form").and_then(Value::as_str);
        let form: Value = text
            .and_then(|t| serde_json::from_str(t).ok())
            .ok_or_else(|| store.err(&e.path, "awkward-array form is not JSON text"))?;
        let length = e.meta.attrs.get("length").and_then(Value::as_u64);
        let length =
            length.ok_or_else(|| store.err(&e.path, "awkward-array length is not a count"))?;
        forms.push((text.unwrap_or_default().to_string(), form));
        parts.push(Part {
            store,
            path: &e.path,
            length,
        });
    }
    let (form_text, form) = forms[0].clone();
    if forms.iter().any(|(_, f)| *f != form) {
        return Err(refuse(
            "awkward arrays whose types (forms) differ between inputs are not supported yet".into(),
        ));
    }
    let root = parse(&form).map_err(|what| refuse(format!("{what} are not supported yet")))?;
    let top = match &root {
        Node::Option { content, .. } => content.as_ref(),
        other => other,
    };
    if join == Join::Inner && matches!(top, Node::Leaf { inner: 1, .. }) {
        return Err(refuse(
            "a one-dimensional awkward array under an inner join (anndata fails: axis=1 is too deep)"
                .into(),
        ));
    }
    let total: u64 = parts.iter().map(|p| p.length).sum();
    let mut attrs = Map::new();
    attrs.insert("length".into(), json!(total));
    attrs.insert("form".into(), Value::String(form_text));
    attrs.insert("encoding-type".into(), json!("awkward-array"));
    attrs.insert("encoding-version".into(), json!("0.1.0"));
    out.write_group(out_path, &attrs)?;
    let lengths: Vec<u64> = parts.iter().map(|p| p.length).collect();
    copy_node(out, out_path, &root, &parts, &lengths)
}

/// A 1-d output buffer of `len` entries of `dtype`.
fn create_buffer(out: &Store, path: &str, dtype: &DType, len: u64) -> Result<()> {
    let spec = ArraySpec::new(vec![len], dtype.clone(), vec![len.clamp(1, BLOCK)]);
    let mut attrs = Map::new();
    attrs.insert("encoding-type".into(), json!("array"));
    attrs.insert("encoding-version".into(), json!("0.2.0"));
    out.write_array(path, spec, &attrs)
}

/// Writes `node`'s buffers, and its children's, for inputs holding
/// `lengths[i]` entries at this node.
fn copy_node(
    out: &Store,
    out_path: &str,
    node: &Node,
    parts: &[Part<'_>],
    lengths: &[u64],
) -> Result<()> {
    match node {
        Node::Leaf { key, inner } => {
            let name = format!("{key}-data");
            let dtype = parts[0].store.node(&parts[0].buffer(key, "data"))?;
            let dtype = match dtype.map(|m| m.kind) {
                Some(crate::anndata::store::NodeKind::Array(a)) => a.dtype,
                _ => {
                    return Err(parts[0]
                        .store
                        .err(&parts[0].buffer(key, "data"), "missing buffer"));
                }
            };
            let counts: Vec<u64> = lengths.iter().map(|n| n * inner).collect();
            let dest = format!("{out_path}/{name}");
            create_buffer(out, &dest, &dtype, counts.iter().sum())?;
            let mut at = 0;
            for (p, &n) in parts.iter().zip(&counts) {
                let src = p.buffer(key, "data");
                let mut start = 0;
                while start < n {
                    let len = (n - start).min(BLOCK);
                    write_bytes(
                        out,
                        &dest,
                        at + start,
                        read_bytes(p.store, &src, start, len)?,
                        &dtype,
                    )?;
                    start += len;
                }
                at += n;
            }
            Ok(())
        }
        Node::Regular { size, content } => {
            let inner: Vec<u64> = lengths.iter().map(|n| n * size).collect();
            copy_node(out, out_path, content, parts, &inner)
        }
        Node::Record { contents } => contents
            .iter()
            .try_for_each(|c| copy_node(out, out_path, c, parts, lengths)),
        Node::List { key, content } => {
            let dest = format!("{out_path}/{key}-offsets");
            create_buffer(out, &dest, &DType::Int64, lengths.iter().sum::<u64>() + 1)?;
            write_values(out, &dest, vec![0], vec![1], &Values::I64(vec![0]))?;
            let (mut at, mut shift) = (1u64, 0i64);
            let mut inner = Vec::with_capacity(parts.len());
            for (p, &n) in parts.iter().zip(lengths) {
                let src = p.buffer(key, "offsets");
                let first = read_i64_range(p.store, &src, &DType::Int64, 0, 1)?;
                if first.first().copied().unwrap_or(0) != 0 {
                    return Err(p.store.err(
                        &src,
                        "awkward offsets that do not start at 0 (not packed) are not supported",
                    ));
                }
                let mut last = 0;
                at = copy_i64_blocks(p, &src, 1..n + 1, out, &dest, at, |block| {
                    last = *block.last().unwrap_or(&last);
                    block.iter_mut().for_each(|o| *o += shift);
                    Ok(())
                })?;
                inner.push(last as u64);
                shift += last;
            }
            copy_node(out, out_path, content, parts, &inner)
        }
        Node::Option { key, content } => {
            let dest = format!("{out_path}/{key}-index");
            create_buffer(out, &dest, &DType::Int64, lengths.iter().sum())?;
            let (mut at, mut shift) = (0u64, 0i64);
            let mut inner = Vec::with_capacity(parts.len());
            for (p, &n) in parts.iter().zip(lengths) {
                let src = p.buffer(key, "index");
                let mut valid = 0i64;
                at = copy_i64_blocks(p, &src, 0..n, out, &dest, at, |block| {
                    for v in block.iter_mut().filter(|v| **v >= 0) {
                        if *v != valid {
                            return Err(p.store.err(
                                &src,
                                "an awkward option index that is not packed is not supported",
                            ));
                        }
                        valid += 1;
                        *v += shift;
                    }
                    Ok(())
                })?;
                inner.push(valid as u64);
                shift += valid;
            }
            copy_node(out, out_path, content, parts, &inner)
        }
    }
}

/// Copies entries `range` of the int64 buffer `src` of `p` to `dest` of
/// `out` from entry `at`, a block at a time, letting `edit` change each
/// block first (shift offsets, check an index); where the copy ended.
fn copy_i64_blocks(
    p: &Part<'_>,
    src: &str,
    range: std::ops::Range<u64>,
    out: &Store,
    dest: &str,
    mut at: u64,
    mut edit: impl FnMut(&mut [i64]) -> Result<()>,
) -> Result<u64> {
    let mut start = range.start;
    while start < range.end {
        let len = (range.end - start).min(BLOCK);
        let mut block = read_i64_range(p.store, src, &DType::Int64, start, len)?;
        edit(&mut block)?;
        write_values(out, dest, vec![at], vec![len], &Values::I64(block))?;
        at += len;
        start += len;
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_parse_into_the_nodes_anncat_concatenates() {
        let form: Value = serde_json::from_str(
            r#"{"class": "RecordArray", "fields": ["a", "b"], "contents": [
                {"class": "NumpyArray", "primitive": "int64", "inner_shape": [], "parameters": {}, "form_key": "node1"},
                {"class": "ListOffsetArray", "offsets": "i64", "content":
                    {"class": "NumpyArray", "primitive": "float64", "inner_shape": [3], "parameters": {}, "form_key": "node3"},
                 "parameters": {}, "form_key": "node2"}],
               "parameters": {}, "form_key": "node0"}"#,
        )
        .expect("json");
        let node = parse(&form).expect("parse");
        let Node::Record { contents } = node else {
            panic!("not a record: {node:?}");
        };
        assert_eq!(
            contents[0],
            Node::Leaf {
                key: "node1".into(),
                inner: 1
            }
        );
        assert!(
            matches!(&contents[1], Node::List { key, content } if key == "node2"
            && **content == Node::Leaf { key: "node3".into(), inner: 3 })
        );
        let union: Value = serde_json::from_str(r#"{"class": "UnionArray"}"#).expect("json");
        assert!(parse(&union).expect_err("union").contains("UnionArray"));
    }
}
