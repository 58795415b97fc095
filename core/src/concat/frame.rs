//! Data frame columns (obs / var and data frames in obsm): reading each
//! anndata column encoding into memory, concatenating them with pandas'
//! dtype rules as `anndata.concat` applies them, reindexing onto a joined
//! index, comparing them for the merge strategies, and writing them back.

use serde_json::{Map, Value, json};
use zarrs::array::ArraySubset;

use super::index::read_strings;
use super::values::{Scalar, Values, promote};
use crate::anndata::element::{Element, Encoding};
use crate::anndata::layout::ArraySpec;
use crate::anndata::store::NodeKind;
use crate::anndata::{DType, Store};
use crate::error::{Error, Result};

/// One data frame column in memory. Masks are `true` where a value is missing.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// A numpy numeric or bool column.
    Num(Values),
    /// Strings without missing values (`string-array`).
    Str(Vec<String>),
    /// A categorical with string categories; code -1 is missing.
    Cat {
        /// Codes into `categories`.
        codes: Vec<i64>,
        /// The categories.
        categories: Vec<String>,
        /// Whether the categories are ordered.
        ordered: bool,
    },
    /// Masked integers (`nullable-integer`).
    NullInt {
        /// Values (arbitrary where masked).
        values: Values,
        /// Missing flags.
        mask: Vec<bool>,
    },
    /// Masked booleans (`nullable-boolean`).
    NullBool {
        /// Values (arbitrary where masked).
        values: Vec<bool>,
        /// Missing flags.
        mask: Vec<bool>,
    },
    /// Masked strings (`nullable-string-array`).
    NullStr {
        /// Values (arbitrary where masked).
        values: Vec<String>,
        /// Missing flags.
        mask: Vec<bool>,
    },
}

fn read_all_values(store: &Store, e: &Element) -> Result<Values> {
    let NodeKind::Array(meta) = &e.meta.kind else {
        return Err(store.err(&e.path, "expected an array"));
    };
    let n = meta.shape.first().copied().unwrap_or(0);
    super::matrix::read_values(store, &e.path, &meta.dtype, vec![0], vec![n])
}

fn member<'a>(store: &Store, e: &'a Element, name: &str) -> Result<&'a Element> {
    e.child(name)
        .ok_or_else(|| store.err(&e.path, format!("lacks \"{name}\"")))
}

fn bools(v: Values) -> Vec<bool> {
    match v {
        Values::Bool(b) => b,
        other => other.nonzero_mask(),
    }
}

fn codes_i64(v: &Values) -> Vec<i64> {
    match v.cast(&DType::Int64) {
        Ok(Values::I64(c)) => c,
        _ => Vec::new(),
    }
}

/// Reads a data frame column (any anndata column encoding).
pub fn read_column(store: &Store, e: &Element) -> Result<Column> {
    match e.encoding {
        Encoding::Categorical => {
            let codes = codes_i64(&read_all_values(store, member(store, e, "codes")?)?);
            let cats = member(store, e, "categories")?;
            let categories = match cats.array().map(|a| &a.dtype) {
                Some(DType::String) => read_strings(store, &cats.path)?,
                _ => {
                    return Err(store.err(
                        &cats.path,
                        "categories that are not strings are not supported yet",
                    ));
                }
            };
            let ordered = e
                .meta
                .attrs
                .get("ordered")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            Ok(Column::Cat {
                codes,
                categories,
                ordered,
            })
        }
        Encoding::NullableInteger => Ok(Column::NullInt {
            values: read_all_values(store, member(store, e, "values")?)?,
            mask: bools(read_all_values(store, member(store, e, "mask")?)?),
        }),
        Encoding::NullableBoolean => Ok(Column::NullBool {
            values: bools(read_all_values(store, member(store, e, "values")?)?),
            mask: bools(read_all_values(store, member(store, e, "mask")?)?),
        }),
        Encoding::NullableStringArray => Ok(Column::NullStr {
            values: read_strings(store, &member(store, e, "values")?.path)?,
            mask: bools(read_all_values(store, member(store, e, "mask")?)?),
        }),
        Encoding::StringArray => Ok(Column::Str(read_strings(store, &e.path)?)),
        Encoding::Array | Encoding::Plain if e.array().is_some_and(|a| a.shape.len() == 1) => {
            if e.array().is_some_and(|a| a.dtype == DType::String) {
                Ok(Column::Str(read_strings(store, &e.path)?))
            } else {
                Ok(Column::Num(read_all_values(store, e)?))
            }
        }
        other => Err(store.err(
            &e.path,
            format!(
                "data frame column of encoding {} is not supported yet",
                other.name()
            ),
        )),
    }
}

impl Column {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Column::Num(v) => v.len(),
            Column::Str(v) => v.len(),
            Column::Cat { codes, .. } => codes.len(),
            Column::NullInt { mask, .. }
            | Column::NullBool { mask, .. }
            | Column::NullStr { mask, .. } => mask.len(),
        }
    }

    /// Whether the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Strings (None = missing) of a string-like column.
    fn strings(&self) -> Option<Vec<Option<String>>> {
        match self {
            Column::Str(v) => Some(v.iter().cloned().map(Some).collect()),
            Column::Cat {
                codes, categories, ..
            } => Some(
                codes
                    .iter()
                    .map(|&c| (c >= 0).then(|| categories[c as usize].clone()))
                    .collect(),
            ),
            _ => None,
        }
    }

    /// Takes rows by index (`None` = missing), as pandas `reindex` does:
    /// ints become float64 with NaN, categoricals get code -1, nullable
    /// columns get masked entries. Returns an error for the cases pandas
    /// turns into object columns that anndata cannot store as such.
    pub fn take(&self, idx: &[Option<usize>]) -> Result<Column> {
        let any_missing = idx.iter().any(Option::is_none);
        let mask: Vec<bool> = idx.iter().map(Option::is_none).collect();
        Ok(match self {
            Column::Num(v) => {
                if !any_missing {
                    Column::Num(v.take(idx, Scalar::Int(0)))
                } else if v.dtype() == DType::Bool {
                    return Err(Error::option(
                        "a bool column would gain missing values (numpy object dtype): not supported yet",
                    ));
                } else {
                    let target = match v.dtype() {
                        DType::Float32 => DType::Float32,
                        _ => DType::Float64,
                    };
                    Column::Num(v.cast(&target)?.take(idx, Scalar::Float(f64::NAN)))
                }
            }
            Column::Str(v) => {
                let strings: Vec<Option<String>> =
                    idx.iter().map(|i| i.map(|i| v[i].clone())).collect();
                if any_missing {
                    object_strings(strings)
                } else {
                    Column::Str(strings.into_iter().flatten().collect())
                }
            }
            Column::Cat {
                codes,
                categories,
                ordered,
            } => Column::Cat {
                codes: idx.iter().map(|i| i.map_or(-1, |i| codes[i])).collect(),
                categories: categories.clone(),
                ordered: *ordered,
            },
            Column::NullInt { values, mask: m } => Column::NullInt {
                values: values.take(idx, Scalar::Int(0)),
                mask: idx.iter().map(|i| i.is_none_or(|i| m[i])).collect(),
            },
            Column::NullBool { values, mask: m } => Column::NullBool {
                values: idx.iter().map(|i| i.is_some_and(|i| values[i])).collect(),
                mask: idx.iter().map(|i| i.is_none_or(|i| m[i])).collect(),
            },
            Column::NullStr { values, mask: m } => Column::NullStr {
                values: idx
                    .iter()
                    .map(|i| i.map(|i| values[i].clone()).unwrap_or_default())
                    .collect(),
                mask: idx
                    .iter()
                    .zip(&mask)
                    .map(|(i, &miss)| miss || i.is_some_and(|i| m[i]))
                    .collect(),
            },
        })
    }

    /// pandas `Series.equals` after reindexing: same dtype, same values,
    /// missing in the same places (NaN equals NaN).
    pub fn equals(&self, other: &Column) -> bool {
        match (self, other) {
            (Column::Num(Values::F32(a)), Column::Num(Values::F32(b))) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
            }
            (Column::Num(Values::F64(a)), Column::Num(Values::F64(b))) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
            }
            (
                Column::Cat {
                    codes: ca,
                    categories: ka,
                    ordered: oa,
                },
                Column::Cat {
                    codes: cb,
                    categories: kb,
                    ordered: ob,
                },
            ) => oa == ob && ka == kb && ca == cb,
            (
                Column::NullInt {
                    values: va,
                    mask: ma,
                },
                Column::NullInt {
                    values: vb,
                    mask: mb,
                },
            ) => {
                va.dtype() == vb.dtype()
                    && ma == mb
                    && masked_equal(&codes_i64(va), &codes_i64(vb), ma)
            }
            (
                Column::NullBool {
                    values: va,
                    mask: ma,
                },
                Column::NullBool {
                    values: vb,
                    mask: mb,
                },
            ) => ma == mb && masked_equal(va, vb, ma),
            (
                Column::NullStr {
                    values: va,
                    mask: ma,
                },
                Column::NullStr {
                    values: vb,
                    mask: mb,
                },
            ) => ma == mb && masked_equal(va, vb, ma),
            _ => self == other,
        }
    }
}

fn masked_equal<T: PartialEq>(a: &[T], b: &[T], mask: &[bool]) -> bool {
    a.len() == b.len() && a.iter().zip(b).zip(mask).all(|((x, y), &m)| m || x == y)
}

/// An object column of strings as anndata stores it: a categorical (sorted
/// categories) when it has missing values or repeats, else a string array.
fn object_strings(values: Vec<Option<String>>) -> Column {
    let mut cats: Vec<String> = values.iter().flatten().cloned().collect();
    cats.sort();
    cats.dedup();
    let cats = natsorted(cats);
    if cats.len() < values.len() {
        let pos: std::collections::HashMap<&str, i64> = cats
            .iter()
            .enumerate()
            .map(|(i, c)| (c.as_str(), i as i64))
            .collect();
        let codes = values
            .iter()
            .map(|v| v.as_deref().map_or(-1, |s| pos[s]))
            .collect();
        Column::Cat {
            codes,
            categories: cats.clone(),
            ordered: false,
        }
    } else {
        Column::Str(values.into_iter().flatten().collect())
    }
}

/// anndata's `strings_to_categoricals`, applied when it writes obs and var:
/// a string column (plain or nullable) with fewer distinct values than rows
/// (repeats or missing values) becomes a categorical with natsorted
/// categories.
pub fn strings_to_categoricals(columns: &mut [(String, Column)]) {
    for (_, col) in columns.iter_mut() {
        let values: Option<Vec<Option<String>>> = match col {
            Column::Str(v) => Some(v.iter().cloned().map(Some).collect()),
            Column::NullStr { values, mask } => Some(
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
fn natural_key(s: &str) -> Vec<(bool, u128, String)> {
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

/// Concatenates one column across inputs (`None`: the input lacks the
/// column and contributes `len` missing rows), as `pd.concat` after
/// anndata's `unify_dtypes` does.
pub fn concat_column(parts: &[(Option<&Column>, usize)]) -> Result<Column> {
    let present: Vec<&Column> = parts.iter().filter_map(|(c, _)| *c).collect();
    let has_missing = parts.iter().any(|(c, n)| c.is_none() && *n > 0);
    let all = |f: fn(&Column) -> bool| present.iter().all(|c| f(c));
    let missing_idx = |n: usize| -> Vec<Option<usize>> { vec![None; n] };
    if present.is_empty() {
        return Err(Error::option("internal: column missing from every input"));
    }

    // Categoricals: union of categories (natural order) when unordered;
    // kept when all ordered ones agree; else object strings.
    if all(|c| matches!(c, Column::Cat { .. })) {
        let cats: Vec<(&Vec<i64>, &Vec<String>, bool)> = present
            .iter()
            .map(|c| match c {
                Column::Cat {
                    codes,
                    categories,
                    ordered,
                } => (codes, categories, *ordered),
                _ => unreachable!(),
            })
            .collect();
        let any_ordered = cats.iter().any(|c| c.2);
        let mut union: Vec<String> = cats.iter().flat_map(|c| c.1.iter().cloned()).collect();
        union.sort();
        union.dedup();
        let target = if !any_ordered {
            Some((natsorted(union), false))
        } else {
            let with: Vec<_> = cats.iter().filter(|c| !c.1.is_empty()).collect();
            let same = !with.is_empty()
                && with.iter().all(|c| {
                    c.2 && c.1.len() == union.len()
                        && c.1.iter().collect::<std::collections::HashSet<_>>().len() == union.len()
                })
                && with.windows(2).all(|w| w[0].1 == w[1].1);
            same.then(|| (with[0].1.clone(), true))
        };
        if let Some((categories, ordered)) = target {
            let pos: std::collections::HashMap<&str, i64> = categories
                .iter()
                .enumerate()
                .map(|(i, c)| (c.as_str(), i as i64))
                .collect();
            let mut codes = Vec::new();
            for (c, n) in parts {
                match c {
                    Some(Column::Cat {
                        codes: cs,
                        categories: ks,
                        ..
                    }) => codes.extend(cs.iter().map(|&k| {
                        if k < 0 {
                            -1
                        } else {
                            pos[ks[k as usize].as_str()]
                        }
                    })),
                    _ => codes.extend(std::iter::repeat_n(-1, *n)),
                }
            }
            return Ok(Column::Cat {
                codes,
                categories,
                ordered,
            });
        }
    }
    // Strings (and categoricals mixed with strings): object column.
    if present.iter().all(|c| c.strings().is_some()) {
        let mut values = Vec::new();
        for (c, n) in parts {
            match c.and_then(Column::strings) {
                Some(s) => values.extend(s),
                None => values.extend(std::iter::repeat_n(None, *n)),
            }
        }
        return Ok(object_strings(values));
    }
    // Plain numbers.
    if all(|c| matches!(c, Column::Num(_))) {
        let dtypes: Vec<DType> = present
            .iter()
            .map(|c| match c {
                Column::Num(v) => v.dtype(),
                _ => unreachable!(),
            })
            .collect();
        let mut dtype = dtypes[0].clone();
        for d in &dtypes[1..] {
            dtype =
                promote(&dtype, d).ok_or_else(|| Error::option("incompatible column dtypes"))?;
        }
        if has_missing && dtype == DType::Bool {
            // anndata's unify_dtypes: bool with missing rows -> nullable boolean.
            return Ok(nullable_bool(parts));
        }
        if has_missing && !matches!(dtype, DType::Float32 | DType::Float64) {
            dtype = DType::Float64;
        }
        let mut out = Values::zeros(&dtype, 0)?;
        for (c, n) in parts {
            match c {
                Some(Column::Num(v)) => out.extend(&v.cast(&dtype)?)?,
                _ => out.extend(
                    &Values::zeros(&dtype, 0)?.take(&missing_idx(*n), Scalar::Float(f64::NAN)),
                )?,
            }
        }
        return Ok(Column::Num(out));
    }
    // Nullable booleans (with plain bools).
    if all(|c| matches!(c, Column::NullBool { .. } | Column::Num(Values::Bool(_)))) {
        return Ok(nullable_bool(parts));
    }
    // Nullable integers (with plain integers).
    if all(|c| {
        matches!(c, Column::NullInt { .. })
            || matches!(c, Column::Num(v) if !matches!(v.dtype(), DType::Bool | DType::Float32 | DType::Float64))
    }) {
        let mut dtype: Option<DType> = None;
        for c in &present {
            let d = match c {
                Column::NullInt { values, .. } | Column::Num(values) => values.dtype(),
                _ => unreachable!(),
            };
            dtype = Some(match dtype {
                None => d,
                Some(prev) => {
                    promote(&prev, &d).ok_or_else(|| Error::option("incompatible column dtypes"))?
                }
            });
        }
        let dtype = dtype.unwrap_or(DType::Int64);
        let mut values = Values::zeros(&dtype, 0)?;
        let mut mask = Vec::new();
        for (c, n) in parts {
            match c {
                Some(Column::NullInt { values: v, mask: m }) => {
                    values.extend(&v.cast(&dtype)?)?;
                    mask.extend_from_slice(m);
                }
                Some(Column::Num(v)) => {
                    values.extend(&v.cast(&dtype)?)?;
                    mask.extend(std::iter::repeat_n(false, v.len()));
                }
                _ => {
                    values.extend(&Values::zeros(&dtype, *n)?)?;
                    mask.extend(std::iter::repeat_n(true, *n));
                }
            }
        }
        return Ok(Column::NullInt { values, mask });
    }
    // Nullable strings.
    if all(|c| matches!(c, Column::NullStr { .. })) {
        let mut values = Vec::new();
        let mut mask = Vec::new();
        for (c, n) in parts {
            match c {
                Some(Column::NullStr { values: v, mask: m }) => {
                    values.extend_from_slice(v);
                    mask.extend_from_slice(m);
                }
                _ => {
                    values.extend(std::iter::repeat_n(String::new(), *n));
                    mask.extend(std::iter::repeat_n(true, *n));
                }
            }
        }
        return Ok(Column::NullStr { values, mask });
    }
    Err(Error::option(format!(
        "cannot concatenate data frame columns of these kinds yet: {}",
        present
            .iter()
            .map(|c| kind_name(c))
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Nullable and plain booleans concatenated into a nullable boolean column;
/// absent parts become masked rows.
fn nullable_bool(parts: &[(Option<&Column>, usize)]) -> Column {
    let mut values = Vec::new();
    let mut mask = Vec::new();
    for (c, n) in parts {
        match c {
            Some(Column::NullBool { values: v, mask: m }) => {
                values.extend_from_slice(v);
                mask.extend_from_slice(m);
            }
            Some(Column::Num(Values::Bool(b))) => {
                values.extend_from_slice(b);
                mask.extend(std::iter::repeat_n(false, b.len()));
            }
            _ => {
                values.extend(std::iter::repeat_n(false, *n));
                mask.extend(std::iter::repeat_n(true, *n));
            }
        }
    }
    Column::NullBool { values, mask }
}

fn kind_name(c: &Column) -> String {
    match c {
        Column::Num(v) => v.dtype().display_name(),
        Column::Str(_) => "string".into(),
        Column::Cat { ordered: true, .. } => "ordered categorical".into(),
        Column::Cat { .. } => "categorical".into(),
        Column::NullInt { .. } => "nullable integer".into(),
        Column::NullBool { .. } => "nullable boolean".into(),
        Column::NullStr { .. } => "nullable string".into(),
    }
}

fn attrs(encoding: &str, version: &str) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("encoding-type".into(), json!(encoding));
    m.insert("encoding-version".into(), json!(version));
    m
}

fn write_array(
    out: &Store,
    path: &str,
    dtype: DType,
    len: u64,
    chunk: u64,
    attrs: &Map<String, Value>,
    data: zarrs::array::ArrayBytes<'static>,
) -> Result<()> {
    let spec = ArraySpec::new(vec![len], dtype, vec![chunk.min(len).max(1)]);
    let doc = spec
        .to_metadata(out.format())
        .ok_or_else(|| out.err(path, "no zarr spelling for dtype"))?;
    out.write_array_meta(path, &doc, attrs)?;
    if len > 0 {
        let subset =
            ArraySubset::new_with_start_shape(vec![0], vec![len]).map_err(|e| out.err(path, e))?;
        out.array(path)?
            .store_array_subset(&subset, data)
            .map_err(|e| out.err(path, format!("cannot write: {e}")))?;
    }
    Ok(())
}

/// Writes numbers or booleans as an `array` element.
fn write_values_array(out: &Store, path: &str, values: &Values, chunk: u64) -> Result<()> {
    write_array(
        out,
        path,
        values.dtype(),
        values.len() as u64,
        chunk,
        &attrs("array", "0.2.0"),
        values.to_array_bytes(),
    )
}

/// Writes strings as a `string-array` element.
pub fn write_strings(out: &Store, path: &str, values: &[String], chunk: u64) -> Result<()> {
    write_array_strings(out, path, values, chunk, &attrs("string-array", "0.2.0"))
}

fn write_array_strings(
    out: &Store,
    path: &str,
    values: &[String],
    chunk: u64,
    a: &Map<String, Value>,
) -> Result<()> {
    let len = values.len() as u64;
    let spec = ArraySpec::new(vec![len], DType::String, vec![chunk.min(len).max(1)]);
    let doc = spec
        .to_metadata(out.format())
        .ok_or_else(|| out.err(path, "no zarr spelling"))?;
    out.write_array_meta(path, &doc, a)?;
    if len > 0 {
        let subset =
            ArraySubset::new_with_start_shape(vec![0], vec![len]).map_err(|e| out.err(path, e))?;
        out.array(path)?
            .store_array_subset(&subset, values.to_vec())
            .map_err(|e| out.err(path, format!("cannot write: {e}")))?;
    }
    Ok(())
}

/// Writes a column at `path` with its anndata encoding.
pub fn write_column(out: &Store, path: &str, column: &Column, chunk: u64) -> Result<()> {
    match column {
        Column::Num(v) => write_values_array(out, path, v, chunk),
        Column::Str(v) => write_strings(out, path, v, chunk),
        Column::Cat {
            codes,
            categories,
            ordered,
        } => {
            let mut a = attrs("categorical", "0.2.0");
            a.insert("ordered".into(), json!(ordered));
            out.write_group(path, &a)?;
            let code_dtype = match categories.len() {
                n if n < 128 => DType::Int8,
                n if n < 32768 => DType::Int16,
                n if n < (1 << 31) => DType::Int32,
                _ => DType::Int64,
            };
            let codes = Values::I64(codes.clone()).cast(&code_dtype)?;
            write_values_array(out, &format!("{path}/codes"), &codes, chunk)?;
            write_strings(out, &format!("{path}/categories"), categories, chunk)
        }
        Column::NullInt { values, mask } => {
            out.write_group(path, &attrs("nullable-integer", "0.1.0"))?;
            write_values_array(out, &format!("{path}/values"), values, chunk)?;
            write_values_array(
                out,
                &format!("{path}/mask"),
                &Values::Bool(mask.clone()),
                chunk,
            )
        }
        Column::NullBool { values, mask } => {
            out.write_group(path, &attrs("nullable-boolean", "0.1.0"))?;
            write_values_array(
                out,
                &format!("{path}/values"),
                &Values::Bool(values.clone()),
                chunk,
            )?;
            write_values_array(
                out,
                &format!("{path}/mask"),
                &Values::Bool(mask.clone()),
                chunk,
            )
        }
        Column::NullStr { values, mask } => {
            out.write_group(path, &attrs("nullable-string-array", "0.1.0"))?;
            write_strings(out, &format!("{path}/values"), values, chunk)?;
            write_values_array(
                out,
                &format!("{path}/mask"),
                &Values::Bool(mask.clone()),
                chunk,
            )
        }
    }
}

/// Writes a data frame group: the index column and `columns` in order.
pub fn write_frame(
    out: &Store,
    path: &str,
    index_name: Option<&str>,
    index: &[String],
    columns: &[(String, Column)],
    chunk: u64,
) -> Result<()> {
    let index_col = index_name.unwrap_or("_index");
    let mut a = attrs("dataframe", "0.2.0");
    a.insert("_index".into(), json!(index_col));
    a.insert(
        "column-order".into(),
        json!(columns.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>()),
    );
    out.write_group(path, &a)?;
    write_strings(out, &format!("{path}/{index_col}"), index, chunk)?;
    for (name, col) in columns {
        write_column(out, &format!("{path}/{name}"), col, chunk)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn natsort_orders_numbers_numerically() {
        assert_eq!(
            natsorted(s(&["a10", "a2", "b", "a1"])),
            s(&["a1", "a2", "a10", "b"])
        );
    }

    #[test]
    fn concat_rules_follow_pandas() {
        let ints = Column::Num(Values::I32(vec![1, 2]));
        let c = concat_column(&[(Some(&ints), 2), (None, 1)]).expect("concat");
        let Column::Num(Values::F64(v)) = c else {
            panic!("float64 expected")
        };
        assert!(v[2].is_nan());
        let b = Column::Num(Values::Bool(vec![true]));
        assert!(matches!(
            concat_column(&[(Some(&b), 1), (None, 2)]).expect("bool"),
            Column::NullBool { .. }
        ));
        let c1 = Column::Cat {
            codes: vec![0, 1],
            categories: s(&["x", "a10"]),
            ordered: false,
        };
        let c2 = Column::Cat {
            codes: vec![0],
            categories: s(&["a2"]),
            ordered: false,
        };
        let Column::Cat {
            codes, categories, ..
        } = concat_column(&[(Some(&c1), 2), (Some(&c2), 1)]).expect("cat")
        else {
            panic!("categorical expected")
        };
        assert_eq!(categories, s(&["a2", "a10", "x"]));
        assert_eq!(codes, vec![2, 1, 0]);
        let st = Column::Str(s(&["p", "q"]));
        assert_eq!(
            concat_column(&[(Some(&st), 2), (Some(&st), 2)]).expect("str"),
            Column::Cat {
                codes: vec![0, 1, 0, 1],
                categories: s(&["p", "q"]),
                ordered: false
            }
        );
    }
}
