//! How one data frame column is concatenated across inputs, as `pd.concat`
//! after anndata's `unify_dtypes` does it (and as anndata then writes it).
//! The output kind is decided once from every input's kind, dtype and
//! categories ([`ColumnTarget::decide`]); string results wait for one pass
//! over the distinct values ([`ColumnTarget::finish`]); then each input's
//! rows, a range at a time, are converted to it ([`ColumnTarget::conform`]),
//! so a long column never has to be held whole.

use std::collections::{HashMap, HashSet};

use super::frame::{Categories, Column, NaValue, natsorted};
use super::values::{Scalar, Values, promote};
use crate::anndata::DType;
use crate::error::{Error, Result};

mod union;

pub use union::*;

/// The 64-bit hash by which string columns are checked for repeats:
/// foldhash with a fixed seed (the same on every process and run), several
/// times faster than std's SipHash on the short names of a cell barcode
/// column. Equal hashes only send a column to the exact count, so a
/// collision costs time, never a wrong answer.
pub fn hash_string(s: &str) -> u64 {
    hash_bytes(s.as_bytes())
}

/// [`hash_string`] of a value held as its UTF-8 bytes.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::with_seed(0x616e_6e63_6174).hash_one(bytes)
}

/// The kind an output column takes, with what converting rows into it needs.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum ColumnTarget {
    /// Numbers or booleans of one dtype (NaN where missing).
    Num(DType),
    /// Nullable booleans.
    NullBool,
    /// Nullable integers of one dtype.
    NullInt(DType),
    /// Nullable strings.
    NullStr(NaValue),
    /// Strings; before [`ColumnTarget::finish`] they may still lack values.
    Str,
    /// Object strings stored as they are, missing ones as the text "nan"
    /// (what zarr's vlen-utf8 codec makes of NaN in an object column).
    StrNanText,
    /// Numbers as Python's `str` writes them: the object column pandas
    /// makes of numbers beside a zero-row input's strings, which anndata
    /// stores as a string array (never a categorical: they are not strings).
    NumberText(NumberText),
    /// A categorical.
    Cat {
        /// The output categories.
        categories: Categories,
        /// Whether they are ordered.
        ordered: bool,
        /// Position of each category.
        pos: CategoryPositions,
    },
}

/// How [`ColumnTarget::NumberText`] spells each number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NumberText {
    /// Integers in decimal.
    Int,
    /// Floats as Python's `repr` (`1.0`, `0.5`, `1e+20`, `nan`).
    Float,
    /// Booleans as `True` / `False`.
    Bool,
}

/// Whose `pd.concat` rules apply where pandas 2 and 3 differ: the pandas the
/// inputs were written with (pandas 3: every input's index is a
/// `nullable-string-array`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pandas {
    /// pandas 2 (anndata 0.12 and earlier).
    V2,
    /// pandas 3 (anndata 0.13).
    V3,
}

/// Python's `repr` of a float.
pub fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    // Shortest round-trip digits, as Python; its exponent rule decides the form.
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if f == 0.0 || (-4..16).contains(&exp) {
        let plain = format!("{f}");
        if plain.contains('.') {
            plain
        } else {
            plain + ".0"
        }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

impl ColumnTarget {
    /// Decides the output kind from each input's column (only its kind,
    /// dtype and categories are looked at, so empty heads will do; `None`:
    /// the input lacks the column and contributes `n` missing rows).
    pub fn decide(parts: &[(Option<&Column>, u64)], pandas: Pandas) -> Result<ColumnTarget> {
        match Self::despite_empty_inputs(parts, pandas) {
            Some(target) => Ok(target),
            None => Self::decide_kinds(parts),
        }
    }

    /// pandas' answer where the inputs with rows agree on a kind and only
    /// zero-row inputs store the column with another: an empty float column
    /// (what pandas makes of an empty column) leaves a categorical or a
    /// string column as it is; empty strings or categoricals beside numbers
    /// make an object column of numbers. `None`: no such rule applies.
    fn despite_empty_inputs(
        parts: &[(Option<&Column>, u64)],
        pandas: Pandas,
    ) -> Option<ColumnTarget> {
        let empties: Vec<&Column> = parts
            .iter()
            .filter(|(_, n)| *n == 0)
            .filter_map(|(c, _)| *c)
            .collect();
        let with_rows: Vec<(Option<&Column>, u64)> = parts
            .iter()
            .map(|&(c, n)| if n == 0 { (None, 0) } else { (c, n) })
            .collect();
        if empties.is_empty() || with_rows.iter().all(|(c, _)| c.is_none()) {
            return None;
        }
        let target = Self::decide_kinds(&with_rows).ok()?;
        let has_missing = parts.iter().any(|(c, n)| c.is_none() && *n > 0);
        let float = |c: &&Column| matches!(c, Column::Num(v) if matches!(v.dtype(), DType::Float32 | DType::Float64));
        let number = |c: &&Column| matches!(c, Column::Num(_));
        let textual = |c: &&Column| {
            matches!(
                c,
                Column::Str(_) | Column::NullStr { .. } | Column::Cat { .. }
            )
        };
        let text = |d: &DType| match d {
            DType::Bool => NumberText::Bool,
            DType::Float32 | DType::Float64 => NumberText::Float,
            _ => NumberText::Int,
        };
        let first_is_empty_float = parts
            .iter()
            .find_map(|(c, n)| c.map(|c| *n == 0 && float(&c)))
            .unwrap_or(false);
        Some(match target {
            ColumnTarget::Cat { .. } if empties.iter().all(float) => target,
            ColumnTarget::Str | ColumnTarget::NullStr(_) if empties.iter().all(number) => {
                ColumnTarget::Str
            }
            ColumnTarget::Num(DType::Bool) if !has_missing && empties.iter().all(float) => {
                match pandas {
                    Pandas::V2 => ColumnTarget::NumberText(NumberText::Float),
                    Pandas::V3 if first_is_empty_float => ColumnTarget::Num(DType::Float64),
                    Pandas::V3 => ColumnTarget::NumberText(NumberText::Bool),
                }
            }
            ColumnTarget::Num(d)
                if !has_missing
                    && empties.iter().any(textual)
                    && empties.iter().all(|c| number(c) || textual(c)) =>
            {
                ColumnTarget::NumberText(text(&d))
            }
            _ => return None,
        })
    }

    /// [`ColumnTarget::decide`] by kinds alone, zero-row inputs included.
    fn decide_kinds(parts: &[(Option<&Column>, u64)]) -> Result<ColumnTarget> {
        let present: Vec<&Column> = parts.iter().filter_map(|(c, _)| *c).collect();
        let has_missing = parts.iter().any(|(c, n)| c.is_none() && *n > 0);
        let all = |f: fn(&Column) -> bool| present.iter().all(|c| f(c));
        if present.is_empty() {
            return Err(Error::internal("column missing from every input"));
        }
        let cats: Vec<(&Categories, bool)> = present
            .iter()
            .filter_map(|c| match c {
                Column::Cat {
                    categories,
                    ordered,
                    ..
                } => Some((categories, *ordered)),
                _ => None,
            })
            .collect();
        if cats.len() == present.len() {
            // An input without categories (all missing) fits either kind.
            static NO_STRINGS: Vec<String> = Vec::new();
            let no_numbers = Values::I64(Vec::new());
            let strings: Vec<(&Vec<String>, bool)> = cats
                .iter()
                .filter_map(|(c, o)| match c {
                    Categories::Str(v) => Some((v, *o)),
                    Categories::Num(v) if v.is_empty() => Some((&NO_STRINGS, *o)),
                    Categories::Num(_) => None,
                })
                .collect();
            let numbers: Vec<(&Values, bool)> = cats
                .iter()
                .filter_map(|(c, o)| match c {
                    Categories::Num(v) => Some((v, *o)),
                    Categories::Str(v) if v.is_empty() => Some((&no_numbers, *o)),
                    Categories::Str(_) => None,
                })
                .collect();
            if strings.len() == cats.len()
                && let Some((categories, ordered)) = category_union(&strings)
            {
                return Ok(ColumnTarget::cat(Categories::Str(categories), ordered));
            }
            if numbers.len() == cats.len() && numbers.iter().any(|(v, _)| !v.is_empty()) {
                return match number_category_union(&numbers)? {
                    Some((categories, ordered)) => {
                        Ok(ColumnTarget::cat(Categories::Num(categories), ordered))
                    }
                    None => Err(Error::data(
                        "ordered categoricals of numbers whose categories differ become \
                         an object column of numbers, which anndata stores as text: not supported",
                    )),
                };
            }
        }
        // Strings, and string categoricals mixed with strings: an object column.
        if all(|c| {
            matches!(
                c,
                Column::Str(_)
                    | Column::Cat {
                        categories: Categories::Str(_),
                        ..
                    }
            )
        }) {
            return Ok(ColumnTarget::Str);
        }
        let num_dtype = |c: &Column| match c {
            Column::Num(v) | Column::NullInt { values: v, .. } => v.dtype(),
            _ => DType::Bool,
        };
        if all(|c| matches!(c, Column::Num(_))) {
            let mut dtype =
                promote_all(present.iter().map(|c| num_dtype(c)))?.unwrap_or(DType::Float64);
            if has_missing && dtype == DType::Bool {
                // anndata's unify_dtypes: bool with missing rows -> nullable boolean.
                return Ok(ColumnTarget::NullBool);
            }
            if has_missing && !matches!(dtype, DType::Float32 | DType::Float64) {
                dtype = DType::Float64;
            }
            return Ok(ColumnTarget::Num(dtype));
        }
        if all(|c| matches!(c, Column::NullBool { .. } | Column::Num(Values::Bool(_)))) {
            return Ok(ColumnTarget::NullBool);
        }
        if all(|c| {
            matches!(c, Column::NullInt { .. })
                || matches!(c, Column::Num(v) if !matches!(v.dtype(), DType::Bool | DType::Float32 | DType::Float64))
        }) {
            let dtype = promote_all(present.iter().map(|c| num_dtype(c)))?;
            return Ok(ColumnTarget::NullInt(dtype.unwrap_or(DType::Int64)));
        }
        if all(|c| matches!(c, Column::NullStr { .. })) {
            // The first input's missing value, as `pd.concat` keeps the
            // first part's dtype when all are `string`.
            let na = present
                .iter()
                .find_map(|c| match c {
                    Column::NullStr { na, .. } => Some(*na),
                    _ => None,
                })
                .unwrap_or(NaValue::Na);
            return Ok(ColumnTarget::NullStr(na));
        }
        Err(Error::data(format!(
            "cannot concatenate data frame columns of these kinds yet: {}",
            present
                .iter()
                .map(|c| kind_name(c))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }

    /// A categorical of `categories`.
    pub(crate) fn cat(categories: Categories, ordered: bool) -> ColumnTarget {
        let pos = match &categories {
            Categories::Str(v) => CategoryPositions::Str(
                v.iter()
                    .enumerate()
                    .map(|(i, c)| (c.clone(), i as i64))
                    .collect(),
            ),
            Categories::Num(v) => CategoryPositions::Num(
                v.dtype(),
                number_keys(v)
                    .into_iter()
                    .enumerate()
                    .map(|(i, k)| (k, i as i64))
                    .collect(),
            ),
        };
        ColumnTarget::Cat {
            categories,
            ordered,
            pos,
        }
    }

    /// An unordered categorical of `categories` (the label column).
    pub fn label(categories: Vec<String>) -> ColumnTarget {
        ColumnTarget::cat(Categories::Str(categories), false)
    }

    /// The kind when strings are stored as they are (no
    /// `strings_to_categoricals`: data frames other than obs and var).
    pub fn keeping_text(self) -> ColumnTarget {
        match self {
            ColumnTarget::Str => ColumnTarget::StrNanText,
            other => other,
        }
    }

    /// Whether the kind still depends on the distinct values (strings).
    pub fn needs_distinct(&self) -> bool {
        matches!(self, ColumnTarget::Str | ColumnTarget::NullStr(_))
    }

    /// Adds the values of rows (as [`ColumnTarget::conform`] would give
    /// them) to `distinct`; returns how many rows that was.
    pub fn collect_distinct(
        piece: Option<&Column>,
        n: usize,
        distinct: &mut HashSet<String>,
    ) -> usize {
        if let Some(strings) = piece.and_then(optional_strings) {
            distinct.extend(strings.into_iter().flatten());
        }
        n
    }

    /// Adds the [`hash_string`] of each present value of rows (as
    /// [`ColumnTarget::conform`] would give them) to `hashes`.
    pub fn collect_hashes(piece: Option<&Column>, hashes: &mut Vec<u64>) {
        let Some(strings) = piece.and_then(optional_strings) else {
            return;
        };
        hashes.extend(strings.iter().flatten().map(|s| hash_string(s)));
    }

    /// anndata's `strings_to_categoricals` on write: string results with
    /// fewer distinct values than rows (repeats or missing values) become a
    /// categorical of the natsorted values.
    pub fn finish(self, distinct: HashSet<String>, rows: u64) -> ColumnTarget {
        if self.needs_distinct() && (distinct.len() as u64) < rows {
            let mut cats: Vec<String> = distinct.into_iter().collect();
            cats.sort();
            ColumnTarget::cat(Categories::Str(natsorted(cats)), false)
        } else {
            self
        }
    }

    /// A column of this kind with no rows.
    pub fn empty(&self) -> Result<Column> {
        self.conform(None, 0)
    }

    /// Converts `n` rows of one input (`None`: it lacks the column) to this
    /// kind.
    pub fn conform(&self, piece: Option<&Column>, n: usize) -> Result<Column> {
        let missing = || vec![None; n];
        let mismatch = |c: &Column| {
            Error::internal(format!(
                "a {} column does not fit the planned output",
                kind_name(c)
            ))
        };
        if piece.is_some_and(Column::is_empty) {
            // A zero-row input's column, whatever its kind.
            return self.conform(None, 0);
        }
        Ok(match (self, piece) {
            (ColumnTarget::Num(d), Some(Column::Num(v))) => Column::Num(v.cast(d)?),
            (ColumnTarget::NumberText(spelling), Some(Column::Num(v))) => {
                Column::Str(number_texts(v, *spelling)?)
            }
            (ColumnTarget::NumberText(_), None) if n == 0 => Column::Str(Vec::new()),
            (ColumnTarget::Num(d), None) => {
                Column::Num(Values::empty(d)?.take(&missing(), Scalar::Float(f64::NAN)))
            }
            (ColumnTarget::NullBool, Some(Column::NullBool { values, mask })) => Column::NullBool {
                values: values.clone(),
                mask: mask.clone(),
            },
            (ColumnTarget::NullBool, Some(Column::Num(Values::Bool(b)))) => Column::NullBool {
                values: b.clone(),
                mask: vec![false; b.len()],
            },
            (ColumnTarget::NullBool, None) => Column::NullBool {
                values: vec![false; n],
                mask: vec![true; n],
            },
            (ColumnTarget::NullInt(d), Some(Column::NullInt { values, mask })) => Column::NullInt {
                values: values.cast(d)?,
                mask: mask.clone(),
            },
            (ColumnTarget::NullInt(d), Some(Column::Num(v))) => Column::NullInt {
                values: v.cast(d)?,
                mask: vec![false; v.len()],
            },
            (ColumnTarget::NullInt(d), None) => Column::NullInt {
                values: Values::zeros(d, n)?,
                mask: vec![true; n],
            },
            (ColumnTarget::NullStr(na), Some(Column::NullStr { values, mask, .. })) => {
                Column::NullStr {
                    values: values.clone(),
                    mask: mask.clone(),
                    na: *na,
                }
            }
            (ColumnTarget::NullStr(na), None) => Column::NullStr {
                values: vec![String::new(); n],
                mask: vec![true; n],
                na: *na,
            },
            (ColumnTarget::Str, Some(c)) => {
                let strings = optional_strings(c).ok_or_else(|| mismatch(c))?;
                if strings.iter().any(Option::is_none) {
                    return Err(Error::internal(
                        "missing strings in a column planned without them",
                    ));
                }
                Column::Str(strings.into_iter().flatten().collect())
            }
            (ColumnTarget::Str, None) if n == 0 => Column::Str(Vec::new()),
            (ColumnTarget::StrNanText, Some(c)) => Column::Str(
                optional_strings(c)
                    .ok_or_else(|| mismatch(c))?
                    .into_iter()
                    .map(|s| s.unwrap_or_else(|| "nan".to_string()))
                    .collect(),
            ),
            (ColumnTarget::StrNanText, None) => Column::Str(vec!["nan".to_string(); n]),
            (
                ColumnTarget::Cat {
                    categories,
                    ordered,
                    pos,
                },
                piece,
            ) => {
                let codes = match piece {
                    None => vec![-1; n],
                    Some(Column::Cat {
                        codes, categories, ..
                    }) if categories.is_empty() => vec![-1; codes.len()],
                    Some(Column::Cat {
                        codes,
                        categories: own,
                        ..
                    }) => {
                        let map: Vec<i64> = match (own, pos) {
                            (Categories::Str(own), CategoryPositions::Str(pos)) => own
                                .iter()
                                .map(|k| pos.get(k).copied().unwrap_or(-1))
                                .collect(),
                            (Categories::Num(own), CategoryPositions::Num(dtype, pos)) => {
                                number_keys(&own.cast(dtype)?)
                                    .iter()
                                    .map(|k| pos.get(k).copied().unwrap_or(-1))
                                    .collect()
                            }
                            _ => return Err(mismatch(piece.unwrap_or(&Column::Str(Vec::new())))),
                        };
                        codes
                            .iter()
                            .map(|&c| if c < 0 { -1 } else { map[c as usize] })
                            .collect()
                    }
                    Some(c) => {
                        let CategoryPositions::Str(pos) = pos else {
                            return Err(mismatch(c));
                        };
                        optional_strings(c)
                            .ok_or_else(|| mismatch(c))?
                            .iter()
                            .map(|s| s.as_ref().and_then(|s| pos.get(s).copied()).unwrap_or(-1))
                            .collect()
                    }
                };
                Column::Cat {
                    codes,
                    categories: categories.clone(),
                    ordered: *ordered,
                }
            }
            (_, Some(c)) => return Err(mismatch(c)),
            (_, None) => {
                return Err(Error::internal(
                    "missing rows in a column planned without them",
                ));
            }
        })
    }
}

/// Each number of `v` as Python's `str` spells it.
fn number_texts(v: &Values, spelling: NumberText) -> Result<Vec<String>> {
    Ok(match (v, spelling) {
        (Values::Bool(b), NumberText::Bool) => b
            .iter()
            .map(|&b| if b { "True" } else { "False" }.to_string())
            .collect(),
        (_, NumberText::Float) => match v.cast(&DType::Float64)? {
            Values::F64(f) => f.into_iter().map(python_float_repr).collect(),
            _ => return Err(Error::internal("a float cast gave no floats")),
        },
        (_, _) => match v.cast(&DType::Int64) {
            Ok(Values::I64(i)) if !matches!(v.dtype(), DType::UInt64) => {
                i.into_iter().map(|i| i.to_string()).collect()
            }
            _ => match v {
                Values::U64(u) => u.iter().map(|u| u.to_string()).collect(),
                _ => return Err(Error::internal("integers expected")),
            },
        },
    })
}

/// Concatenates one column held in memory across inputs (`None`: the input
/// lacks the column and contributes `n` missing rows).
pub fn concat_column(parts: &[(Option<&Column>, usize)]) -> Result<Column> {
    let heads: Vec<(Option<&Column>, u64)> = parts.iter().map(|(c, n)| (*c, *n as u64)).collect();
    let mut target = ColumnTarget::decide(&heads, Pandas::V2)?;
    if target.needs_distinct() {
        let mut distinct = HashSet::new();
        let rows: usize = parts
            .iter()
            .map(|(c, n)| ColumnTarget::collect_distinct(*c, *n, &mut distinct))
            .sum();
        target = target.finish(distinct, rows as u64);
    }
    let mut out = target.empty()?;
    for (c, n) in parts {
        out.append(target.conform(*c, *n)?)?;
    }
    Ok(out)
}

#[cfg(test)]
#[path = "column_concat_tests.rs"]
mod tests;
