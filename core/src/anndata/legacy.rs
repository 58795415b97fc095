//! Stores written by anndata 0.7 (h5ad and zarr v2), read as the current
//! layout, as anndata 0.12 / 0.13 read them.
//!
//! anndata 0.7 wrote no encoding attributes on the root, on plain arrays,
//! on `dict`-like groups or on uns scalars, and stored a categorical column
//! of a data frame (encoding-version 0.1.0) as its integer codes, with a
//! `categories` attribute naming `<frame>/__categories/<column>` (a path
//! string in zarr, an object reference in HDF5) whose `ordered` attribute
//! says whether they are ordered.
//!
//! [`Overlay`] presents such a store as the current layout without copying
//! anything: nodes without an `encoding-type` get the one anndata infers
//! for them, each categorical column becomes a virtual `categorical` group
//! whose `codes` and `categories` are the stored arrays, and `__categories`
//! is hidden. Every read of the store goes through [`Overlay::node`],
//! [`Overlay::children`] and [`Overlay::real_path`].
//!
//! The pre-0.7 layout (anndata 0.5 / 0.6: obs and var as record arrays,
//! categories in `uns/<column>_categories`, `raw.X`), in h5ad and zarr v2,
//! is seen as the current layout too, by [`pre07`], with the zarr arrays
//! zarrs cannot read seen through [`views`].

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value, json};

use super::dtype::DType;
use super::store::{NodeKind, NodeMeta, Store};
use crate::error::Result;

mod pre07;
pub(crate) mod views;

/// The anndata 0.7 layout of one store, seen as the current one.
#[derive(Debug, Default, Clone)]
pub struct Overlay {
    /// Virtual categorical groups: path -> (attributes, child names).
    groups: HashMap<String, (Map<String, Value>, Vec<String>)>,
    /// Virtual arrays (a categorical's `codes` / `categories`) -> stored path.
    moved: HashMap<String, String>,
    /// Stored groups hidden from listings (`<frame>/__categories`).
    hidden: HashSet<String>,
    /// Virtual subtrees stored elsewhere: (virtual prefix, stored prefix),
    /// e.g. a pre-0.7 `raw/X` stored as `raw.X`.
    prefixes: Vec<(String, String)>,
    /// Virtual children listed in a stored group besides its own.
    extra_children: HashMap<String, Vec<String>>,
    /// Fields of zarr record arrays seen as arrays, by path
    /// (`obs/n_genes` of a pre-0.7 `obs`).
    zarr_fields: HashMap<String, ZarrField>,
}

/// One field of a zarr record array, seen as an array of its own.
#[derive(Debug, Clone)]
pub(crate) struct ZarrField {
    /// The record array's path.
    pub parent: String,
    /// Byte offset of the field in a record.
    pub offset: usize,
    /// Bytes per record.
    pub record: usize,
    /// The field's type.
    pub field: super::structured::Field,
    /// The view's zarr v2 metadata.
    pub doc: Value,
}

/// The data frames a 0.7 store can hold: obs, var, raw/var, and frames in
/// obsm / varm.
const FRAME_PARENTS: [&str; 2] = ["obsm", "varm"];

impl Overlay {
    /// The overlay for `store` when it is an anndata 0.7 store (obs a
    /// `dataframe` group of version 0.1.0), else `None`.
    pub fn detect(store: &Store) -> Result<Option<Overlay>> {
        let is_07_frame = |meta: &NodeMeta| {
            matches!(meta.kind, NodeKind::Group)
                && meta.attrs.get("encoding-type").and_then(Value::as_str) == Some("dataframe")
                && meta.attrs.get("encoding-version").and_then(Value::as_str) == Some("0.1.0")
        };
        let obs = match store.h5() {
            // A pre-0.7 obs is told by its HDF5 type, without reading the
            // records (which opening it as an array would).
            Some(h5) if h5.compound_fields("obs").is_some() => return pre07::detect(store),
            _ => store.stored_node("obs")?,
        };
        match obs {
            Some(obs) if is_07_frame(&obs) => {}
            Some(NodeMeta {
                kind: NodeKind::Array(a),
                ..
            }) if matches!(a.dtype, DType::Structured(_)) => return pre07::detect(store),
            _ => return Ok(None),
        }
        let mut frames = vec!["obs".to_string(), "var".to_string(), "raw/var".to_string()];
        for parent in FRAME_PARENTS {
            if matches!(store.stored_node(parent)?, Some(m) if matches!(m.kind, NodeKind::Group)) {
                frames.extend(
                    store
                        .stored_children(parent)?
                        .into_iter()
                        .map(|c| format!("{parent}/{c}")),
                );
            }
        }
        let mut overlay = Overlay::default();
        for frame in frames {
            match store.stored_node(&frame)? {
                Some(meta) if is_07_frame(&meta) => overlay.add_frame(store, &frame)?,
                _ => {}
            }
        }
        Ok(Some(overlay))
    }

    /// Turns each categorical column of the 0.7 frame at `frame` into a
    /// virtual `categorical` group.
    fn add_frame(&mut self, store: &Store, frame: &str) -> Result<()> {
        let cats_dir = format!("{frame}/__categories");
        if store.stored_node(&cats_dir)?.is_none() {
            return Ok(());
        }
        self.hidden.insert(cats_dir.clone());
        for column in store.stored_children(frame)? {
            let path = format!("{frame}/{column}");
            let Some(meta) = store.stored_node(&path)? else {
                continue;
            };
            if !matches!(meta.kind, NodeKind::Array(_)) {
                continue;
            }
            // zarr: a path relative to the frame; HDF5: an object reference
            // (not read as an attribute), which anndata 0.7 always pointed
            // at `__categories/<column>`.
            let named = meta.attrs.get("categories").and_then(Value::as_str);
            let categories = match named {
                Some(rel) => format!("{frame}/{}", rel.trim_start_matches('/')),
                None => format!("{cats_dir}/{column}"),
            };
            let Some(cat_meta) = store.stored_node(&categories)? else {
                if named.is_some() {
                    return Err(store.err(
                        &path,
                        format!("the 0.7-era categories it names ({categories}) are missing"),
                    ));
                }
                continue;
            };
            let ordered = match cat_meta.attrs.get("ordered") {
                Some(Value::Bool(b)) => *b,
                Some(Value::Number(n)) => n.as_i64().unwrap_or(0) != 0,
                _ => false,
            };
            let attrs = json!({
                "encoding-type": "categorical",
                "encoding-version": "0.2.0",
                "ordered": ordered,
            });
            let Value::Object(attrs) = attrs else {
                continue;
            };
            self.groups.insert(
                path.clone(),
                (attrs, vec!["categories".to_string(), "codes".to_string()]),
            );
            self.moved.insert(format!("{path}/codes"), path.clone());
            self.moved.insert(format!("{path}/categories"), categories);
        }
        Ok(())
    }

    /// The stored node behind the (possibly virtual) `path`.
    pub fn real_path<'a>(&'a self, path: &'a str) -> Cow<'a, str> {
        if let Some(real) = self.moved.get(path) {
            return Cow::Borrowed(real);
        }
        for (virt, real) in &self.prefixes {
            if path == virt {
                return Cow::Borrowed(real);
            }
            if let Some(rest) = path.strip_prefix(virt.as_str())
                && rest.starts_with('/')
            {
                return Cow::Owned(format!("{real}{rest}"));
            }
        }
        Cow::Borrowed(path)
    }

    /// The zarr record-array field seen at the stored path `real`, if any.
    pub(crate) fn zarr_field(&self, real: &str) -> Option<&ZarrField> {
        self.zarr_fields.get(real)
    }

    /// The metadata of `path` as the current layout has it.
    pub fn node(&self, store: &Store, path: &str) -> Result<Option<NodeMeta>> {
        if let Some((attrs, _)) = self.groups.get(path) {
            return Ok(Some(NodeMeta {
                kind: NodeKind::Group,
                attrs: attrs.clone(),
            }));
        }
        let moved = self.moved.contains_key(path);
        let real = self.real_path(path);
        let stored = match self.zarr_fields.get(real.as_ref()) {
            Some(f) => Some(NodeMeta {
                kind: NodeKind::Array(Box::new(store.parse_v2_array(&real, f.doc.clone())?)),
                attrs: Map::new(),
            }),
            None => store.stored_node(&real)?,
        };
        let Some(mut meta) = stored else {
            return Ok(None);
        };
        if moved {
            meta.attrs = Map::new();
        }
        if !meta.attrs.contains_key("encoding-type") && pre07::sparse_group(&mut meta) {
            return Ok(Some(meta));
        }
        if !meta.attrs.contains_key("encoding-type") {
            let (kind, version) = implied_encoding(path, &meta);
            meta.attrs
                .insert("encoding-type".into(), Value::String(kind.into()));
            meta.attrs
                .insert("encoding-version".into(), Value::String(version.into()));
        }
        Ok(Some(meta))
    }

    /// The children of `path` as the current layout has them.
    pub fn children(&self, store: &Store, path: &str) -> Result<Vec<String>> {
        if let Some((_, children)) = self.groups.get(path) {
            return Ok(children.clone());
        }
        let mut names = store.stored_children(&self.real_path(path))?;
        if let Some(extra) = self.extra_children.get(path) {
            names.extend(extra.iter().cloned());
            names.sort();
            names.dedup();
        }
        names.retain(|n| {
            let child = if path.is_empty() {
                n.clone()
            } else {
                format!("{path}/{n}")
            };
            !self.hidden.contains(&child)
        });
        Ok(names)
    }
}

/// The encoding anndata infers for a 0.7 node stored without one.
fn implied_encoding(path: &str, meta: &NodeMeta) -> (&'static str, &'static str) {
    match &meta.kind {
        NodeKind::Group if path.is_empty() => ("anndata", "0.1.0"),
        NodeKind::Group => ("dict", "0.1.0"),
        NodeKind::Array(a) if matches!(a.dtype, DType::Structured(_)) => ("rec-array", "0.2.0"),
        NodeKind::Array(a) => {
            let text = matches!(a.dtype, DType::String) || is_fixed_text(&a.raw);
            match (a.shape.is_empty(), text) {
                (true, true) => ("string", "0.2.0"),
                (true, false) => ("numeric-scalar", "0.2.0"),
                (false, true) => ("string-array", "0.2.0"),
                (false, false) => ("array", "0.2.0"),
            }
        }
    }
}

/// Whether a zarr v2 array holds fixed-width text (`<U8`, `|S3`).
fn is_fixed_text(raw: &Value) -> bool {
    raw.get("dtype")
        .and_then(Value::as_str)
        .is_some_and(|d| d.len() > 1 && matches!(&d[1..2], "U" | "S"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anndata::{Encoding, read_tree};

    fn fixture(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/legacy")
            .join(name)
    }

    #[test]
    fn a_07_store_reads_as_the_current_layout() {
        let names: &[&str] = if cfg!(feature = "hdf5") {
            &["a07.zarr", "a07.h5ad"]
        } else {
            &["a07.zarr"]
        };
        for &name in names {
            let store = Store::open(&fixture(name)).expect("open");
            let tree = read_tree(&store).expect("tree");
            let obs = tree.child("obs").expect("obs");
            assert!(obs.child("__categories").is_none(), "{name}");
            let cell_type = obs.child("cell_type").expect("cell_type");
            assert_eq!(cell_type.encoding, Encoding::Categorical, "{name}");
            let codes = store.array("obs/cell_type/codes").expect("codes");
            assert_eq!(codes.shape(), &[7], "{name}");
            let categories = store.array("obs/cell_type/categories").expect("categories");
            assert_eq!(categories.shape(), &[4], "{name}");
            let x = tree.child("X").expect("X");
            assert_eq!(x.encoding, Encoding::Array, "{name}");
            let title = tree.walk_find("uns/title").expect("uns/title");
            assert_eq!(title.encoding, Encoding::String, "{name}");
        }
    }

    #[test]
    fn a_06_store_reads_as_the_current_layout() {
        let names: &[&str] = if cfg!(feature = "hdf5") {
            &["a06.zarr", "a06.h5ad", "a06s.h5ad"]
        } else {
            &["a06.zarr"]
        };
        for &name in names {
            let store = Store::open(&fixture(name)).expect("open");
            let tree = read_tree(&store).expect("tree");
            let obs = tree.child("obs").expect("obs");
            assert_eq!(obs.encoding, Encoding::DataFrame, "{name}");
            assert_eq!(obs.meta.attrs["_index"], "index", "{name}");
            let cell_type = obs.child("cell_type").expect("cell_type");
            assert_eq!(cell_type.encoding, Encoding::Categorical, "{name}");
            let codes = store.array("obs/cell_type/codes").expect("codes");
            assert_eq!(codes.shape(), &[7], "{name}");
            let categories = crate::concat::index::read_strings(&store, "obs/cell_type/categories")
                .expect("categories");
            assert_eq!(categories, ["B", "NK", "T", "unused_a"], "{name}");
            let barcodes =
                crate::concat::index::read_strings(&store, "obs/barcode").expect("barcode");
            assert_eq!(barcodes[0], "A-BC00", "{name}");
            // The categories are taken out of uns.
            let uns = tree.child("uns").expect("uns");
            assert!(uns.child("cell_type_categories").is_none(), "{name}");
            assert!(uns.child("title").is_some(), "{name}");
            let title = crate::concat::index::read_strings(&store, "uns/title").expect("title");
            assert_eq!(title, ["sample a"], "{name}");
            let layer = tree.walk_find("layers/counts").expect("counts");
            let x = tree.child("X").expect("X");
            let sparse = [layer.encoding, x.encoding]
                .into_iter()
                .filter(|e| *e == Encoding::CsrMatrix)
                .count();
            // The zarr twin holds both dense (see the fixtures' README).
            let want = if name.ends_with(".zarr") { 0 } else { 1 };
            assert_eq!(sparse, want, "{name}");
        }
    }
}
