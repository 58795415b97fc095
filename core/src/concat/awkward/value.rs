//! Awkward arrays held in memory, for `--merge` of the other axis'
//! mappings (varm when stacking cells): read whole, reindexed onto the
//! joined axis as anndata reindexes them, compared as `ak.almost_equal`
//! compares them, and written. These arrays span the other axis only
//! (genes when stacking cells), so they fit in memory.
//!
//! anndata reindexes with `ak.pad_none(el, 1, axis=0)[idx]` when the joined
//! axis is longer, where `idx` holds -1 for a name the input lacks: the
//! type becomes an option, and -1 takes the last row (numpy's negative
//! index), not `None`, unless the input has no rows. anncat does the same.

use serde_json::{Map, Value, json};

use super::form::{Merged, Node};
use super::{create_buffer, write_values};
use crate::anndata::OutputStore;
use crate::anndata::sparse::read_i64_range;
use crate::anndata::store::NodeKind;
use crate::anndata::{DType, Element, Store};
use crate::concat::in_order::read_bytes;
use crate::concat::index::Reindexer;
use crate::concat::values::Values;
use crate::error::{Error, Result};

/// `ak.almost_equal`'s tolerances.
const RTOL: f64 = 1e-5;
const ATOL: f64 = 1e-8;

/// One level of an awkward array in memory.
#[derive(Debug, Clone)]
enum Level {
    Leaf {
        inner: Vec<u64>,
        params: Value,
        values: Values,
    },
    List {
        params: Value,
        offsets: Vec<i64>,
        content: Box<Level>,
    },
    Regular {
        size: u64,
        params: Value,
        content: Box<Level>,
    },
    Record {
        fields: Vec<String>,
        params: Value,
        contents: Vec<Level>,
    },
    Option {
        params: Value,
        index: Vec<i64>,
        content: Box<Level>,
    },
    Empty,
}

/// A whole awkward array.
#[derive(Debug, Clone)]
pub(crate) struct AwkwardValue {
    len: u64,
    top: Level,
}

fn positions(rows: &[u64], width: u64) -> Vec<u64> {
    rows.iter()
        .flat_map(|&r| r * width..(r + 1) * width)
        .collect()
}

impl Level {
    /// Reads the level `node` of `len` entries of the array at `path`.
    fn load(store: &Store, path: &str, node: &Node, len: u64) -> Result<Level> {
        let buffer = |key: &str, role: &str| format!("{path}/{key}-{role}");
        Ok(match node {
            Node::Leaf {
                key,
                dtype,
                inner_shape,
                params,
            } => {
                let data = buffer(key, "data");
                let stored = match store.node(&data)?.map(|m| m.kind) {
                    Some(NodeKind::Array(a)) => a.dtype,
                    _ => return Err(store.err(&data, "missing awkward buffer")),
                };
                let count = len * inner_shape.iter().product::<u64>();
                let bytes = read_bytes(store, &data, 0, count)?;
                Level::Leaf {
                    inner: inner_shape.clone(),
                    params: params.clone(),
                    values: Values::from_le_bytes(&stored, &bytes)?.into_cast(dtype)?,
                }
            }
            Node::List {
                key,
                content,
                params,
            } => {
                let src = buffer(key, "offsets");
                let offsets = read_i64_range(store, &src, &DType::Int64, 0, len + 1)?;
                let bad = offsets.first().is_some_and(|&o| o != 0)
                    || offsets.windows(2).any(|w| w[1] < w[0]);
                if bad {
                    return Err(store.err(&src, "awkward offsets that are not packed"));
                }
                let inner = offsets.last().copied().unwrap_or(0) as u64;
                Level::List {
                    params: params.clone(),
                    content: Box::new(Level::load(store, path, content, inner)?),
                    offsets,
                }
            }
            Node::Regular {
                size,
                content,
                params,
            } => Level::Regular {
                size: *size,
                params: params.clone(),
                content: Box::new(Level::load(store, path, content, len * size)?),
            },
            Node::Record {
                fields,
                contents,
                params,
            } => Level::Record {
                fields: fields.clone(),
                params: params.clone(),
                contents: contents
                    .iter()
                    .map(|c| Level::load(store, path, c, len))
                    .collect::<Result<_>>()?,
            },
            Node::Option {
                key,
                content,
                params,
            } => {
                let src = buffer(key, "index");
                let index = read_i64_range(store, &src, &DType::Int64, 0, len)?;
                let mut valid = 0;
                for &i in index.iter().filter(|&&i| i >= 0) {
                    if i != valid {
                        return Err(store.err(&src, "an awkward option index that is not packed"));
                    }
                    valid += 1;
                }
                Level::Option {
                    params: params.clone(),
                    content: Box::new(Level::load(store, path, content, valid as u64)?),
                    index,
                }
            }
            Node::Empty => Level::Empty,
        })
    }

    /// The entries at `rows`, in order.
    fn take(&self, rows: &[u64]) -> Level {
        match self {
            Level::Leaf {
                inner,
                params,
                values,
            } => {
                let width = inner.iter().product::<u64>();
                let at: Vec<usize> = positions(rows, width)
                    .into_iter()
                    .map(|p| p as usize)
                    .collect();
                Level::Leaf {
                    inner: inner.clone(),
                    params: params.clone(),
                    values: values.select(&at),
                }
            }
            Level::List {
                params,
                offsets,
                content,
            } => {
                let mut new_offsets = Vec::with_capacity(rows.len() + 1);
                new_offsets.push(0);
                let mut at = Vec::new();
                for &r in rows {
                    let (lo, hi) = (offsets[r as usize], offsets[r as usize + 1]);
                    at.extend(lo as u64..hi as u64);
                    new_offsets.push(new_offsets[new_offsets.len() - 1] + hi - lo);
                }
                Level::List {
                    params: params.clone(),
                    offsets: new_offsets,
                    content: Box::new(content.take(&at)),
                }
            }
            Level::Regular {
                size,
                params,
                content,
            } => Level::Regular {
                size: *size,
                params: params.clone(),
                content: Box::new(content.take(&positions(rows, *size))),
            },
            Level::Record {
                fields,
                params,
                contents,
            } => Level::Record {
                fields: fields.clone(),
                params: params.clone(),
                contents: contents.iter().map(|c| c.take(rows)).collect(),
            },
            Level::Option {
                params,
                index,
                content,
            } => {
                let mut new_index = Vec::with_capacity(rows.len());
                let mut at = Vec::new();
                for &r in rows {
                    let i = index[r as usize];
                    if i < 0 {
                        new_index.push(-1);
                    } else {
                        new_index.push(at.len() as i64);
                        at.push(i as u64);
                    }
                }
                Level::Option {
                    params: params.clone(),
                    index: new_index,
                    content: Box::new(content.take(&at)),
                }
            }
            Level::Empty => Level::Empty,
        }
    }

    /// `ak.almost_equal` for arrays of equal length: the same type (dtypes
    /// exact, parameters and regular sizes included) and values within
    /// its tolerances (NaN unequal).
    fn almost_equal(&self, other: &Level) -> bool {
        match (self, other) {
            (
                Level::Leaf {
                    inner: ia,
                    params: pa,
                    values: a,
                },
                Level::Leaf {
                    inner: ib,
                    params: pb,
                    values: b,
                },
            ) => {
                if ia != ib || pa != pb || a.dtype() != b.dtype() || a.len() != b.len() {
                    return false;
                }
                match (a.cast(&DType::Float64), b.cast(&DType::Float64)) {
                    (Ok(Values::F64(x)), Ok(Values::F64(y)))
                        if matches!(a.dtype(), DType::Float32 | DType::Float64) =>
                    {
                        x.iter()
                            .zip(&y)
                            .all(|(p, q)| (p - q).abs() <= ATOL + RTOL * q.abs())
                    }
                    _ => a == b,
                }
            }
            (
                Level::List {
                    params: pa,
                    offsets: oa,
                    content: ca,
                },
                Level::List {
                    params: pb,
                    offsets: ob,
                    content: cb,
                },
            ) => pa == pb && oa == ob && ca.almost_equal(cb),
            (
                Level::Regular {
                    size: sa,
                    params: pa,
                    content: ca,
                },
                Level::Regular {
                    size: sb,
                    params: pb,
                    content: cb,
                },
            ) => sa == sb && pa == pb && ca.almost_equal(cb),
            (
                Level::Record {
                    fields: fa,
                    params: pa,
                    contents: ca,
                },
                Level::Record {
                    fields: fb,
                    params: pb,
                    contents: cb,
                },
            ) => fa == fb && pa == pb && ca.iter().zip(cb).all(|(a, b)| a.almost_equal(b)),
            (
                Level::Option {
                    params: pa,
                    index: ia,
                    content: ca,
                },
                Level::Option {
                    params: pb,
                    index: ib,
                    content: cb,
                },
            ) => pa == pb && ia == ib && ca.almost_equal(cb),
            (Level::Empty, Level::Empty) => true,
            _ => false,
        }
    }

    /// The type of this level, as a [`Merged`] node (keys unassigned).
    fn ty(&self) -> Merged {
        match self {
            Level::Leaf {
                inner,
                params,
                values,
            } => Merged::Leaf {
                key: String::new(),
                dtype: values.dtype(),
                inner_shape: inner.clone(),
                params: params.clone(),
            },
            Level::List {
                params, content, ..
            } => Merged::List {
                key: String::new(),
                content: Box::new(content.ty()),
                params: params.clone(),
            },
            Level::Regular {
                size,
                params,
                content,
            } => Merged::Regular {
                key: String::new(),
                size: *size,
                content: Box::new(content.ty()),
                params: params.clone(),
            },
            Level::Record {
                fields,
                params,
                contents,
            } => Merged::Record {
                key: String::new(),
                fields: fields.clone(),
                contents: contents.iter().map(Level::ty).collect(),
                params: params.clone(),
            },
            Level::Option {
                params, content, ..
            } => Merged::Option {
                key: String::new(),
                content: Box::new(content.ty()),
                params: params.clone(),
            },
            Level::Empty => Merged::Empty,
        }
    }

    /// Writes this level's buffers, named by the keys of `ty`.
    fn write(&self, out: &OutputStore, path: &str, ty: &Merged) -> Result<()> {
        let buffer = |key: &str, role: &str, values: &Values| -> Result<()> {
            let dest = format!("{path}/{key}-{role}");
            let n = values.len() as u64;
            create_buffer(out, &dest, &values.dtype(), n)?;
            if n > 0 {
                write_values(out, &dest, vec![0], vec![n], values)?;
            }
            Ok(())
        };
        match (self, ty) {
            (Level::Leaf { values, .. }, Merged::Leaf { key, .. }) => buffer(key, "data", values),
            (
                Level::List {
                    offsets, content, ..
                },
                Merged::List {
                    key, content: ct, ..
                },
            ) => {
                buffer(key, "offsets", &Values::I64(offsets.clone()))?;
                content.write(out, path, ct)
            }
            (Level::Regular { content, .. }, Merged::Regular { content: ct, .. }) => {
                content.write(out, path, ct)
            }
            (
                Level::Record { contents, .. },
                Merged::Record {
                    contents: types, ..
                },
            ) => contents
                .iter()
                .zip(types)
                .try_for_each(|(c, t)| c.write(out, path, t)),
            (
                Level::Option { index, content, .. },
                Merged::Option {
                    key, content: ct, ..
                },
            ) => {
                buffer(key, "index", &Values::I64(index.clone()))?;
                content.write(out, path, ct)
            }
            (Level::Empty, Merged::Empty) => Ok(()),
            _ => Err(Error::data(format!(
                "{path}: internal error: awkward levels and types differ"
            ))),
        }
    }
}

impl AwkwardValue {
    /// Reads the awkward array `e` of `store` whole.
    pub(crate) fn load(store: &Store, e: &Element) -> Result<AwkwardValue> {
        let (node, len) = super::form_and_length(store, e)?;
        Ok(AwkwardValue {
            len,
            top: Level::load(store, &e.path, &node, len)?,
        })
    }

    /// Entries in the array.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The array reindexed onto the joined axis by `r`, as anndata does
    /// (see the module documentation).
    pub(crate) fn reindexed(self, r: &Reindexer) -> AwkwardValue {
        if r.identity {
            return self;
        }
        let new_len = r.n_new;
        let old_of_new = r.old_of_new();
        let old_len = self.len;
        if new_len > old_len {
            let (top, len) = match self.top {
                already @ Level::Option { .. } => (already, old_len),
                other if old_len == 0 => (
                    Level::Option {
                        params: json!({}),
                        index: vec![-1],
                        content: Box::new(other),
                    },
                    1,
                ),
                other => (
                    Level::Option {
                        params: json!({}),
                        index: (0..old_len as i64).collect(),
                        content: Box::new(other),
                    },
                    old_len,
                ),
            };
            let (top, len) = match top {
                // An empty option array is padded to one `None`.
                Level::Option {
                    params,
                    mut index,
                    content,
                } if len == 0 => {
                    index.push(-1);
                    (
                        Level::Option {
                            params,
                            index,
                            content,
                        },
                        1,
                    )
                }
                top => (top, len),
            };
            let rows: Vec<u64> = old_of_new
                .iter()
                .map(|&o| if o < 0 { len - 1 } else { o as u64 })
                .collect();
            return AwkwardValue {
                len: new_len,
                top: top.take(&rows),
            };
        }
        let rows: Vec<u64> = old_of_new.iter().map(|&o| o.max(0) as u64).collect();
        AwkwardValue {
            len: new_len,
            top: self.top.take(&rows),
        }
    }

    /// `ak.almost_equal(self, other)`.
    pub(crate) fn almost_equal(&self, other: &AwkwardValue) -> bool {
        self.len == other.len && self.top.almost_equal(&other.top)
    }

    /// Writes the array as the awkward-array group `path` of `out`.
    pub(crate) fn write(&self, out: &OutputStore, path: &str) -> Result<()> {
        let mut ty = self.top.ty();
        ty.assign_keys(&mut 0);
        let mut attrs = Map::new();
        attrs.insert("length".into(), json!(self.len));
        attrs.insert("form".into(), Value::String(ty.form().to_string()));
        attrs.insert("encoding-type".into(), json!("awkward-array"));
        attrs.insert("encoding-version".into(), json!("0.1.0"));
        out.write_group(path, &attrs)?;
        self.top.write(out, path, &ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ragged() -> AwkwardValue {
        // [[0], [1, 1], [2, 2, 2]]
        AwkwardValue {
            len: 3,
            top: Level::List {
                params: json!({}),
                offsets: vec![0, 1, 3, 6],
                content: Box::new(Level::Leaf {
                    inner: Vec::new(),
                    params: json!({}),
                    values: Values::I64(vec![0, 1, 1, 2, 2, 2]),
                }),
            },
        }
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_longer_axis_makes_an_option_and_a_missing_name_takes_the_last_row() {
        let r = Reindexer::new(&names(&["a", "b", "c"]), &names(&["c", "d", "a", "b"]));
        let got = ragged().reindexed(&r);
        assert_eq!(got.len(), 4);
        let Level::Option { index, content, .. } = &got.top else {
            panic!("not an option: {got:?}");
        };
        assert_eq!(index, &[0, 1, 2, 3]);
        let Level::List {
            offsets, content, ..
        } = content.as_ref()
        else {
            panic!("not a list");
        };
        // c, then "d" (missing: the last row, c), then a, then b.
        assert_eq!(offsets, &[0, 3, 6, 7, 9]);
        let Level::Leaf { values, .. } = content.as_ref() else {
            panic!("not a leaf");
        };
        assert_eq!(values, &Values::I64(vec![2, 2, 2, 2, 2, 2, 0, 1, 1]));
        // The same length in another order: a plain take, no option.
        let r = Reindexer::new(&names(&["a", "b", "c"]), &names(&["b", "a"]));
        let got = ragged().reindexed(&r);
        assert!(matches!(got.top, Level::List { ref offsets, .. } if offsets == &[0, 2, 3]));
    }

    #[test]
    fn almost_equal_tolerates_what_awkward_tolerates() {
        let leaf = |v: Vec<f64>| AwkwardValue {
            len: v.len() as u64,
            top: Level::Leaf {
                inner: Vec::new(),
                params: json!({}),
                values: Values::F64(v),
            },
        };
        assert!(leaf(vec![1.0, 2.0]).almost_equal(&leaf(vec![1.0, 2.0 + 1e-9])));
        assert!(!leaf(vec![1.0, 2.0]).almost_equal(&leaf(vec![1.0, 2.1])));
        assert!(!leaf(vec![f64::NAN]).almost_equal(&leaf(vec![f64::NAN])));
        assert!(!ragged().almost_equal(&leaf(vec![0.0, 1.0, 2.0])));
    }
}
