//! Tests of [`super::Values`] and its conversions.

use super::*;

/// Appending to nothing takes the other buffer itself; appending to
/// values copies after them; another dtype is refused either way.
#[test]
fn append_takes_the_buffer_of_the_first_values() {
    let first = vec![1.5f64, 2.5];
    let at = first.as_ptr();
    let mut values = Values::F64(Vec::new());
    values.append(Values::F64(first)).expect("same dtype");
    assert!(matches!(&values, Values::F64(v) if v.as_ptr() == at && v == &[1.5, 2.5]));
    values.append(Values::F64(vec![3.5])).expect("same dtype");
    assert_eq!(values, Values::F64(vec![1.5, 2.5, 3.5]));
    assert!(values.append(Values::I32(vec![1])).is_err());
    let mut empty = Values::F32(Vec::new());
    assert!(empty.append(Values::I32(vec![1])).is_err());
}

#[test]
fn promotion_follows_numpy() {
    use DType::*;
    let cases = [
        (Int32, Float64, Float64),
        (Int32, Float32, Float64),
        (Int16, Float32, Float32),
        (UInt8, Int8, Int16),
        (UInt32, Int64, Int64),
        (UInt64, Int64, Float64),
        (Bool, Int8, Int8),
        (Float32, Float64, Float64),
        (Int64, Int64, Int64),
    ];
    for (a, b, want) in cases {
        assert_eq!(promote(&a, &b), Some(want.clone()), "{a:?}+{b:?}");
        assert_eq!(promote(&b, &a), Some(want), "{b:?}+{a:?}");
    }
}

#[test]
fn fill_promotion_follows_pandas() {
    use DType::*;
    assert_eq!(
        fill_promote(&Int32, Scalar::Float(f64::NAN)).expect("ok"),
        Float64
    );
    assert_eq!(fill_promote(&Int32, Scalar::Int(0)).expect("ok"), Int32);
    assert_eq!(
        fill_promote(&Float32, Scalar::Float(f64::NAN)).expect("ok"),
        Float32
    );
    assert_eq!(fill_promote(&UInt8, Scalar::Int(-1)).expect("ok"), Int16);
    assert_eq!(
        fill_promote(&Int8, Scalar::Float(0.0)).expect("ok"),
        Float64
    );
    assert!(fill_promote(&Bool, Scalar::Int(0)).is_err());
}

#[test]
fn bytes_cast_take_round_trip() {
    let v = Values::I32(vec![1, -2, 3]);
    let back = Values::from_array_bytes(&DType::Int32, &v.to_array_bytes()).expect("decode");
    assert_eq!(back, v);
    let f = v.cast(&DType::Float64).expect("cast");
    assert_eq!(f, Values::F64(vec![1.0, -2.0, 3.0]));
    let t = f.take(&[Some(2), None, Some(0)], Scalar::Float(f64::NAN));
    let Values::F64(t) = t else { panic!("f64") };
    assert_eq!(t[0], 3.0);
    assert!(t[1].is_nan());
    assert!(Scalar::parse("nan").expect("nan").as_f64().is_nan());
    assert_eq!(Scalar::parse("3").expect("int"), Scalar::Int(3));
    assert!(Scalar::parse("x").is_err());
}

#[test]
fn bytes_round_trip_aligned_or_not_and_gathers_append() {
    let v = Values::F64(vec![1.5, -2.0, 3.25]);
    let bytes = v.to_array_bytes();
    assert_eq!(
        Values::from_array_bytes(&DType::Float64, &bytes).expect("decode"),
        v
    );
    // Bytes that do not start on an 8-byte boundary decode the same.
    let ArrayBytes::Fixed(raw) = &bytes else {
        panic!("fixed")
    };
    let mut shifted = vec![0u8];
    shifted.extend_from_slice(raw);
    let unaligned = ArrayBytes::Fixed(ArrayBytesRaw::from(&shifted[1..]));
    assert_eq!(
        Values::from_array_bytes(&DType::Float64, &unaligned).expect("decode"),
        v
    );
    let i = Values::I16(vec![-1, 2, 300]);
    assert_eq!(
        i.to_le_bytes(),
        [-1i16, 2, 300]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<u8>>()
    );
    let mut out = Values::F64(vec![9.0]);
    out.extend_selected(&v, &[2, 0]).expect("same dtype");
    assert_eq!(out, Values::F64(vec![9.0, 3.25, 1.5]));
    assert!(out.extend_selected(&i, &[0]).is_err(), "dtypes differ");
}

/// A vector's own memory is written in place as little-endian bytes;
/// booleans, which not every byte encodes, are not lent.
#[test]
fn values_lend_their_memory_as_little_endian_bytes() {
    let mut floats = Values::zeros(&DType::Float64, 2).expect("zeros");
    floats.le_bytes_mut().expect("numbers")[8..].copy_from_slice(&2.5f64.to_le_bytes());
    assert_eq!(floats, Values::F64(vec![0.0, 2.5]));
    let mut ints = Values::zeros(&DType::Int32, 1).expect("zeros");
    ints.le_bytes_mut()
        .expect("numbers")
        .copy_from_slice(&(-7i32).to_le_bytes());
    assert_eq!(ints, Values::I32(vec![-7]));
    let mut flags = Values::zeros(&DType::Bool, 1).expect("zeros");
    assert!(flags.le_bytes_mut().is_none());
}
