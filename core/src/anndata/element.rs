//! The AnnData element tree of a store: every node with its decoded
//! `encoding-type`, validated against what that encoding requires. Opening
//! reads metadata only; no chunk is touched.

use serde_json::Value;

use super::store::{ArrayMeta, NodeKind, NodeMeta, Store};
use crate::anndata::dtype::DType;
use crate::error::Result;

/// The `encoding-type` of an element (see `ANNDATA.md` section 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encoding {
    /// The root group (`anndata`).
    #[serde(rename = "anndata")]
    AnnData,
    /// `raw`: X, var, varm of the unfiltered object.
    Raw,
    /// Dense numeric or boolean array.
    Array,
    /// Compressed sparse rows.
    #[serde(rename = "csr_matrix")]
    CsrMatrix,
    /// Compressed sparse columns.
    #[serde(rename = "csc_matrix")]
    CscMatrix,
    /// A pandas data frame.
    #[serde(rename = "dataframe")]
    DataFrame,
    /// A pandas categorical.
    Categorical,
    /// Masked integers.
    NullableInteger,
    /// Masked booleans.
    NullableBoolean,
    /// Masked strings.
    NullableStringArray,
    /// Variable-length strings.
    StringArray,
    /// A 0-d number.
    NumericScalar,
    /// A 0-d string.
    String,
    /// A 0-d byte string (`bytes`, read by anndata 0.13, written by none).
    Bytes,
    /// A mapping.
    Dict,
    /// `None`.
    Null,
    /// An awkward array (buffers kept as they are).
    AwkwardArray,
    /// A numpy structured array (copied byte for byte).
    RecArray,
    /// A node without encoding attributes: a plain array (awkward buffers,
    /// old stores) or a plain group.
    Plain,
}

impl Encoding {
    /// Parses an `encoding-type` attribute value.
    pub fn parse(name: &str) -> Option<Encoding> {
        Some(match name {
            "anndata" => Encoding::AnnData,
            "raw" => Encoding::Raw,
            "array" => Encoding::Array,
            "csr_matrix" => Encoding::CsrMatrix,
            "csc_matrix" => Encoding::CscMatrix,
            "dataframe" => Encoding::DataFrame,
            "categorical" => Encoding::Categorical,
            "nullable-integer" => Encoding::NullableInteger,
            "nullable-boolean" => Encoding::NullableBoolean,
            "nullable-string-array" => Encoding::NullableStringArray,
            "string-array" => Encoding::StringArray,
            "numeric-scalar" => Encoding::NumericScalar,
            "string" => Encoding::String,
            "bytes" => Encoding::Bytes,
            "dict" => Encoding::Dict,
            "null" => Encoding::Null,
            "awkward-array" => Encoding::AwkwardArray,
            "rec-array" => Encoding::RecArray,
            _ => return None,
        })
    }

    /// The attribute spelling (`"-"` for [`Encoding::Plain`]).
    pub fn name(self) -> &'static str {
        match self {
            Encoding::AnnData => "anndata",
            Encoding::Raw => "raw",
            Encoding::Array => "array",
            Encoding::CsrMatrix => "csr_matrix",
            Encoding::CscMatrix => "csc_matrix",
            Encoding::DataFrame => "dataframe",
            Encoding::Categorical => "categorical",
            Encoding::NullableInteger => "nullable-integer",
            Encoding::NullableBoolean => "nullable-boolean",
            Encoding::NullableStringArray => "nullable-string-array",
            Encoding::StringArray => "string-array",
            Encoding::NumericScalar => "numeric-scalar",
            Encoding::String => "string",
            Encoding::Bytes => "bytes",
            Encoding::Dict => "dict",
            Encoding::Null => "null",
            Encoding::AwkwardArray => "awkward-array",
            Encoding::RecArray => "rec-array",
            Encoding::Plain => "-",
        }
    }

    /// Whether the encoding is stored as one zarr array (else a group).
    pub fn is_array(self) -> bool {
        matches!(
            self,
            Encoding::Array
                | Encoding::StringArray
                | Encoding::NumericScalar
                | Encoding::String
                | Encoding::Bytes
                | Encoding::Null
                | Encoding::RecArray
        )
    }
}

/// One node of an AnnData store with its children.
#[derive(Debug, Clone)]
pub struct Element {
    /// Path inside the store (`""` for the root, else e.g. `obs/_index`).
    pub path: String,
    /// Decoded encoding.
    pub encoding: Encoding,
    /// Node metadata (kind, attributes).
    pub meta: NodeMeta,
    /// Children, sorted by name.
    pub children: Vec<Element>,
}

impl Element {
    /// The last path component (`""` for the root).
    pub fn name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }

    /// The array metadata, if this node is an array.
    pub fn array(&self) -> Option<&ArrayMeta> {
        match &self.meta.kind {
            NodeKind::Array(a) => Some(a),
            NodeKind::Group => None,
        }
    }

    /// The child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name() == name)
    }

    /// The descendant (or self) at `path`.
    pub fn walk_find(&self, path: &str) -> Option<&Element> {
        if self.path == path {
            return Some(self);
        }
        self.children
            .iter()
            .filter(|c| path == c.path || path.starts_with(&format!("{}/", c.path)))
            .find_map(|c| c.walk_find(path))
    }

    /// Visits this element and all descendants, parents first.
    pub fn walk<'a>(&'a self, f: &mut impl FnMut(&'a Element)) {
        f(self);
        for c in &self.children {
            c.walk(f);
        }
    }
}

/// Opens `store` as an AnnData store and reads its whole element tree
/// (metadata only), validating every element's structure.
pub fn read_tree(store: &Store) -> Result<Element> {
    let root = read_element(store, "")?;
    if root.encoding == Encoding::Plain
        && root.child("obs").is_some()
        && root.child("var").is_some()
    {
        return Err(store.err(
            "",
            "not an AnnData store of a layout anncat knows (the root has no encoding-type, and \
             obs is neither a data frame nor a pre-0.7 record array): re-save it with current \
             anndata",
        ));
    }
    if root.encoding != Encoding::AnnData {
        return Err(store.err(
            "",
            "not an AnnData store (root encoding-type is not \"anndata\")",
        ));
    }
    check_shapes(store, &root)?;
    Ok(root)
}

/// Reads and validates the element at `path` and everything below it.
pub fn read_element(store: &Store, path: &str) -> Result<Element> {
    let meta = store
        .node(path)?
        .ok_or_else(|| store.err(path, "missing element (no zarr metadata)"))?;
    let encoding = match meta.attrs.get("encoding-type") {
        None => Encoding::Plain,
        Some(Value::String(s)) => Encoding::parse(s)
            .ok_or_else(|| store.err(path, format!("unknown encoding-type \"{s}\"")))?,
        Some(other) => {
            return Err(store.err(path, format!("encoding-type is not a string: {other}")));
        }
    };
    let is_group = matches!(meta.kind, NodeKind::Group);
    if encoding != Encoding::Plain && encoding.is_array() == is_group {
        let want = if is_group { "an array" } else { "a group" };
        return Err(store.err(
            path,
            format!("encoding-type {} must be {want}", encoding.name()),
        ));
    }
    let mut children = Vec::new();
    if is_group {
        for name in store.children(path)? {
            let child = if path.is_empty() {
                name
            } else {
                format!("{path}/{name}")
            };
            children.push(read_element(store, &child)?);
        }
    }
    let element = Element {
        path: path.to_string(),
        encoding,
        meta,
        children,
    };
    validate(store, &element)?;
    Ok(element)
}

/// Checks the structural rules of `e`'s encoding (children, shapes, attrs).
fn validate(store: &Store, e: &Element) -> Result<()> {
    let err = |m: String| store.err(&e.path, m);
    let need = |name: &str| -> Result<&Element> {
        e.child(name).ok_or_else(|| {
            store.err(
                &e.path,
                format!("{} element lacks its \"{name}\" member", e.encoding.name()),
            )
        })
    };
    let need_array = |name: &str| -> Result<&ArrayMeta> {
        need(name)?
            .array()
            .ok_or_else(|| store.err(&e.path, format!("\"{name}\" must be an array")))
    };
    match e.encoding {
        Encoding::CsrMatrix | Encoding::CscMatrix => {
            let shape = e
                .meta
                .attrs
                .get("shape")
                .and_then(Value::as_array)
                .and_then(|s| s.iter().map(Value::as_u64).collect::<Option<Vec<_>>>())
                .filter(|s| s.len() == 2)
                .ok_or_else(|| err("sparse matrix lacks a valid \"shape\" attribute".into()))?;
            let data = need_array("data")?;
            let indices = need_array("indices")?;
            let indptr = need_array("indptr")?;
            for (n, a) in [("data", data), ("indices", indices), ("indptr", indptr)] {
                if a.shape.len() != 1 {
                    return Err(err(format!("sparse member \"{n}\" is not 1-dimensional")));
                }
            }
            let major = if e.encoding == Encoding::CsrMatrix {
                shape[0]
            } else {
                shape[1]
            };
            if indptr.shape[0] != major + 1 {
                return Err(err(format!(
                    "indptr has {} entries but shape {:?} needs {}",
                    indptr.shape[0],
                    shape,
                    major + 1
                )));
            }
            if data.shape[0] != indices.shape[0] {
                return Err(err(format!(
                    "data has {} entries but indices has {}",
                    data.shape[0], indices.shape[0]
                )));
            }
            for (n, a) in [("indices", indices), ("indptr", indptr)] {
                if !matches!(
                    a.dtype,
                    DType::Int32 | DType::Int64 | DType::UInt32 | DType::UInt64
                ) {
                    return Err(err(format!(
                        "sparse member \"{n}\" has non-integer dtype {}",
                        a.dtype.display_name()
                    )));
                }
            }
        }
        Encoding::DataFrame => {
            if let Some(old) = e.child("__categories") {
                return Err(store.err(
                    &old.path,
                    "a 0.7-era data frame (categories in __categories) is not supported: re-save \
                     the store with current anndata",
                ));
            }
            let index = e
                .meta
                .attrs
                .get("_index")
                .and_then(Value::as_str)
                .ok_or_else(|| err("dataframe lacks the \"_index\" attribute".into()))?;
            let order = e
                .meta
                .attrs
                .get("column-order")
                .and_then(Value::as_array)
                .ok_or_else(|| err("dataframe lacks the \"column-order\" attribute".into()))?;
            let len = element_len(store, need(index)?)?;
            for col in order {
                let name = col
                    .as_str()
                    .ok_or_else(|| err(format!("column-order entry {col} is not a string")))?;
                let n = element_len(store, need(name)?)?;
                if n != len {
                    return Err(err(format!(
                        "column \"{name}\" has {n} rows but the index has {len}"
                    )));
                }
            }
        }
        Encoding::Categorical => {
            let codes = need_array("codes")?;
            need("categories")?;
            if codes.shape.len() != 1 {
                return Err(err("categorical codes are not 1-dimensional".into()));
            }
            if !matches!(
                codes.dtype,
                DType::Int8 | DType::Int16 | DType::Int32 | DType::Int64
            ) {
                return Err(err(format!(
                    "categorical codes have dtype {}, not a signed integer",
                    codes.dtype.display_name()
                )));
            }
        }
        Encoding::NullableInteger | Encoding::NullableBoolean | Encoding::NullableStringArray => {
            let values = need_array("values")?;
            let mask = need_array("mask")?;
            if values.shape != mask.shape {
                return Err(err(format!(
                    "values shape {:?} differs from mask shape {:?}",
                    values.shape, mask.shape
                )));
            }
            if mask.dtype != DType::Bool {
                return Err(err("mask is not boolean".into()));
            }
        }
        Encoding::StringArray => {
            let a = e
                .array()
                .ok_or_else(|| err("string-array is not an array".into()))?;
            if !matches!(a.dtype, DType::String | DType::Other(_)) {
                return Err(err(format!(
                    "string-array has dtype {}",
                    a.dtype.display_name()
                )));
            }
        }
        Encoding::NumericScalar | Encoding::String | Encoding::Bytes | Encoding::Null => {
            let a = e
                .array()
                .ok_or_else(|| err("scalar is not an array".into()))?;
            if !a.shape.is_empty() {
                return Err(err(format!(
                    "{} must be 0-dimensional, has shape {:?}",
                    e.encoding.name(),
                    a.shape
                )));
            }
        }
        Encoding::AwkwardArray => {
            for attr in ["length", "form"] {
                if !e.meta.attrs.contains_key(attr) {
                    return Err(err(format!("awkward-array lacks the \"{attr}\" attribute")));
                }
            }
        }
        Encoding::AnnData
        | Encoding::Raw
        | Encoding::Array
        | Encoding::Dict
        | Encoding::RecArray
        | Encoding::Plain => {}
    }
    Ok(())
}

/// The second dimension of a 2-D array or sparse matrix, if it has one.
fn element_width(e: &Element) -> Option<u64> {
    match e.encoding {
        Encoding::CsrMatrix | Encoding::CscMatrix => e
            .meta
            .attrs
            .get("shape")
            .and_then(|s| s.get(1))
            .and_then(Value::as_u64),
        _ => e.array().and_then(|a| {
            if a.shape.len() >= 2 {
                Some(a.shape[1])
            } else {
                None
            }
        }),
    }
}

/// Checks that every element of an AnnData group (the root or `raw`) agrees
/// with its obs / var lengths: X and layers are n_obs × n_vars, obsm / obsp
/// have n_obs rows, varm / varp n_vars.
fn check_shapes(store: &Store, root: &Element) -> Result<()> {
    let Some(x_or_obs) = root.child("obs").or_else(|| root.child("X")) else {
        return Ok(());
    };
    let n_obs = element_len(store, x_or_obs)?;
    let n_vars = match root.child("var") {
        Some(var) => element_len(store, var)?,
        None => match root.child("X").and_then(element_width) {
            Some(w) => w,
            None => return Ok(()),
        },
    };
    let check = |e: &Element, rows: u64, cols: Option<u64>| -> Result<()> {
        if matches!(
            e.encoding,
            Encoding::Null | Encoding::Dict | Encoding::Plain
        ) && e.array().is_none_or(|a| a.shape.is_empty())
        {
            return Ok(());
        }
        let len = element_len(store, e)?;
        if len != rows {
            return Err(store.err(
                &e.path,
                format!("has {len} rows but the AnnData has {rows}"),
            ));
        }
        if let (Some(want), Some(have)) = (cols, element_width(e))
            && want != have
        {
            return Err(store.err(
                &e.path,
                format!("has {have} columns but should have {want}"),
            ));
        }
        Ok(())
    };
    if let Some(x) = root.child("X") {
        check(x, n_obs, Some(n_vars))?;
    }
    let groups: [(&str, u64, Option<u64>); 5] = [
        ("layers", n_obs, Some(n_vars)),
        ("obsm", n_obs, None),
        ("varm", n_vars, None),
        ("obsp", n_obs, Some(n_obs)),
        ("varp", n_vars, Some(n_vars)),
    ];
    for (name, rows, cols) in groups {
        if let Some(group) = root.child(name) {
            for e in &group.children {
                check(e, rows, cols)?;
            }
        }
    }
    if let Some(raw) = root.child("raw")
        && raw.encoding == Encoding::Raw
    {
        if let Some(x) = raw.child("X") {
            check(x, n_obs, None)?;
        }
        check_shapes(store, raw)?;
    }
    Ok(())
}

/// The length along axis 0 of an element that can be a data frame column.
pub fn element_len(store: &Store, e: &Element) -> Result<u64> {
    let first_dim = |a: &ArrayMeta| a.shape.first().copied();
    let len = match e.encoding {
        Encoding::Categorical => e
            .child("codes")
            .and_then(Element::array)
            .and_then(first_dim),
        Encoding::NullableInteger | Encoding::NullableBoolean | Encoding::NullableStringArray => e
            .child("values")
            .and_then(Element::array)
            .and_then(first_dim),
        Encoding::CsrMatrix | Encoding::CscMatrix => e
            .meta
            .attrs
            .get("shape")
            .and_then(|s| s.get(0))
            .and_then(Value::as_u64),
        Encoding::DataFrame => {
            let index = e
                .meta
                .attrs
                .get("_index")
                .and_then(Value::as_str)
                .unwrap_or("_index");
            return e.child(index).map_or(Ok(0), |i| element_len(store, i));
        }
        Encoding::AwkwardArray => e.meta.attrs.get("length").and_then(Value::as_u64),
        _ => e.array().and_then(first_dim),
    };
    len.ok_or_else(|| store.err(&e.path, "element has no length along axis 0"))
}
