//! The pre-0.7 layout (anndata 0.5 and 0.6), in h5ad and zarr v2, seen as
//! the current one, as anndata 0.12 / 0.13 read it (`read_h5ad` /
//! `read_zarr`'s backwards compatibility, `_clean_uns` and
//! `_move_adj_mtx`):
//!
//! - `obs`, `var` and `raw.var` are record arrays (h5ad compound datasets,
//!   zarr structured arrays) whose first field is the index: each becomes a
//!   virtual `dataframe` group whose columns are the fields, read through
//!   field views (`obs/n_genes` is the field `n_genes` of the array `obs`:
//!   the h5ad store's own, [`super::views::FieldView`] in zarr);
//! - `obsm`, `varm` and `raw.varm`, when compound datasets, become `dict`
//!   groups of their fields (a sub-array field is an `n x k` array);
//! - a column with categories in `uns/<column>_categories` (and every code
//!   below their count) becomes a categorical of those categories, and the
//!   uns entry goes; obs and var are both tried, as anndata does;
//! - `raw.X`, `raw.var` and `raw.varm` become the `raw` group;
//! - groups tagged `h5sparse_format` are sparse matrices;
//! - in h5ad, a one-element array of fixed-length byte strings is a `str`
//!   scalar (anndata's zarr reader has no such rule);
//! - `uns/neighbors/distances` and `connectivities` (2-D) move to obsp.

use serde_json::{Map, Value, json};

use super::views::plain_v2_doc;
use super::{Overlay, ZarrField};
use crate::anndata::dtype::DType;
use crate::anndata::sparse::read_i64_range;
use crate::anndata::store::{NodeKind, NodeMeta, Store};
use crate::anndata::structured::Field;
use crate::error::Result;

/// The data frames of the layout: (virtual path, stored path).
const FRAMES: [(&str, &str); 3] = [("obs", "obs"), ("var", "var"), ("raw/var", "raw.var")];

/// The mappings that may be compound datasets: (virtual path, stored path).
const MAPPINGS: [(&str, &str); 3] = [("obsm", "obsm"), ("varm", "varm"), ("raw/varm", "raw.varm")];

/// The adjacency matrices anndata moves from `uns/neighbors` to obsp.
const ADJACENCY: [&str; 2] = ["connectivities", "distances"];

/// The attributes of a `dict` group.
fn dict_attrs() -> Map<String, Value> {
    attrs(json!({"encoding-type": "dict", "encoding-version": "0.1.0"}))
}

fn attrs(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The field names of the record array stored at `path` (an h5ad compound
/// dataset, a zarr structured array), or `None` if it is not one. In zarr,
/// each field is also registered as an array of its own in `overlay`.
fn record_fields(store: &Store, path: &str, overlay: &mut Overlay) -> Result<Option<Vec<String>>> {
    if let Some(h5) = store.h5() {
        // The h5ad store has field views of its own.
        return Ok(h5.compound_fields(path));
    }
    let Some(NodeMeta {
        kind: NodeKind::Array(a),
        ..
    }) = store.stored_node(path)?
    else {
        return Ok(None);
    };
    let DType::Structured(s) = &a.dtype else {
        return Ok(None);
    };
    if a.shape.len() != 1 {
        return Err(store.err(path, "a pre-0.7 record array that is not 1-dimensional"));
    }
    let record = s.item_size() as usize;
    let mut offset = 0;
    let mut names = Vec::with_capacity(s.fields().len());
    for (name, field) in s.fields() {
        let dtype = match field {
            Field::Numeric(d) => d.v2_name().unwrap_or("|O"),
            Field::Utf32(_) | Field::Bytes(_) => "|O",
        };
        overlay.zarr_fields.insert(
            format!("{path}/{name}"),
            ZarrField {
                parent: path.to_string(),
                offset,
                record,
                field: field.clone(),
                doc: plain_v2_doc(dtype, &a.shape, &a.chunks),
            },
        );
        offset += field.size() as usize;
        names.push(name.clone());
    }
    Ok(Some(names))
}

/// The overlay of a pre-0.7 store (root without an encoding-type, `obs` a
/// record array), else `None`. Called for stores whose `obs` is a record
/// array.
pub(super) fn detect(store: &Store) -> Result<Option<Overlay>> {
    match store.stored_node("")? {
        Some(root) if !root.attrs.contains_key("encoding-type") => {}
        _ => return Ok(None),
    }
    let mut overlay = Overlay::default();
    let mut frame_fields = Vec::new();
    for (virt, stored) in FRAMES {
        let Some(fields) = record_fields(store, stored, &mut overlay)? else {
            continue;
        };
        let Some((index, columns)) = fields.split_first() else {
            return Err(store.err(stored, "a pre-0.7 data frame with no fields"));
        };
        let attrs = attrs(json!({
            "encoding-type": "dataframe",
            "encoding-version": "0.2.0",
            "_index": index,
            "column-order": columns,
        }));
        overlay
            .groups
            .insert(virt.to_string(), (attrs, fields.clone()));
        if virt != stored {
            overlay
                .prefixes
                .push((virt.to_string(), stored.to_string()));
        }
        frame_fields.push((virt, columns.to_vec()));
    }
    if !frame_fields.iter().any(|(virt, _)| *virt == "obs") {
        return Ok(None);
    }
    for (virt, stored) in MAPPINGS {
        if let Some(fields) = record_fields(store, stored, &mut overlay)? {
            let attrs = dict_attrs();
            overlay.groups.insert(virt.to_string(), (attrs, fields));
            if virt != stored {
                overlay
                    .prefixes
                    .push((virt.to_string(), stored.to_string()));
            }
        }
    }
    add_raw(store, &mut overlay)?;
    // The columns are read through what the overlay has so far.
    let probe = store.with_overlay(overlay.clone());
    add_categoricals(&probe, &mut overlay, &frame_fields)?;
    move_adjacency(store, &mut overlay)?;
    Ok(Some(overlay))
}

/// `raw.X`, `raw.var` and `raw.varm` as the `raw` group.
fn add_raw(store: &Store, overlay: &mut Overlay) -> Result<()> {
    let mut members = Vec::new();
    for name in ["X", "var", "varm"] {
        let stored = format!("raw.{name}");
        if store.stored_node(&stored)?.is_some() {
            overlay.hidden.insert(stored.clone());
            let virt = format!("raw/{name}");
            if !overlay.prefixes.iter().any(|(v, _)| *v == virt) {
                overlay.prefixes.push((virt, stored));
            }
            members.push(name.to_string());
        }
    }
    if !members.is_empty() {
        let attrs = attrs(json!({"encoding-type": "raw", "encoding-version": "0.1.0"}));
        overlay.groups.insert("raw".into(), (attrs, members));
        overlay
            .extra_children
            .entry(String::new())
            .or_default()
            .push("raw".into());
    }
    Ok(())
}

/// Columns whose categories are `uns/<column>_categories` (anndata's
/// `_clean_uns`): a categorical where every code is below the count of
/// categories; the uns entry is hidden once any frame takes it.
fn add_categoricals(
    store: &Store,
    overlay: &mut Overlay,
    frames: &[(&str, Vec<String>)],
) -> Result<()> {
    if !matches!(store.stored_node("uns")?, Some(m) if matches!(m.kind, NodeKind::Group)) {
        return Ok(());
    }
    for entry in store.stored_children("uns")? {
        if !entry.ends_with("_categories") {
            continue;
        }
        let categories = format!("uns/{entry}");
        let Some(NodeMeta {
            kind: NodeKind::Array(cats),
            ..
        }) = store.stored_node(&categories)?
        else {
            continue;
        };
        // A lone fixed-length string reads as a scalar, which anndata wraps
        // in a list: one category either way.
        let count = cats.shape.first().copied().unwrap_or(1);
        let column = entry.replace("_categories", "");
        for (frame, columns) in frames {
            // raw.var is not cleaned.
            if *frame == "raw/var" || !columns.contains(&column) {
                continue;
            }
            let path = format!("{frame}/{column}");
            let Some(NodeMeta {
                kind: NodeKind::Array(codes),
                ..
            }) = store.node(&path)?
            else {
                continue;
            };
            let integer = matches!(
                codes.dtype,
                DType::Int8
                    | DType::Int16
                    | DType::Int32
                    | DType::Int64
                    | DType::UInt8
                    | DType::UInt16
                    | DType::UInt32
                    | DType::UInt64
            );
            if !integer || codes.shape.len() != 1 {
                continue;
            }
            let values = read_i64_range(store, &path, &codes.dtype, 0, codes.shape[0])?;
            if values.iter().any(|&c| c >= count as i64) {
                continue;
            }
            let attrs = attrs(json!({
                "encoding-type": "categorical",
                "encoding-version": "0.2.0",
                "ordered": false,
            }));
            overlay.groups.insert(
                path.clone(),
                (attrs, vec!["categories".into(), "codes".into()]),
            );
            overlay.moved.insert(format!("{path}/codes"), path.clone());
            overlay
                .moved
                .insert(format!("{path}/categories"), categories.clone());
            overlay.hidden.insert(categories.clone());
        }
    }
    Ok(())
}

/// `uns/neighbors/{distances,connectivities}` in obsp, when 2-D.
fn move_adjacency(store: &Store, overlay: &mut Overlay) -> Result<()> {
    let mut moved = Vec::new();
    for name in ADJACENCY {
        let stored = format!("uns/neighbors/{name}");
        let two_d = match store.stored_node(&stored)? {
            Some(NodeMeta {
                kind: NodeKind::Array(a),
                ..
            }) => a.shape.len() == 2,
            Some(mut meta) => sparse_group(&mut meta),
            None => false,
        };
        if two_d {
            overlay.hidden.insert(stored.clone());
            overlay.prefixes.push((format!("obsp/{name}"), stored));
            moved.push(name.to_string());
        }
    }
    if moved.is_empty() {
        return Ok(());
    }
    if matches!(store.stored_node("obsp")?, Some(m) if matches!(m.kind, NodeKind::Group)) {
        overlay
            .extra_children
            .entry("obsp".into())
            .or_default()
            .extend(moved);
    } else {
        let attrs = dict_attrs();
        overlay.groups.insert("obsp".into(), (attrs, moved));
        overlay
            .extra_children
            .entry(String::new())
            .or_default()
            .push("obsp".into());
    }
    Ok(())
}

/// Gives a group tagged `h5sparse_format` (a pre-0.7 sparse matrix) the
/// encoding it has now; whether it was one.
pub(super) fn sparse_group(meta: &mut NodeMeta) -> bool {
    if !matches!(meta.kind, NodeKind::Group) {
        return false;
    }
    let kind = match meta.attrs.get("h5sparse_format").and_then(Value::as_str) {
        Some("csr") => "csr_matrix",
        Some("csc") => "csc_matrix",
        _ => return false,
    };
    let shape = meta
        .attrs
        .get("h5sparse_shape")
        .cloned()
        .unwrap_or(Value::Null);
    meta.attrs
        .insert("encoding-type".into(), Value::String(kind.into()));
    meta.attrs
        .insert("encoding-version".into(), Value::String("0.1.0".into()));
    meta.attrs.insert("shape".into(), shape);
    true
}
