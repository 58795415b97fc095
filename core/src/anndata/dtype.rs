//! Element data types as anndata writes them, and their spelling in zarr v2
//! (`dtype`) and v3 (`data_type`) metadata.

use serde_json::Value;

use super::store::ZarrFormat;
use super::structured::Structured;

/// The data type of one zarr array of an AnnData store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DType {
    /// numpy `bool`.
    Bool,
    /// numpy `int8`.
    Int8,
    /// numpy `int16`.
    Int16,
    /// numpy `int32`.
    Int32,
    /// numpy `int64`.
    Int64,
    /// numpy `uint8`.
    UInt8,
    /// numpy `uint16`.
    UInt16,
    /// numpy `uint32`.
    UInt32,
    /// numpy `uint64`.
    UInt64,
    /// numpy `float16`.
    Float16,
    /// numpy `float32`.
    Float32,
    /// numpy `float64`.
    Float64,
    /// Variable-length UTF-8 strings (v2 `|O` + `vlen-utf8`, v3 `string`).
    String,
    /// A numpy structured (record) dtype, moved as opaque records.
    Structured(Structured),
    /// Anything else (structured, fixed-length strings, complex): kept as the
    /// metadata JSON it was read from, copied but not decoded.
    Other(Value),
}

/// A table row: dtype, v2 spelling, v3 spelling, item size.
const NUMERIC: &[(DType, &str, &str, usize)] = &[
    (DType::Bool, "|b1", "bool", 1),
    (DType::Int8, "|i1", "int8", 1),
    (DType::Int16, "<i2", "int16", 2),
    (DType::Int32, "<i4", "int32", 4),
    (DType::Int64, "<i8", "int64", 8),
    (DType::UInt8, "|u1", "uint8", 1),
    (DType::UInt16, "<u2", "uint16", 2),
    (DType::UInt32, "<u4", "uint32", 4),
    (DType::UInt64, "<u8", "uint64", 8),
    (DType::Float16, "<f2", "float16", 2),
    (DType::Float32, "<f4", "float32", 4),
    (DType::Float64, "<f8", "float64", 8),
];

impl DType {
    /// Parses the `dtype` field of a v2 `.zarray` (with its `filters`).
    pub fn from_v2(dtype: &Value, filters: &Value) -> DType {
        if let Some(s) = Structured::parse(dtype, ZarrFormat::V2) {
            return DType::Structured(s);
        }
        if let Value::String(s) = dtype {
            if s == "|O" {
                let vlen = filters.as_array().is_some_and(|f| {
                    f.iter()
                        .any(|f| f["id"] == "vlen-utf8" || f["id"] == "json2")
                });
                if vlen {
                    return DType::String;
                }
            }
            // "<i1" and "|i1" both occur in the wild; so does "=f8".
            let normalized = match s.get(1..) {
                Some(rest) if s.starts_with(['<', '|', '=']) => rest,
                _ => return DType::Other(dtype.clone()),
            };
            for (dt, v2, _, _) in NUMERIC {
                if &v2[1..] == normalized {
                    return dt.clone();
                }
            }
        }
        DType::Other(dtype.clone())
    }

    /// Parses the `data_type` field of a v3 `zarr.json`.
    pub fn from_v3(data_type: &Value) -> DType {
        if let Some(s) = Structured::parse(data_type, ZarrFormat::V3) {
            return DType::Structured(s);
        }
        if let Value::String(s) = data_type {
            if s == "string" {
                return DType::String;
            }
            for (dt, _, v3, _) in NUMERIC {
                if v3 == s {
                    return dt.clone();
                }
            }
        }
        DType::Other(data_type.clone())
    }

    /// The v2 `dtype` string, or `None` for [`DType::Other`].
    pub fn v2_name(&self) -> Option<&'static str> {
        match self {
            DType::String => Some("|O"),
            _ => NUMERIC.iter().find(|r| &r.0 == self).map(|r| r.1),
        }
    }

    /// The v3 `data_type` name, or `None` for [`DType::Other`].
    pub fn v3_name(&self) -> Option<&'static str> {
        match self {
            DType::String => Some("string"),
            _ => NUMERIC.iter().find(|r| &r.0 == self).map(|r| r.2),
        }
    }

    /// The dtype's spelling in `format`'s metadata (`dtype` for v2,
    /// `data_type` for v3), or `None` for [`DType::Other`].
    pub fn spelling(&self, format: ZarrFormat) -> Option<Value> {
        match (self, format) {
            (DType::Structured(s), _) => Some(s.spelling(format)),
            (_, ZarrFormat::V2) => self.v2_name().map(Value::from),
            (_, ZarrFormat::V3) => self.v3_name().map(Value::from),
        }
    }

    /// Bytes per element; strings are estimated at 16 bytes, `Other` at 8.
    pub fn item_size(&self) -> usize {
        match self {
            DType::String => 16,
            DType::Structured(s) => s.item_size() as usize,
            DType::Other(_) => 8,
            _ => NUMERIC.iter().find(|r| &r.0 == self).map_or(8, |r| r.3),
        }
    }

    /// The default fill value anndata / zarr-python write for this dtype.
    pub fn default_fill(&self) -> Value {
        match self {
            DType::Bool => Value::Bool(false),
            DType::String => Value::String(String::new()),
            DType::Float16 | DType::Float32 | DType::Float64 => serde_json::json!(0.0),
            DType::Other(_) | DType::Structured(_) => Value::Null,
            _ => serde_json::json!(0),
        }
    }

    /// A short human name (numpy's), for `inspect`.
    pub fn display_name(&self) -> String {
        match self {
            DType::String => "string".to_string(),
            DType::Structured(_) => "structured".to_string(),
            DType::Other(v) => match v {
                Value::String(s) => s.clone(),
                Value::Object(o) => o
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("other")
                    .to_string(),
                Value::Array(_) => "structured".to_string(),
                _ => "other".to_string(),
            },
            _ => self.v3_name().unwrap_or("other").to_string(),
        }
    }
}

/// Serialized as the v3 `data_type` name (numeric and string dtypes only:
/// the ones task plans carry).
impl serde::Serialize for DType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.v3_name() {
            Some(name) => serializer.serialize_str(name),
            None => Err(serde::ser::Error::custom(format!(
                "dtype {} cannot be serialized",
                self.display_name()
            ))),
        }
    }
}

impl<'de> serde::Deserialize<'de> for DType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        match DType::from_v3(&Value::String(name.clone())) {
            DType::Other(_) => Err(serde::de::Error::custom(format!("unknown dtype {name:?}"))),
            d => Ok(d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn v2_and_v3_spellings_round_trip() {
        for (dt, v2, v3, _) in NUMERIC {
            assert_eq!(&DType::from_v2(&json!(v2), &Value::Null), dt);
            assert_eq!(&DType::from_v3(&json!(v3)), dt);
            assert_eq!(dt.v2_name(), Some(*v2));
            assert_eq!(dt.v3_name(), Some(*v3));
        }
        assert_eq!(DType::from_v2(&json!("<i1"), &Value::Null), DType::Int8);
        assert_eq!(
            DType::from_v2(&json!("|O"), &json!([{"id": "vlen-utf8"}])),
            DType::String
        );
        assert!(matches!(
            DType::from_v2(&json!("|O"), &Value::Null),
            DType::Other(_)
        ));
        assert!(matches!(
            DType::from_v2(&json!(">f8"), &Value::Null),
            DType::Other(_)
        ));
        assert_eq!(DType::from_v3(&json!("string")), DType::String);
        assert!(matches!(
            DType::from_v3(&json!({"name": "structured"})),
            DType::Other(_)
        ));
    }
}
