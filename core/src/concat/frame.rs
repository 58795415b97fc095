//! Data frame columns (obs / var and data frames in obsm): reading each
//! anndata column encoding into memory, concatenating them with pandas'
//! dtype rules as `anndata.concat` applies them, reindexing onto a joined
//! index, comparing them for the merge strategies, and writing them back.

use serde_json::{Map, Value, json};
use zarrs::array::ArraySubset;

use super::column_concat::ColumnTarget;
use super::index::{read_raw_strings, read_strings, read_strings_range};
use super::values::{Scalar, Values};
use crate::anndata::element::{Element, Encoding};
use crate::anndata::layout::ArraySpec;
use crate::anndata::store::NodeKind;
use crate::anndata::{DType, Store};
use crate::error::{Error, Result};

mod write;

pub use write::*;

/// What a missing value of a `nullable-string-array` reads as (its
/// `na-value` attribute): `pd.NA` (pandas' `string` dtype, and what anndata
/// assumes when the attribute is absent) or NaN (pandas 3's default `str`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NaValue {
    /// `pd.NA` (`"NA"`).
    Na,
    /// `np.nan` (`"NaN"`).
    NaN,
}

impl NaValue {
    /// From an element's attributes (absent: `NA`, as anndata reads it).
    pub fn of(e: &Element) -> NaValue {
        match e.meta.attrs.get("na-value").and_then(Value::as_str) {
            Some("NaN") => NaValue::NaN,
            _ => NaValue::Na,
        }
    }

    /// The attribute's spelling.
    pub fn attr(self) -> &'static str {
        match self {
            NaValue::Na => "NA",
            NaValue::NaN => "NaN",
        }
    }
}

/// The categories of a categorical column.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Categories {
    /// Strings (stored as a `string-array`).
    Str(Vec<String>),
    /// Numbers or booleans (stored as an `array`).
    Num(Values),
}

impl Categories {
    /// Number of categories.
    pub fn len(&self) -> usize {
        match self {
            Categories::Str(v) => v.len(),
            Categories::Num(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One data frame column in memory. Masks are `true` where a value is missing.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// A numpy numeric or bool column.
    Num(Values),
    /// Strings without missing values (`string-array`).
    Str(Vec<String>),
    /// A categorical; code -1 is missing.
    Cat {
        /// Codes into `categories`.
        codes: Vec<i64>,
        /// The categories.
        categories: Categories,
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
        /// What a missing value reads as.
        na: NaValue,
    },
    /// A numpy object column of booleans with missing values (a bool
    /// column reindexed with new rows): anndata stores it as the texts
    /// "True", "False" and "nan" and never makes it a categorical.
    BoolObject(Vec<Option<bool>>),
}

fn read_range(store: &Store, e: &Element, start: u64, len: u64) -> Result<Values> {
    let NodeKind::Array(meta) = &e.meta.kind else {
        return Err(store.err(&e.path, "expected an array"));
    };
    super::matrix::read_values(store, &e.path, &meta.dtype, vec![start], vec![len])
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

/// Length of a 1-D array element.
fn array_len(store: &Store, e: &Element) -> Result<u64> {
    match e.array() {
        Some(a) if a.shape.len() == 1 => Ok(a.shape[0]),
        _ => Err(store.err(&e.path, "expected a 1-D array")),
    }
}

/// The layout of one stored column, found from its metadata (and, for a
/// categorical, its categories), from which row ranges are read.
#[derive(Debug, Clone)]
enum Stored {
    Num(DType),
    Str,
    Cat {
        categories: Categories,
        ordered: bool,
    },
    NullInt(DType),
    NullBool,
    NullStr(NaValue),
}

/// Reads row ranges of one data frame column (any anndata column
/// encoding), so that a long column is never held whole.
pub struct ColumnReader<'a> {
    store: &'a Store,
    element: &'a Element,
    stored: Stored,
    len: u64,
}

impl<'a> ColumnReader<'a> {
    /// Opens a column: checks its encoding and members, reads categories.
    pub fn open(store: &'a Store, e: &'a Element) -> Result<Self> {
        let one_d = |name: &str| -> Result<(&Element, u64)> {
            let m = member(store, e, name)?;
            Ok((m, array_len(store, m)?))
        };
        let (stored, len) = match e.encoding {
            Encoding::Categorical => {
                let (_, len) = one_d("codes")?;
                let cats = member(store, e, "categories")?;
                let categories = match cats.array().map(|a| (&a.dtype, a.shape.len())) {
                    Some((DType::String, 1)) => Categories::Str(read_strings(store, &cats.path)?),
                    Some((_, 1)) => {
                        Categories::Num(read_range(store, cats, 0, array_len(store, cats)?)?)
                    }
                    _ => return Err(store.err(&cats.path, "categories are not a 1-D array")),
                };
                let ordered = e
                    .meta
                    .attrs
                    .get("ordered")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                (
                    Stored::Cat {
                        categories,
                        ordered,
                    },
                    len,
                )
            }
            Encoding::NullableInteger => {
                let (values, len) = one_d("values")?;
                let dtype = values
                    .array()
                    .map(|a| a.dtype.clone())
                    .unwrap_or(DType::Int64);
                (Stored::NullInt(dtype), len)
            }
            Encoding::NullableBoolean => (Stored::NullBool, one_d("values")?.1),
            Encoding::NullableStringArray => (Stored::NullStr(NaValue::of(e)), one_d("values")?.1),
            Encoding::StringArray => (Stored::Str, array_len(store, e)?),
            Encoding::Array | Encoding::Plain if e.array().is_some_and(|a| a.shape.len() == 1) => {
                let dtype = e.array().map(|a| a.dtype.clone()).unwrap_or(DType::Float64);
                let len = array_len(store, e)?;
                if dtype == DType::String {
                    (Stored::Str, len)
                } else {
                    (Stored::Num(dtype), len)
                }
            }
            other => {
                return Err(store.err(
                    &e.path,
                    format!(
                        "data frame column of encoding {} is not supported yet",
                        other.name()
                    ),
                ));
            }
        };
        Ok(ColumnReader {
            store,
            element: e,
            stored,
            len,
        })
    }

    /// Number of rows.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The column with no rows: its kind, dtype and categories.
    pub fn head(&self) -> Result<Column> {
        Ok(match &self.stored {
            Stored::Num(d) => Column::Num(Values::empty(d)?),
            Stored::Str => Column::Str(Vec::new()),
            Stored::Cat {
                categories,
                ordered,
            } => Column::Cat {
                codes: Vec::new(),
                categories: categories.clone(),
                ordered: *ordered,
            },
            Stored::NullInt(d) => Column::NullInt {
                values: Values::empty(d)?,
                mask: Vec::new(),
            },
            Stored::NullBool => Column::NullBool {
                values: Vec::new(),
                mask: Vec::new(),
            },
            Stored::NullStr(na) => Column::NullStr {
                values: Vec::new(),
                mask: Vec::new(),
                na: *na,
            },
        })
    }

    /// Rows `start..start + len` as stored (see [`read_raw_strings`]) when
    /// the column is plain strings stored with variable-length values, with
    /// no `String` made per value; `None` otherwise.
    pub fn read_raw(&self, start: u64, len: u64) -> Result<Option<(String, Vec<usize>)>> {
        if !matches!(self.stored, Stored::Str) {
            return Ok(None);
        }
        read_raw_strings(self.store, &self.element.path, start, len)
    }

    /// Reads rows `start..start + len`.
    pub fn read(&self, start: u64, len: u64) -> Result<Column> {
        let (store, e) = (self.store, self.element);
        let part = |name: &str| -> Result<Values> {
            read_range(store, member(store, e, name)?, start, len)
        };
        let mask = || -> Result<Vec<bool>> { Ok(bools(part("mask")?)) };
        Ok(match &self.stored {
            Stored::Num(_) => Column::Num(read_range(store, e, start, len)?),
            Stored::Str => Column::Str(read_strings_range(store, &e.path, start, len)?),
            Stored::Cat {
                categories,
                ordered,
            } => {
                let codes = codes_i64(&part("codes")?);
                if let Some(bad) = codes
                    .iter()
                    .find(|&&c| c < -1 || c >= categories.len() as i64)
                {
                    return Err(store.err(
                        &e.path,
                        format!(
                            "code {bad} out of range for {} categories",
                            categories.len()
                        ),
                    ));
                }
                Column::Cat {
                    codes,
                    categories: categories.clone(),
                    ordered: *ordered,
                }
            }
            Stored::NullInt(_) => Column::NullInt {
                values: part("values")?,
                mask: mask()?,
            },
            Stored::NullBool => Column::NullBool {
                values: bools(part("values")?),
                mask: mask()?,
            },
            Stored::NullStr(na) => Column::NullStr {
                values: read_strings_range(store, &member(store, e, "values")?.path, start, len)?,
                mask: mask()?,
                na: *na,
            },
        })
    }
}

/// Reads a whole data frame column (any anndata column encoding).
pub fn read_column(store: &Store, e: &Element) -> Result<Column> {
    let reader = ColumnReader::open(store, e)?;
    reader.read(0, reader.len())
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
            Column::BoolObject(v) => v.len(),
        }
    }

    /// Whether the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the rows of `other`, a column of the same kind (and the
    /// same categories).
    pub fn append(&mut self, other: Column) -> Result<()> {
        match (self, other) {
            (Column::Num(a), Column::Num(b)) => a.append(b)?,
            (Column::Str(a), Column::Str(b)) => a.extend(b),
            (
                Column::Cat {
                    codes: a,
                    categories: ka,
                    ..
                },
                Column::Cat {
                    codes: b,
                    categories: kb,
                    ..
                },
            ) if *ka == kb => a.extend(b),
            (Column::NullInt { values: a, mask: m }, Column::NullInt { values: b, mask: n }) => {
                a.append(b)?;
                m.extend(n);
            }
            (Column::NullBool { values: a, mask: m }, Column::NullBool { values: b, mask: n }) => {
                a.extend(b);
                m.extend(n);
            }
            (Column::BoolObject(a), Column::BoolObject(b)) => a.extend(b),
            (
                Column::NullStr {
                    values: a, mask: m, ..
                },
                Column::NullStr {
                    values: b, mask: n, ..
                },
            ) => {
                a.extend(b);
                m.extend(n);
            }
            _ => {
                return Err(Error::internal("appending columns of different kinds"));
            }
        }
        Ok(())
    }

    /// anndata 0.13's reindexing: a bool column that gains missing rows
    /// becomes pandas' nullable boolean (0.12 leaves numpy's object column).
    pub fn bool_object_to_nullable(self) -> Column {
        match self {
            Column::BoolObject(v) => Column::NullBool {
                mask: v.iter().map(Option::is_none).collect(),
                values: v.into_iter().map(|b| b.unwrap_or(false)).collect(),
            },
            other => other,
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
                } else if let Values::Bool(b) = v {
                    Column::BoolObject(idx.iter().map(|i| i.map(|i| b[i])).collect())
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
            Column::BoolObject(v) => {
                Column::BoolObject(idx.iter().map(|i| i.and_then(|i| v[i])).collect())
            }
            Column::NullStr {
                values,
                mask: m,
                na,
            } => Column::NullStr {
                na: *na,
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
            ) => {
                if oa != ob {
                    false
                } else if ka == kb {
                    ca == cb
                } else {
                    // Unordered categoricals of the same category set (in
                    // another order) are equal when their values are.
                    !oa && same_values_by_category(ca, ka, cb, kb)
                }
            }
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
                    ..
                },
                Column::NullStr {
                    values: vb,
                    mask: mb,
                    ..
                },
            ) => ma == mb && masked_equal(va, vb, ma),
            _ => self == other,
        }
    }
}

/// Whether codes `ca` into `ka` and `cb` into `kb` spell the same values,
/// `ka` and `kb` being the same set (of the same dtype) in any order.
fn same_values_by_category(ca: &[i64], ka: &Categories, cb: &[i64], kb: &Categories) -> bool {
    let same_dtype = match (ka, kb) {
        (Categories::Str(_), Categories::Str(_)) => true,
        (Categories::Num(a), Categories::Num(b)) => a.dtype() == b.dtype(),
        _ => false,
    };
    if !same_dtype || ka.len() != kb.len() || ca.len() != cb.len() {
        return false;
    }
    // Where each of `ka`'s categories stands in `kb` (-1: not there), as
    // the concatenation maps categories.
    let in_b = ColumnTarget::cat(kb.clone(), false);
    let all_of_a = Column::Cat {
        codes: (0..ka.len() as i64).collect(),
        categories: ka.clone(),
        ordered: false,
    };
    let Ok(Column::Cat { codes: map, .. }) = in_b.conform(Some(&all_of_a), ka.len()) else {
        return false;
    };
    map.iter().all(|&m| m >= 0)
        && ca
            .iter()
            .zip(cb)
            .all(|(&a, &b)| if a < 0 { b < 0 } else { map[a as usize] == b })
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
            categories: Categories::Str(cats.clone()),
            ordered: false,
        }
    } else {
        Column::Str(values.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn strings_hashed_as_stored_match_the_hashes_of_the_strings_read() {
        use crate::anndata::element::read_element;
        use crate::anndata::{OutputStore, ZarrFormat};
        use crate::concat::column_concat::hash_bytes;
        for format in [ZarrFormat::V2, ZarrFormat::V3] {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("s.zarr");
            let out = OutputStore::create(&path, format).expect("create");
            out.write_group("", &Map::new()).expect("root group");
            let values = s(&["a", "", "été", "日本語", "x-1", "a"]);
            let column = Column::Str(values.clone());
            create_column(&out, "c", &column, values.len() as u64, 4).expect("create column");
            write_column_rows(&out, "c", &column, 0).expect("write");
            let store = Store::open(&path).expect("open");
            let element = read_element(&store, "c").expect("element");
            let reader = ColumnReader::open(&store, &element).expect("reader");
            // A range across the chunk boundary, hashed from the stored
            // bytes as a frame block task does it.
            let (text, offsets) = reader.read_raw(1, 5).expect("read").expect("plain strings");
            let raw: Vec<u64> = offsets
                .windows(2)
                .map(|w| hash_bytes(&text.as_bytes()[w[0]..w[1]]))
                .collect();
            let mut read = Vec::new();
            ColumnTarget::collect_hashes(Some(&reader.read(1, 5).expect("read")), &mut read);
            assert_eq!(raw.len(), 5);
            assert_eq!(raw, read);
            assert_ne!(raw[0], raw[1]);
        }
    }

    #[test]
    fn natsort_orders_numbers_numerically() {
        assert_eq!(
            natsorted(s(&["a10", "a2", "b", "a1"])),
            s(&["a1", "a2", "a10", "b"])
        );
    }
}
