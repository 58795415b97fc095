//! Awkward arrays in the concatenated axis' mapping (obsm along obs, varm
//! along var), as `anndata.concat` gives them (`ak.concatenate` along the
//! first axis, written with `ak.to_buffers(ak.to_packed(...))`).
//!
//! The output's type is the one `ak.concatenate` gives the inputs' types
//! (see [`form`]): an input lacking the key (outer join) adds `None`s and so
//! an option type; under an inner join, records keep the fields every input
//! has, as anndata selects them. Each output buffer is the inputs' buffers
//! one after another: `offsets` shifted by the content before them, an
//! option's `index` by the valid entries before them, numbers cast to the
//! merged dtype; where an input's node differs from the output's (a
//! non-option under an option, a regular array under a variable list) the
//! buffer is made from its length. The buffers are copied a block at a
//! time, so memory stays at a block whatever their size. What awkward can
//! only merge into a union type, node kinds beyond lists, regular arrays,
//! records, options and leaves, and unpacked buffers are refused in one
//! line naming the element.

use serde_json::{Map, Value, json};

use super::in_order::{read_bytes, write_bytes};
use super::index::Join;
use super::matrix::write_values;
use super::values::Values;
use crate::anndata::OutputStore;
use crate::anndata::layout::ArraySpec;
use crate::anndata::sparse::read_i64_range;
use crate::anndata::{DType, Element, Store};
use crate::error::{Error, Result};

mod form;
mod value;

pub(crate) use value::AwkwardValue;

use form::{Merged, Node, parse};

/// Elements copied per read.
const BLOCK: u64 = 1 << 20;

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
/// lacks the key) into `out_path` of `out`; `lengths[i]` is input `i`'s
/// length along the axis (what a lacking input adds in `None`s).
pub(crate) fn concat_awkward(
    out: &OutputStore,
    out_path: &str,
    els: &[(&Store, Option<&Element>)],
    lengths: &[u64],
    join: Join,
) -> Result<()> {
    let refuse = |why: String| Error::data(format!("{out_path}: {why}"));
    let mut parts = Vec::with_capacity(els.len());
    let mut nodes = Vec::with_capacity(els.len());
    for ((store, e), &missing_len) in els.iter().zip(lengths) {
        let Some(e) = e else {
            parts.push(Part {
                store,
                path: "",
                length: missing_len,
            });
            nodes.push(None);
            continue;
        };
        if e.encoding != crate::anndata::Encoding::AwkwardArray {
            return Err(refuse(
                "cannot concatenate an awkward array with other array types (anndata refuses it too)"
                    .into(),
            ));
        }
        let (node, length) = form_and_length(store, e)?;
        parts.push(Part {
            store,
            path: &e.path,
            length,
        });
        nodes.push(Some(node));
    }
    if join == Join::Inner {
        // anndata selects the fields every input has (`el[common]`, in the
        // first input's order).
        let mut present = nodes.iter().flatten();
        if let Some(first) = present.next() {
            let mut common = first.fields();
            for n in present {
                let fields = n.fields();
                common.retain(|f| fields.contains(f));
            }
            for n in nodes.iter_mut().flatten() {
                if n.fields() != common {
                    *n = n.project(&common);
                }
            }
        }
    }
    let mut merged = Merged::Empty;
    for n in &nodes {
        let ty = n.as_ref().map_or_else(Merged::missing, Merged::of);
        merged = merged.unify(ty).map_err(refuse)?;
    }
    let top = match &merged {
        Merged::Option { content, .. } => content.as_ref(),
        other => other,
    };
    if join == Join::Inner
        && matches!(top, Merged::Leaf { inner_shape, .. } if inner_shape.is_empty())
    {
        return Err(refuse(
            "a one-dimensional awkward array under an inner join (anndata fails: axis=1 is too deep)"
                .into(),
        ));
    }
    if matches!(merged, Merged::Empty) {
        return Err(refuse(
            "an awkward array with no type (every input lacks it)".into(),
        ));
    }
    merged.assign_keys(&mut 0);
    let total: u64 = parts.iter().map(|p| p.length).sum();
    let mut attrs = Map::new();
    attrs.insert("length".into(), json!(total));
    attrs.insert("form".into(), Value::String(merged.form().to_string()));
    attrs.insert("encoding-type".into(), json!("awkward-array"));
    attrs.insert("encoding-version".into(), json!("0.1.0"));
    out.write_group(out_path, &attrs)?;
    let at: Vec<At<'_>> = parts
        .iter()
        .zip(&nodes)
        .map(|(part, node)| At {
            part,
            node: node.as_ref(),
            len: part.length,
        })
        .collect();
    Copy { out, out_path }.node(&merged, &at)
}

/// The parsed form and the length of the awkward array `e` of `store`.
fn form_and_length(store: &Store, e: &Element) -> Result<(Node, u64)> {
    let form: Value = e
        .meta
        .attrs
        .get("form")
        .and_then(Value::as_str)
        .and_then(|t| serde_json::from_str(t).ok())
        .ok_or_else(|| store.err(&e.path, "awkward-array form is not JSON text"))?;
    let length = e
        .meta
        .attrs
        .get("length")
        .and_then(Value::as_u64)
        .ok_or_else(|| store.err(&e.path, "awkward-array length is not a count"))?;
    let node =
        parse(&form).map_err(|what| store.err(&e.path, format!("{what} are not supported yet")))?;
    Ok((node, length))
}

/// One input at one node of the output: its node there (`None`: it has
/// only `None`s above, or lacks the key) and its entry count there.
#[derive(Clone, Copy)]
struct At<'a> {
    part: &'a Part<'a>,
    node: Option<&'a Node>,
    len: u64,
}

impl<'a> At<'a> {
    fn below(self, node: Option<&'a Node>, len: u64) -> At<'a> {
        At {
            part: self.part,
            node,
            len,
        }
    }

    /// Fails unless this input has no entries here (it contributes none).
    fn nothing(self, what: &str) -> Result<At<'a>> {
        if self.len == 0 {
            Ok(self.below(None, 0))
        } else {
            Err(Error::data(format!(
                "{}: awkward node without the {what} the merged type needs",
                self.part.path
            )))
        }
    }
}

/// Writes the output's buffers.
struct Copy<'o> {
    out: &'o OutputStore,
    out_path: &'o str,
}

impl Copy<'_> {
    /// Writes `node`'s buffers, and its children's, from the inputs `at`.
    fn node(&self, node: &Merged, at: &[At<'_>]) -> Result<()> {
        match node {
            Merged::Empty => Ok(()),
            Merged::Leaf {
                key,
                dtype,
                inner_shape,
                ..
            } => self.leaf(key, dtype, inner_shape.iter().product(), at),
            Merged::Regular { size, content, .. } => {
                let inner = at
                    .iter()
                    .map(|a| match a.node {
                        Some(Node::Regular { content, .. }) => {
                            Ok(a.below(Some(content), a.len * size))
                        }
                        _ => a.nothing("fixed-size lists"),
                    })
                    .collect::<Result<Vec<_>>>()?;
                self.node(content, &inner)
            }
            Merged::Record {
                fields, contents, ..
            } => {
                for (name, content) in fields.iter().zip(contents) {
                    let inner = at
                        .iter()
                        .map(|a| match a.node.and_then(|n| n.field(name)) {
                            Some(child) => Ok(a.below(Some(child), a.len)),
                            None => a.nothing("record field"),
                        })
                        .collect::<Result<Vec<_>>>()?;
                    self.node(content, &inner)?;
                }
                Ok(())
            }
            Merged::List { key, content, .. } => {
                let inner = self.offsets(key, at)?;
                self.node(content, &inner)
            }
            Merged::Option { key, content, .. } => {
                let inner = self.index(key, at)?;
                self.node(content, &inner)
            }
        }
    }

    /// A leaf's values, cast to `dtype`.
    fn leaf(&self, key: &str, dtype: &DType, inner: u64, at: &[At<'_>]) -> Result<()> {
        let dest = format!("{}/{key}-data", self.out_path);
        let counts: Vec<u64> = at.iter().map(|a| a.len * inner).collect();
        create_buffer(self.out, &dest, dtype, counts.iter().sum())?;
        let mut to = 0;
        for (a, &n) in at.iter().zip(&counts) {
            if n == 0 {
                continue;
            }
            let Some(Node::Leaf {
                key: src_key,
                dtype: src_dtype,
                ..
            }) = a.node
            else {
                a.nothing("values")?;
                continue;
            };
            let src = a.part.buffer(src_key, "data");
            let mut start = 0;
            while start < n {
                let len = (n - start).min(BLOCK);
                let mut bytes = read_bytes(a.part.store, &src, start, len)?;
                if src_dtype != dtype {
                    bytes = Values::from_le_bytes(src_dtype, &bytes)?
                        .into_cast(dtype)?
                        .to_le_bytes();
                }
                write_bytes(self.out, &dest, to + start, bytes, dtype)?;
                start += len;
            }
            to += n;
        }
        Ok(())
    }

    /// A variable list's offsets: copied and shifted from a list, made from
    /// the size of a regular array. The inputs' entry counts below.
    fn offsets<'a>(&self, key: &str, at: &[At<'a>]) -> Result<Vec<At<'a>>> {
        let dest = format!("{}/{key}-offsets", self.out_path);
        let total: u64 = at.iter().map(|a| a.len).sum();
        create_buffer(self.out, &dest, &DType::Int64, total + 1)?;
        write_values(self.out, &dest, vec![0], vec![1], &Values::I64(vec![0]))?;
        let (mut to, mut shift) = (1u64, 0i64);
        let mut inner = Vec::with_capacity(at.len());
        for a in at {
            match a.node {
                Some(Node::List { key, content, .. }) => {
                    let src = a.part.buffer(key, "offsets");
                    let first = read_i64_range(a.part.store, &src, &DType::Int64, 0, 1)?;
                    if first.first().copied().unwrap_or(0) != 0 {
                        return Err(a.part.store.err(
                            &src,
                            "awkward offsets that do not start at 0 (not packed) are not supported",
                        ));
                    }
                    let mut last = 0;
                    to = copy_i64_blocks(
                        a.part,
                        &src,
                        1..a.len + 1,
                        self.out,
                        &dest,
                        to,
                        |block| {
                            last = *block.last().unwrap_or(&last);
                            block.iter_mut().for_each(|o| *o += shift);
                            Ok(())
                        },
                    )?;
                    inner.push(a.below(Some(content), last as u64));
                    shift += last;
                }
                Some(Node::Regular { size, content, .. }) => {
                    let size = *size as i64;
                    to = self.made_i64(&dest, to, a.len, |k| shift + (k as i64 + 1) * size)?;
                    let len = a.len * size as u64;
                    inner.push(a.below(Some(content), len));
                    shift += len as i64;
                }
                _ => inner.push(a.nothing("lists")?),
            }
        }
        Ok(inner)
    }

    /// An option's index: copied and shifted from an option; `0..n`
    /// (shifted) for a node without missing values; -1 for an input that
    /// lacks the key. The inputs' valid entry counts below.
    fn index<'a>(&self, key: &str, at: &[At<'a>]) -> Result<Vec<At<'a>>> {
        let dest = format!("{}/{key}-index", self.out_path);
        create_buffer(
            self.out,
            &dest,
            &DType::Int64,
            at.iter().map(|a| a.len).sum(),
        )?;
        let (mut to, mut shift) = (0u64, 0i64);
        let mut inner = Vec::with_capacity(at.len());
        for a in at {
            match a.node {
                Some(Node::Option { key, content, .. }) => {
                    let src = a.part.buffer(key, "index");
                    let mut valid = 0i64;
                    to = copy_i64_blocks(a.part, &src, 0..a.len, self.out, &dest, to, |block| {
                        for v in block.iter_mut().filter(|v| **v >= 0) {
                            if *v != valid {
                                return Err(a.part.store.err(
                                    &src,
                                    "an awkward option index that is not packed is not supported",
                                ));
                            }
                            valid += 1;
                            *v += shift;
                        }
                        Ok(())
                    })?;
                    inner.push(a.below(Some(content), valid as u64));
                    shift += valid;
                }
                Some(node) => {
                    to = self.made_i64(&dest, to, a.len, |k| shift + k as i64)?;
                    inner.push(a.below(Some(node), a.len));
                    shift += a.len as i64;
                }
                None => {
                    to = self.made_i64(&dest, to, a.len, |_| -1)?;
                    inner.push(a.below(None, 0));
                }
            }
        }
        Ok(inner)
    }

    /// Writes `value(k)` for `k` in `0..n` to the int64 buffer `dest` from
    /// entry `to`, a block at a time; where the writing ended.
    fn made_i64(&self, dest: &str, mut to: u64, n: u64, value: impl Fn(u64) -> i64) -> Result<u64> {
        let mut k = 0;
        while k < n {
            let len = (n - k).min(BLOCK);
            let block: Vec<i64> = (k..k + len).map(&value).collect();
            write_values(self.out, dest, vec![to], vec![len], &Values::I64(block))?;
            to += len;
            k += len;
        }
        Ok(to)
    }
}

/// A 1-d output buffer of `len` entries of `dtype`.
fn create_buffer(out: &OutputStore, path: &str, dtype: &DType, len: u64) -> Result<()> {
    let spec = ArraySpec::new(vec![len], dtype.clone(), vec![len.clamp(1, BLOCK)]);
    let mut attrs = Map::new();
    attrs.insert("encoding-type".into(), json!("array"));
    attrs.insert("encoding-version".into(), json!("0.2.0"));
    out.write_array(path, spec, &attrs)
}

/// Copies entries `range` of the int64 buffer `src` of `p` to `dest` of
/// `out` from entry `at`, a block at a time, letting `edit` change each
/// block first (shift offsets, check an index); where the copy ended.
fn copy_i64_blocks(
    p: &Part<'_>,
    src: &str,
    range: std::ops::Range<u64>,
    out: &OutputStore,
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
