//! Structured (numpy record) dtypes, which anndata writes for `rec-array`
//! elements (scanpy's `rank_genes_groups`). zarrs cannot decode them, so
//! anncat moves their bytes as opaque fixed-size items (zarr "raw bits") and
//! translates only the dtype's spelling between zarr v2 and v3.

use serde_json::{Value, json};

use super::dtype::DType;
use super::store::ZarrFormat;

/// One field of a structured dtype.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// A numeric or boolean field.
    Numeric(DType),
    /// A fixed-length UTF-32 string of this many characters (`<U{n}`).
    Utf32(u64),
    /// A fixed-length byte string of this many bytes (`|S{n}`).
    Bytes(u64),
}

impl Field {
    /// Bytes the field takes in a record.
    pub fn size(&self) -> u64 {
        match self {
            Field::Numeric(d) => d.item_size() as u64,
            Field::Utf32(n) => 4 * n,
            Field::Bytes(n) => *n,
        }
    }
}

/// A parsed structured dtype: named fields in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Structured {
    fields: Vec<(String, Field)>,
}

impl Structured {
    /// Parses a structured dtype as written in `format`'s metadata, or
    /// `None` if `dtype` is not one anncat can translate.
    pub fn parse(dtype: &Value, format: ZarrFormat) -> Option<Structured> {
        let fields = match format {
            ZarrFormat::V2 => dtype.as_array()?,
            ZarrFormat::V3 => {
                // "structured" (zarr-python 3.1, fields as [name, type]
                // pairs) or "struct" (zarr-python 3.4, fields as objects).
                if dtype["name"] != "structured" && dtype["name"] != "struct" {
                    return None;
                }
                dtype["configuration"]["fields"].as_array()?
            }
        };
        let mut out = Vec::with_capacity(fields.len());
        for f in fields {
            let (name, t) = match f.as_array() {
                Some(pair) if pair.len() == 2 => (pair[0].as_str()?.to_string(), &pair[1]),
                Some(_) => return None, // sub-array fields are not supported
                None => (f["name"].as_str()?.to_string(), &f["data_type"]),
            };
            let field = match format {
                ZarrFormat::V2 => {
                    let s = t.as_str()?;
                    if let Some(n) = s.strip_prefix("<U") {
                        Field::Utf32(n.parse().ok()?)
                    } else if let Some(n) = s.strip_prefix("|S") {
                        Field::Bytes(n.parse().ok()?)
                    } else {
                        match DType::from_v2(t, &Value::Null) {
                            DType::Other(_) | DType::String => return None,
                            d => Field::Numeric(d),
                        }
                    }
                }
                ZarrFormat::V3 => {
                    if t["name"] == "fixed_length_utf32" {
                        let bytes = t["configuration"]["length_bytes"].as_u64()?;
                        Field::Utf32(bytes / 4)
                    } else if t["name"] == "null_terminated_bytes" {
                        Field::Bytes(t["configuration"]["length_bytes"].as_u64()?)
                    } else {
                        match DType::from_v3(t) {
                            DType::Other(_) | DType::String => return None,
                            d => Field::Numeric(d),
                        }
                    }
                }
            };
            out.push((name, field));
        }
        Some(Structured { fields: out })
    }

    /// The fields, named, in record order (packed, no padding).
    pub fn fields(&self) -> &[(String, Field)] {
        &self.fields
    }

    /// Bytes per record.
    pub fn item_size(&self) -> u64 {
        self.fields.iter().map(|(_, f)| f.size()).sum()
    }

    /// The dtype's spelling in `format`'s metadata.
    pub fn spelling(&self, format: ZarrFormat) -> Value {
        let fields: Vec<Value> = self
            .fields
            .iter()
            .map(|(name, f)| match (format, f) {
                (ZarrFormat::V2, Field::Utf32(n)) => json!([name, format!("<U{n}")]),
                (ZarrFormat::V2, Field::Numeric(d)) => json!([name, d.v2_name()]),
                (ZarrFormat::V3, Field::Utf32(n)) => json!([
                    name,
                    {"name": "fixed_length_utf32", "configuration": {"length_bytes": 4 * n}}
                ]),
                (ZarrFormat::V3, Field::Numeric(d)) => json!([name, d.v3_name()]),
                (ZarrFormat::V2, Field::Bytes(n)) => json!([name, format!("|S{n}")]),
                (ZarrFormat::V3, Field::Bytes(n)) => json!([
                    name,
                    {"name": "null_terminated_bytes", "configuration": {"length_bytes": n}}
                ]),
            })
            .collect();
        match format {
            ZarrFormat::V2 => Value::Array(fields),
            ZarrFormat::V3 => json!({"name": "structured", "configuration": {"fields": fields}}),
        }
    }
}

/// The field a zarr v2 fixed-width text dtype (`|S{n}` bytes, `<U{n}`
/// UTF-32) amounts to, or `None` for other dtypes.
pub fn fixed_text_field(dtype: &Value) -> Option<Field> {
    let s = dtype.as_str()?;
    if let Some(n) = s.strip_prefix("|S") {
        return n.parse().ok().filter(|&n| n > 0).map(Field::Bytes);
    }
    if let Some(n) = s.strip_prefix("<U") {
        return n.parse().ok().filter(|&n| n > 0).map(Field::Utf32);
    }
    None
}

/// Rewrites an array metadata document of a structured array into one zarrs
/// can use to move its bytes: the dtype becomes raw bits of the record size
/// and the fill value zeros. `None` if the dtype is not a translatable
/// structured dtype.
pub fn raw_bits_view(doc: &Value, format: ZarrFormat) -> Option<Value> {
    let mut view = doc.clone();
    match format {
        ZarrFormat::V2 => {
            let size = match fixed_text_field(&doc["dtype"]) {
                Some(field) => field.size(),
                None => Structured::parse(&doc["dtype"], format)?.item_size(),
            };
            view["dtype"] = json!(format!("|V{size}"));
            if !view["fill_value"].is_string() || fixed_text_field(&doc["dtype"]).is_some() {
                view["fill_value"] = json!(base64_zeros(size));
            }
        }
        ZarrFormat::V3 => {
            let s = Structured::parse(&doc["data_type"], format)?;
            view["data_type"] = json!(format!("r{}", 8 * s.item_size()));
            view["fill_value"] = json!(vec![0u8; s.item_size() as usize]);
        }
    }
    if let Some(obj) = view.as_object_mut() {
        obj.remove("attributes");
    }
    Some(view)
}

/// The base64 text of `n` zero bytes (zarr v2's spelling of a void fill value).
pub(crate) fn base64_zeros(n: u64) -> String {
    let mut out = "AAAA".repeat((n / 3) as usize);
    match n % 3 {
        1 => out.push_str("AA=="),
        2 => out.push_str("AAA="),
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_zarr_python_3_4s_struct_spelling() {
        let t = json!({"name": "struct", "configuration": {"fields": [
            {"name": "a", "data_type": "int32"},
            {"name": "s", "data_type": {"name": "fixed_length_utf32", "configuration": {"length_bytes": 16}}},
            {"name": "b", "data_type": {"name": "null_terminated_bytes", "configuration": {"length_bytes": 3}}},
        ]}});
        let s = Structured::parse(&t, ZarrFormat::V3).expect("struct");
        assert_eq!(s.item_size(), 4 + 16 + 3);
        assert_eq!(
            s.spelling(ZarrFormat::V2),
            json!([["a", "<i4"], ["s", "<U4"], ["b", "|S3"]])
        );
        let back = Structured::parse(&s.spelling(ZarrFormat::V3), ZarrFormat::V3).expect("v3");
        assert_eq!(back, s);
    }

    #[test]
    fn translates_between_formats() {
        let v2 = json!([["a", "<U4"], ["b", "<i8"], ["c", "|b1"]]);
        let s = Structured::parse(&v2, ZarrFormat::V2).expect("parse v2");
        assert_eq!(s.item_size(), 16 + 8 + 1);
        let v3 = s.spelling(ZarrFormat::V3);
        assert_eq!(
            v3["configuration"]["fields"][0][1]["configuration"]["length_bytes"],
            16
        );
        let back = Structured::parse(&v3, ZarrFormat::V3).expect("parse v3");
        assert_eq!(back.spelling(ZarrFormat::V2), v2);
        assert!(Structured::parse(&json!([["a", "<f8", [2]]]), ZarrFormat::V2).is_none());
        assert_eq!(base64_zeros(4), "AAAAAA==");
        assert_eq!(base64_zeros(3), "AAAA");
    }
}
