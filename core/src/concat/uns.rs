//! uns: merged across inputs with a strategy (`same`, `unique`, `first`,
//! `only`), recursing into nested mappings as `anndata.concat` does, and
//! copied element by element from the input that supplies each value.

use crate::anndata::range_read::ReadSubset;
use serde_json::{Value, json};
use zarrs::array::ArrayBytes;

use super::options::Merge;
use crate::anndata::OutputStore;
use crate::anndata::Store;
use crate::anndata::element::{Element, Encoding};
use crate::anndata::store::NodeKind;
use crate::convert::{ConvertOptions, ConvertSummary, copy_element};
use crate::error::Result;

fn is_mapping(e: &Element) -> bool {
    matches!(e.encoding, Encoding::Dict) || (e.encoding == Encoding::Plain && e.array().is_none())
}

fn names(e: &Element) -> Vec<String> {
    e.children.iter().map(|c| c.name().to_string()).collect()
}

fn read_all(store: &Store, e: &Element) -> Result<ArrayBytes<'static>> {
    let array = store.array(&e.path)?;
    array
        .read_subset(&array.subset_all())
        .map_err(|err| store.err(&e.path, format!("cannot read data: {err}")))
}

/// Whether two elements hold the same content: encoding, attributes, array
/// shapes, dtypes and values (NaN equal to NaN), recursively.
pub fn same_content(sa: &Store, a: &Element, sb: &Store, b: &Element) -> Result<bool> {
    if a.encoding != b.encoding
        || a.meta.attrs != b.meta.attrs
        || a.children.len() != b.children.len()
    {
        return Ok(false);
    }
    match (&a.meta.kind, &b.meta.kind) {
        (NodeKind::Array(ma), NodeKind::Array(mb)) => {
            if ma.shape != mb.shape || ma.dtype != mb.dtype {
                return Ok(false);
            }
            Ok(read_all(sa, a)? == read_all(sb, b)?)
        }
        (NodeKind::Group, NodeKind::Group) => {
            for ca in &a.children {
                let Some(cb) = b.child(ca.name()) else {
                    return Ok(false);
                };
                if !same_content(sa, ca, sb, cb)? {
                    return Ok(false);
                }
            }
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// Merges the mappings `sources` (store and element per input, `None` when
/// an input lacks it) into the group at `path` of `out`. Returns whether
/// anything was kept.
pub fn merge_into(
    out: &OutputStore,
    path: &str,
    sources: &[(&Store, Option<&Element>)],
    strategy: Merge,
) -> Result<()> {
    let mut attrs = serde_json::Map::new();
    attrs.insert("encoding-type".into(), json!("dict"));
    attrs.insert("encoding-version".into(), json!("0.1.0"));
    out.write_group(path, &attrs)?;
    let present: Vec<(&Store, &Element)> = sources
        .iter()
        .filter_map(|(s, e)| e.map(|e| (*s, e)))
        .collect();
    merge_level(out, &present, strategy)?;
    Ok(())
}

fn merge_level(out: &OutputStore, ds: &[(&Store, &Element)], strategy: Merge) -> Result<bool> {
    let lists: Vec<Vec<String>> = ds.iter().map(|(_, e)| names(e)).collect();
    let join = if strategy == Merge::Same {
        super::index::Join::Inner
    } else {
        super::index::Join::Outer
    };
    let keys = super::join_keys_pub(&lists, join);
    let mut kept_any = false;
    for key in keys {
        let vals: Vec<(&Store, &Element)> = ds
            .iter()
            .filter_map(|(s, e)| e.child(&key).map(|c| (*s, c)))
            .collect();
        if vals.is_empty() {
            continue;
        }
        if vals.iter().all(|(_, e)| is_mapping(e)) {
            let path = &vals[0].1.path;
            let mut attrs = serde_json::Map::new();
            attrs.insert("encoding-type".into(), Value::from("dict"));
            attrs.insert("encoding-version".into(), Value::from("0.1.0"));
            out.write_group(path, &attrs)?;
            if merge_level(out, &vals, strategy)? {
                kept_any = true;
            } else {
                let dir = out.node_dir(path);
                std::fs::remove_dir_all(&dir)
                    .map_err(|e| out.err(path, format!("cannot remove: {e}")))?;
            }
            continue;
        }
        let chosen = match strategy {
            Merge::Same | Merge::Unique => {
                let (s0, e0) = vals[0];
                let mut all = true;
                for (s, e) in &vals[1..] {
                    if !same_content(s0, e0, s, e)? {
                        all = false;
                        break;
                    }
                }
                all.then_some(vals[0])
            }
            Merge::First => Some(vals[0]),
            Merge::Only => (vals.len() == 1).then(|| vals[0]),
        };
        if let Some((store, e)) = chosen {
            let mut summary = ConvertSummary::default();
            copy_element(store, out, e, &ConvertOptions::default(), &mut summary)?;
            kept_any = true;
        }
    }
    Ok(kept_any)
}
