//! Turning what HDF5 returns into zarr chunk bytes: fixed and variable
//! length strings, fill of partial chunks, attributes as JSON.

use super::*;

/// A full chunk of `full` elements from the values read, padded with the
/// fill value.
pub(super) fn fill_chunk(elem: Elem, full: u64, values: Values) -> Vec<u8> {
    match values {
        Values::Strings(strings) => {
            // vlen-utf8: element count, then (length, bytes) per element.
            let mut out =
                Vec::with_capacity(4 + strings.iter().map(|s| s.len() + 4).sum::<usize>());
            out.extend_from_slice(&(full as u32).to_le_bytes());
            for s in &strings {
                out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            for _ in strings.len() as u64..full {
                out.extend_from_slice(&0u32.to_le_bytes());
            }
            out
        }
        Values::Bytes(mut bytes) => {
            bytes.resize((full * elem.size()) as usize, 0);
            bytes
        }
    }
}

/// The strings of `ds` read as `T` (a selection, or all of it).
pub(super) fn read_text<T: hdf5::H5Type>(
    ds: &hdf5::Container,
    selection: Option<Selection>,
    bytes: impl Fn(&T) -> &[u8],
) -> Result<Vec<String>, String> {
    let a: ArrayD<T> = match selection {
        Some(s) => ds.as_reader().read_slice(s),
        None => ds.read_dyn::<T>(),
    }
    .map_err(|e| e.to_string())?;
    a.iter().map(|v| utf8(bytes(v))).collect()
}

/// Fixed-length strings of a dataset or attribute.
pub(super) struct FixedText<'a> {
    ds: &'a hdf5::Container,
    selection: Option<Selection>,
    ascii: bool,
}

impl FixedRead for FixedText<'_> {
    type Out = Result<Vec<String>, String>;

    fn read<const N: usize>(self) -> Self::Out {
        if self.ascii {
            read_text::<FixedAscii<N>>(self.ds, self.selection, |s| s.as_bytes())
        } else {
            read_text::<FixedUnicode<N>>(self.ds, self.selection, |s| s.as_bytes())
        }
    }
}

/// Reads strings of `ds` (all of it when `selection` is `None`).
pub(super) fn read_strings(
    ds: &hdf5::Container,
    elem: Elem,
    selection: Option<Selection>,
) -> Result<Vec<String>, String> {
    match elem {
        Elem::VarStr { ascii: false } => {
            read_text::<VarLenUnicode>(ds, selection, |s| s.as_bytes())
        }
        Elem::VarStr { ascii: true } => read_text::<VarLenAscii>(ds, selection, |s| s.as_bytes()),
        Elem::FixedStr { ascii, len } => with_fixed_size(
            len,
            FixedText {
                ds,
                selection,
                ascii,
            },
        )
        .unwrap_or_else(|| {
            Err(format!(
                "fixed-length strings of {len} bytes are longer than anncat reads"
            ))
        }),
        _ => Err("not a string".into()),
    }
}

/// An attribute as JSON (strings, numbers, booleans and arrays of them);
/// `None` for types anncat does not use.
pub(super) fn attr_json(attr: &hdf5::Attribute) -> Option<Value> {
    let desc = attr.dtype().ok()?.to_descriptor().ok()?;
    let elem = Elem::of(&desc)?;
    let scalar = attr.is_scalar();
    let values: Vec<Value> = if elem.is_string() {
        read_strings(attr, elem, None)
            .ok()?
            .into_iter()
            .map(Value::String)
            .collect()
    } else {
        match elem {
            // Through a byte: a file value other than 0 or 1 must not become
            // a Rust bool.
            Elem::Bool => attr
                .read_raw::<BoolByte>()
                .ok()?
                .into_iter()
                .map(|b| Value::Bool(b.0 != 0))
                .collect(),
            Elem::F32 | Elem::F64 => attr
                .read_raw::<f64>()
                .ok()?
                .into_iter()
                .map(|v| serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
                .collect(),
            Elem::U64 => attr
                .read_raw::<u64>()
                .ok()?
                .into_iter()
                .map(Value::from)
                .collect(),
            _ => attr
                .read_raw::<i64>()
                .ok()?
                .into_iter()
                .map(Value::from)
                .collect(),
        }
    };
    if scalar {
        values.into_iter().next()
    } else {
        Some(Value::Array(values))
    }
}
