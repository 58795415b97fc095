//! The unions pandas takes when columns meet: category sets (strings or
//! numbers, ordered or not), promoted dtypes, and the kind names used in
//! refusals.

use super::*;

/// Where each output category is, by value.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum CategoryPositions {
    /// String categories.
    Str(HashMap<String, i64>),
    /// Numeric categories of one dtype, keyed by [`number_keys`].
    Num(DType, HashMap<u64, i64>),
}

/// Hashable keys of numeric categories (int64, float64 or bool).
pub(super) fn number_keys(v: &Values) -> Vec<u64> {
    match v {
        Values::I64(x) => x.iter().map(|&i| i as u64).collect(),
        Values::F64(x) => x
            .iter()
            .map(|&f| if f == 0.0 { 0 } else { f.to_bits() })
            .collect(),
        Values::Bool(x) => x.iter().map(|&b| u64::from(b)).collect(),
        other => other
            .cast(&DType::Float64)
            .map(|f| number_keys(&f))
            .unwrap_or_default(),
    }
}

/// The dtype pandas gives the union of numeric categories: bool when all
/// are bool, float64 when any is a float, else int64.
pub(super) fn number_category_dtype(cats: &[&Values]) -> Result<DType> {
    let bools = cats.iter().filter(|c| c.dtype() == DType::Bool).count();
    if bools == cats.len() {
        return Ok(DType::Bool);
    }
    if bools > 0 {
        return Err(Error::data(
            "categoricals with boolean and numeric categories are not supported",
        ));
    }
    Ok(
        if cats
            .iter()
            .any(|c| matches!(c.dtype(), DType::Float32 | DType::Float64))
        {
            DType::Float64
        } else {
            DType::Int64
        },
    )
}

/// Sorted distinct values of numeric categories already cast to one dtype.
pub(super) fn sorted_union(cast: &[Values], dtype: &DType) -> Result<Values> {
    let mut all = Values::empty(dtype)?;
    for c in cast {
        all.extend(c)?;
    }
    Ok(match all {
        Values::I64(mut v) => {
            v.sort_unstable();
            v.dedup();
            Values::I64(v)
        }
        Values::F64(mut v) => {
            v.sort_by(f64::total_cmp);
            v.dedup();
            Values::F64(v)
        }
        Values::Bool(mut v) => {
            v.sort_unstable();
            v.dedup();
            Values::Bool(v)
        }
        other => other,
    })
}

/// [`category_union`] for numeric categories: natsort orders numbers by
/// value, and they are unified to int64, float64 or bool as pandas does.
pub(super) fn number_category_union(cats: &[(&Values, bool)]) -> Result<Option<(Values, bool)>> {
    // Empty categories count too: pandas unions the categories' indexes,
    // so an all-missing input's float64 categories make the union float64.
    let dtype = number_category_dtype(&cats.iter().map(|c| c.0).collect::<Vec<_>>())?;
    let cast: Vec<Values> = cats
        .iter()
        .map(|c| c.0.cast(&dtype))
        .collect::<Result<_>>()?;
    let union = sorted_union(&cast, &dtype)?;
    let is_union = |v: &Values| {
        v.len() == union.len()
            && number_keys(v).into_iter().collect::<HashSet<_>>().len() == union.len()
    };
    if !cats.iter().any(|c| c.1) {
        // pandas leaves the first input uncast only when its categories
        // already have the union's dtype.
        return Ok(Some(match (cats.first(), cast.first()) {
            (Some(orig), Some(first)) if orig.0.dtype() == dtype && is_union(first) => {
                (first.clone(), false)
            }
            _ => (union, false),
        }));
    }
    // Ordered: every input with categories has the same ones, of the same
    // dtype, which is kept as it is.
    let with: Vec<&(&Values, bool)> = cats.iter().filter(|c| !c.0.is_empty()).collect();
    let same = !with.is_empty()
        && with.iter().all(|c| c.1)
        && with.windows(2).all(|w| w[0].0 == w[1].0)
        && with[0].0.cast(&dtype).is_ok_and(|v| is_union(&v));
    Ok(same.then(|| (with[0].0.clone(), true)))
}

/// A data frame column's kind as reported in errors.
pub fn kind_name(c: &Column) -> String {
    match c {
        Column::Num(v) => v.dtype().display_name(),
        Column::Str(_) => "string".into(),
        Column::Cat {
            categories: Categories::Num(v),
            ..
        } => format!("categorical of {}", v.dtype().display_name()),
        Column::Cat { ordered: true, .. } => "ordered categorical".into(),
        Column::Cat { .. } => "categorical".into(),
        Column::NullInt { .. } => "nullable integer".into(),
        Column::NullBool { .. } => "nullable boolean".into(),
        Column::NullStr { .. } => "nullable string".into(),
        Column::BoolObject(_) => "object (booleans with missing values)".into(),
    }
}

pub(super) fn promote_all(dtypes: impl Iterator<Item = DType>) -> Result<Option<DType>> {
    let mut out: Option<DType> = None;
    for d in dtypes {
        out = Some(match out {
            None => d,
            Some(prev) => {
                promote(&prev, &d).ok_or_else(|| Error::data("incompatible column dtypes"))?
            }
        });
    }
    Ok(out)
}

/// The union of categoricals. Unordered: anndata casts each input to the
/// natsorted union, but pandas leaves an input whose categories already
/// are that set as it is, and `pd.concat` keeps the first input's order —
/// so the first input's categories when they are the whole union, else the
/// natsorted union. Ordered: kept when every ordered input with categories
/// has the same ones; else `None` (pandas falls back to object strings).
pub(super) fn category_union(cats: &[(&Vec<String>, bool)]) -> Option<(Vec<String>, bool)> {
    let mut union: Vec<String> = cats.iter().flat_map(|c| c.0.iter().cloned()).collect();
    union.sort();
    union.dedup();
    if !cats.iter().any(|c| c.1) {
        let first = cats.first().map(|c| c.0)?;
        let first_is_union =
            first.len() == union.len() && first.iter().collect::<HashSet<_>>().len() == union.len();
        return Some(if first_is_union {
            (first.clone(), false)
        } else {
            (natsorted(union), false)
        });
    }
    let with: Vec<_> = cats.iter().filter(|c| !c.0.is_empty()).collect();
    let same = !with.is_empty()
        && with.iter().all(|c| {
            c.1 && c.0.len() == union.len()
                && c.0.iter().collect::<HashSet<_>>().len() == union.len()
        })
        && with.windows(2).all(|w| w[0].0 == w[1].0);
    same.then(|| (with[0].0.clone(), true))
}

/// Strings of a string-like column (`None` = missing), or `None` if it is
/// not string-like.
pub(super) fn optional_strings(c: &Column) -> Option<Vec<Option<String>>> {
    match c {
        Column::Str(v) => Some(v.iter().cloned().map(Some).collect()),
        Column::Cat {
            codes,
            categories: Categories::Str(categories),
            ..
        } => Some(
            codes
                .iter()
                .map(|&c| (c >= 0).then(|| categories[c as usize].clone()))
                .collect(),
        ),
        Column::NullStr { values, mask, .. } => Some(
            values
                .iter()
                .zip(mask)
                .map(|(v, &m)| (!m).then(|| v.clone()))
                .collect(),
        ),
        _ => None,
    }
}
