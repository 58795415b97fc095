//! Writing data frames: columns (numbers, strings, categoricals, nullable
//! kinds) created and filled a block of rows at a time, indexes, whole
//! frames; and turning string columns into categoricals as anndata does.

use super::*;
use crate::anndata::OutputStore;

/// anndata's `strings_to_categoricals`, applied when it writes obs and var:
/// a string column (plain or nullable) with fewer distinct values than rows
/// (repeats or missing values) becomes a categorical with natsorted
/// categories.
pub fn strings_to_categoricals(columns: &mut [(String, Column)]) {
    for (_, col) in columns.iter_mut() {
        let values: Option<Vec<Option<String>>> = match col {
            Column::Str(v) => Some(v.iter().cloned().map(Some).collect()),
            Column::NullStr { values, mask, .. } => Some(
                values
                    .iter()
                    .zip(mask.iter())
                    .map(|(v, &m)| (!m).then(|| v.clone()))
                    .collect(),
            ),
            _ => None,
        };
        if let Some(values) = values
            && let c @ Column::Cat { .. } = object_strings(values)
        {
            *col = c;
        }
    }
}

/// Natural sort key: digit runs compare as numbers, other runs as text,
/// after NFD normalization (natsort's default), so "ü" sorts beside "u".
pub(super) fn natural_key(s: &str) -> Vec<(bool, u128, String)> {
    use unicode_normalization::UnicodeNormalization;
    let s: String = s.nfd().collect();
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        let digit = c.is_ascii_digit();
        let mut run = String::new();
        while let Some(&d) = chars.peek() {
            if d.is_ascii_digit() != digit {
                break;
            }
            run.push(d);
            chars.next();
        }
        if digit {
            out.push((true, run.parse().unwrap_or(u128::MAX), run));
        } else {
            out.push((false, 0, run));
        }
    }
    out
}

/// Sorts strings the way `natsort.natsorted` does for plain names.
pub fn natsorted(mut v: Vec<String>) -> Vec<String> {
    v.sort_by(|a, b| {
        let (ka, kb) = (natural_key(a), natural_key(b));
        for (x, y) in ka.iter().zip(&kb) {
            let ord = match (x.0, y.0) {
                (true, true) => x.1.cmp(&y.1).then_with(|| x.2.cmp(&y.2)),
                (false, false) => x.2.cmp(&y.2),
                // numbers sort before text, as natsort's tuples do
                (true, false) => std::cmp::Ordering::Less,
                (false, true) => std::cmp::Ordering::Greater,
            };
            if ord != std::cmp::Ordering::Equal {
                return ord;
            }
        }
        ka.len().cmp(&kb.len())
    });
    v
}

pub(super) fn attrs(encoding: &str, version: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("encoding-type".into(), json!(encoding));
    m.insert("encoding-version".into(), json!(version));
    m
}

/// Writes the metadata of a 1-D array of `len` elements.
pub(super) fn create_array(
    out: &OutputStore,
    path: &str,
    dtype: DType,
    len: u64,
    chunk: u64,
    attrs: &Map<String, Value>,
) -> Result<()> {
    let spec = ArraySpec::new(vec![len], dtype, vec![chunk.min(len).max(1)]);
    out.write_array(path, spec, attrs)
}

/// Writes elements `start..start + len` of a 1-D array.
pub(super) fn store_rows<'d>(
    out: &OutputStore,
    path: &str,
    start: u64,
    len: usize,
    data: impl zarrs::array::IntoArrayBytes<'d>,
) -> Result<()> {
    if len == 0 {
        return Ok(());
    }
    let subset = ArraySubset::new_with_start_shape(vec![start], vec![len as u64])
        .map_err(|e| out.err(path, e))?;
    out.writable_array(path)?
        .store_array_subset(&subset, data)
        .map_err(|e| out.err(path, format!("cannot write: {e}")))
}

pub(super) fn store_values(
    out: &OutputStore,
    path: &str,
    start: u64,
    values: &Values,
) -> Result<()> {
    store_rows(out, path, start, values.len(), values.to_array_bytes())
}

pub(super) fn store_bools(
    out: &OutputStore,
    path: &str,
    start: u64,
    values: &[bool],
) -> Result<()> {
    store_values(out, path, start, &Values::Bool(values.to_vec()))
}

pub(super) fn store_strings(
    out: &OutputStore,
    path: &str,
    start: u64,
    values: &[String],
) -> Result<()> {
    store_rows(out, path, start, values.len(), values.to_vec())
}

/// The smallest signed integer dtype anndata uses for the codes of `n`
/// categories.
pub(super) fn code_dtype(n: usize) -> DType {
    match n {
        n if n < 128 => DType::Int8,
        n if n < 32768 => DType::Int16,
        n if n < (1 << 31) => DType::Int32,
        _ => DType::Int64,
    }
}

/// Writes the metadata of a `string-array` element of `len` strings.
pub(super) fn create_string_array(
    out: &OutputStore,
    path: &str,
    len: u64,
    chunk: u64,
) -> Result<()> {
    let a = attrs("string-array", "0.2.0");
    create_array(out, path, DType::String, len, chunk, &a)
}

/// Writes a `string-array` element whole.
pub fn write_strings(out: &OutputStore, path: &str, values: &[String], chunk: u64) -> Result<()> {
    create_string_array(out, path, values.len() as u64, chunk)?;
    store_strings(out, path, 0, values)
}

/// Writes the metadata of a column of `head`'s kind with `len` rows at
/// `path` (and, for a categorical, its categories), to be filled with
/// [`write_column_rows`].
pub fn create_column(
    out: &OutputStore,
    path: &str,
    head: &Column,
    len: u64,
    chunk: u64,
) -> Result<()> {
    let array = |sub: &str, dtype: DType, encoding: &str| {
        create_array(
            out,
            &format!("{path}/{sub}"),
            dtype,
            len,
            chunk,
            &attrs(encoding, "0.2.0"),
        )
    };
    match head {
        Column::Num(v) => create_array(out, path, v.dtype(), len, chunk, &attrs("array", "0.2.0")),
        Column::Str(_) | Column::BoolObject(_) => create_string_array(out, path, len, chunk),
        Column::Cat {
            categories,
            ordered,
            ..
        } => {
            let mut a = attrs("categorical", "0.2.0");
            a.insert("ordered".into(), json!(ordered));
            out.write_group(path, &a)?;
            array("codes", code_dtype(categories.len()), "array")?;
            let cats_path = format!("{path}/categories");
            match categories {
                Categories::Str(v) => write_strings(out, &cats_path, v, chunk),
                Categories::Num(v) => {
                    let n = v.len() as u64;
                    create_array(
                        out,
                        &cats_path,
                        v.dtype(),
                        n,
                        chunk,
                        &attrs("array", "0.2.0"),
                    )?;
                    store_values(out, &cats_path, 0, v)
                }
            }
        }
        Column::NullInt { values, .. } => {
            out.write_group(path, &attrs("nullable-integer", "0.1.0"))?;
            array("values", values.dtype(), "array")?;
            array("mask", DType::Bool, "array")
        }
        Column::NullBool { .. } => {
            out.write_group(path, &attrs("nullable-boolean", "0.1.0"))?;
            array("values", DType::Bool, "array")?;
            array("mask", DType::Bool, "array")
        }
        Column::NullStr { na, .. } => {
            let mut a = attrs("nullable-string-array", "0.1.0");
            a.insert("na-value".into(), json!(na.attr()));
            out.write_group(path, &a)?;
            array("values", DType::String, "string-array")?;
            array("mask", DType::Bool, "array")
        }
    }
}

/// Writes `column`'s rows at `start..` of a column made by [`create_column`].
pub fn write_column_rows(out: &OutputStore, path: &str, column: &Column, start: u64) -> Result<()> {
    let sub = |name: &str| format!("{path}/{name}");
    match column {
        Column::Num(v) => store_values(out, path, start, v),
        Column::Str(v) => store_strings(out, path, start, v),
        Column::BoolObject(v) => {
            let text = |b: &Option<bool>| match b {
                Some(true) => "True",
                Some(false) => "False",
                None => "nan",
            };
            let texts: Vec<String> = v.iter().map(|b| text(b).to_string()).collect();
            store_strings(out, path, start, &texts)
        }
        Column::Cat {
            codes, categories, ..
        } => {
            let codes = Values::I64(codes.clone()).cast(&code_dtype(categories.len()))?;
            store_values(out, &sub("codes"), start, &codes)
        }
        Column::NullInt { values, mask } => {
            store_values(out, &sub("values"), start, values)?;
            store_bools(out, &sub("mask"), start, mask)
        }
        Column::NullBool { values, mask } => {
            store_bools(out, &sub("values"), start, values)?;
            store_bools(out, &sub("mask"), start, mask)
        }
        Column::NullStr { values, mask, .. } => {
            store_strings(out, &sub("values"), start, values)?;
            store_bools(out, &sub("mask"), start, mask)
        }
    }
}

/// Writes a whole column at `path` with its anndata encoding.
pub fn write_column(out: &OutputStore, path: &str, column: &Column, chunk: u64) -> Result<()> {
    create_column(out, path, column, column.len() as u64, chunk)?;
    write_column_rows(out, path, column, 0)
}

/// How a data frame's index is stored: as a `string-array` (`None`), or
/// (pandas 3, anndata 0.13) as a `nullable-string-array` with this `na-value`.
pub type IndexNa = Option<NaValue>;

/// How a frame's index is stored (see [`IndexNa`]).
pub fn index_na(frame: &Element) -> IndexNa {
    let col = frame.meta.attrs.get("_index").and_then(Value::as_str)?;
    let e = frame.child(col)?;
    (e.encoding == Encoding::NullableStringArray).then(|| NaValue::of(e))
}

/// The index storage of a combined index: nullable (with the first
/// input's `na-value`) when every input's is, as pandas keeps a `string`
/// dtype only when all parts have it; else plain strings.
pub fn common_index_na(mut each: impl Iterator<Item = IndexNa>) -> IndexNa {
    let first = each.next()??;
    each.all(|na| na.is_some()).then_some(first)
}

/// Index names as the column they are stored as: made with
/// [`create_column`] and written with [`write_column_rows`].
pub fn index_column(na: IndexNa, names: Vec<String>) -> Column {
    match na {
        None => Column::Str(names),
        Some(na) => Column::NullStr {
            mask: vec![false; names.len()],
            values: names,
            na,
        },
    }
}

/// Writes a data frame group's attributes (its index column and column
/// order); returns the index array's path.
pub fn write_frame_group(
    out: &OutputStore,
    path: &str,
    index_name: Option<&str>,
    columns: &[String],
) -> Result<String> {
    let index_col = index_name.unwrap_or("_index");
    let mut a = attrs("dataframe", "0.2.0");
    a.insert("_index".into(), json!(index_col));
    a.insert("column-order".into(), json!(columns));
    out.write_group(path, &a)?;
    Ok(format!("{path}/{index_col}"))
}

/// Writes a data frame group held in memory: the index and `columns`.
pub fn write_frame(
    out: &OutputStore,
    path: &str,
    (index_name, na): (Option<&str>, &IndexNa),
    index: &[String],
    columns: &[(String, Column)],
    chunk: u64,
) -> Result<()> {
    let names: Vec<String> = columns.iter().map(|(n, _)| n.clone()).collect();
    let index_path = write_frame_group(out, path, index_name, &names)?;
    write_column(out, &index_path, &index_column(*na, index.to_vec()), chunk)?;
    for (name, col) in columns {
        write_column(out, &format!("{path}/{name}"), col, chunk)?;
    }
    Ok(())
}
