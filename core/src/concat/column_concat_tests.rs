//! Unit tests of column concatenation (a file of its own: the module is
//! long enough).

use super::*;

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn cs(v: &[&str]) -> Categories {
    Categories::Str(s(v))
}

fn num_cat(codes: Vec<i64>, categories: Values, ordered: bool) -> Column {
    Column::Cat {
        codes,
        categories: Categories::Num(categories),
        ordered,
    }
}

#[test]
fn numeric_categories_unify_as_pandas_does() {
    // int8 [10, 2] + int32 [3, 1, 100] -> int64, sorted by value.
    let a = num_cat(vec![0, 1], Values::I8(vec![10, 2]), false);
    let b = num_cat(vec![2, -1], Values::I32(vec![3, 1, 100]), false);
    assert_eq!(
        concat_column(&[(Some(&a), 2), (Some(&b), 2)]).expect("ints"),
        num_cat(
            vec![3, 1, 4, -1],
            Values::I64(vec![1, 2, 3, 10, 100]),
            false
        )
    );
    // The first input's order when it is the union; float with int -> float64.
    let c = num_cat(vec![0], Values::F64(vec![2.5, 10.0, 2.0]), false);
    let d = num_cat(vec![1], Values::I64(vec![10, 2]), false);
    assert_eq!(
        concat_column(&[(Some(&c), 1), (Some(&d), 1), (None, 1)]).expect("floats"),
        num_cat(vec![0, 2, -1], Values::F64(vec![2.5, 10.0, 2.0]), false)
    );
    // Ordered ones must agree; numbers never mix with strings.
    let o1 = num_cat(vec![0], Values::I64(vec![3, 1]), true);
    let o2 = num_cat(vec![0], Values::I64(vec![1, 3]), true);
    assert!(concat_column(&[(Some(&o1), 1), (Some(&o2), 1)]).is_err());
    assert_eq!(
        concat_column(&[(Some(&o1), 1), (Some(&o1), 1)]).expect("same ordered"),
        num_cat(vec![0, 0], Values::I64(vec![3, 1]), true)
    );
    let st = Column::Cat {
        codes: vec![0],
        categories: cs(&["a"]),
        ordered: false,
    };
    assert!(concat_column(&[(Some(&o1), 1), (Some(&st), 1)]).is_err());
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
        categories: cs(&["x", "a10"]),
        ordered: false,
    };
    let c2 = Column::Cat {
        codes: vec![0],
        categories: cs(&["a2"]),
        ordered: false,
    };
    let Column::Cat {
        codes, categories, ..
    } = concat_column(&[(Some(&c1), 2), (Some(&c2), 1)]).expect("cat")
    else {
        panic!("categorical expected")
    };
    assert_eq!(categories, cs(&["a2", "a10", "x"]));
    assert_eq!(codes, vec![2, 1, 0]);
    // The first input's order survives when it holds every category.
    let Column::Cat { categories, .. } = concat_column(&[(Some(&c1), 2), (None, 1)]).expect("cat")
    else {
        panic!("categorical expected")
    };
    assert_eq!(categories, cs(&["x", "a10"]));
    let st = Column::Str(s(&["p", "q"]));
    assert_eq!(
        concat_column(&[(Some(&st), 2), (Some(&st), 2)]).expect("str"),
        Column::Cat {
            codes: vec![0, 1, 0, 1],
            categories: cs(&["p", "q"]),
            ordered: false
        }
    );
}

#[test]
fn strings_stay_strings_only_when_unique_and_complete() {
    let a = Column::Str(s(&["p", "q"]));
    let b = Column::Str(s(&["r"]));
    assert_eq!(
        concat_column(&[(Some(&a), 2), (Some(&b), 1)]).expect("unique"),
        Column::Str(s(&["p", "q", "r"]))
    );
    // A missing part makes a categorical with code -1.
    assert_eq!(
        concat_column(&[(Some(&a), 2), (None, 1)]).expect("missing"),
        Column::Cat {
            codes: vec![0, 1, -1],
            categories: cs(&["p", "q"]),
            ordered: false
        }
    );
    // Nullable strings with a repeat become a categorical too.
    let n = Column::NullStr {
        values: s(&["x", "", "x"]),
        mask: vec![false, true, false],
        na: NaValue::NaN,
    };
    assert_eq!(
        concat_column(&[(Some(&n), 3)]).expect("nullable"),
        Column::Cat {
            codes: vec![0, -1, 0],
            categories: cs(&["x"]),
            ordered: false
        }
    );
}

#[test]
fn conform_refuses_a_piece_of_another_kind() {
    let t = ColumnTarget::Num(DType::Float64);
    assert!(t.conform(Some(&Column::Str(s(&["a"]))), 1).is_err());
    let ordered = |c: &[&str]| Column::Cat {
        codes: Vec::new(),
        categories: cs(c),
        ordered: true,
    };
    // Ordered categoricals that disagree fall back to strings.
    let (a, b) = (ordered(&["a", "b"]), ordered(&["b", "a"]));
    assert!(matches!(
        ColumnTarget::decide(&[(Some(&a), 1), (Some(&b), 1)], Pandas::V2).expect("decide"),
        ColumnTarget::Str
    ));
}

#[test]
fn zero_row_inputs_of_another_kind_follow_pandas() {
    let ints = Column::Num(Values::I64(vec![1, 2]));
    let bools = Column::Num(Values::Bool(vec![true, false]));
    let no_floats = Column::Num(Values::F64(Vec::new()));
    let no_strings = Column::Str(Vec::new());
    let cat = Column::Cat {
        codes: vec![0, 1],
        categories: cs(&["a", "b"]),
        ordered: false,
    };
    let texts = |parts: &[(Option<&Column>, usize)], pandas| {
        let heads: Vec<_> = parts.iter().map(|(c, n)| (*c, *n as u64)).collect();
        let t = ColumnTarget::decide(&heads, pandas).expect("decide");
        let mut out = t.empty().expect("empty");
        for (c, n) in parts {
            out.append(t.conform(*c, *n).expect("conform"))
                .expect("append");
        }
        out
    };
    let strs = |v: &[&str]| Column::Str(s(v));
    // Numbers beside empty strings: an object column of numbers.
    let got = texts(&[(Some(&ints), 2), (Some(&no_strings), 0)], Pandas::V2);
    assert!(got == strs(&["1", "2"]), "{got:?}");
    let got = texts(&[(Some(&no_strings), 0), (Some(&bools), 2)], Pandas::V3);
    assert!(got == strs(&["True", "False"]), "{got:?}");
    // Booleans beside an empty float column differ between pandas 2 and 3.
    let got = texts(&[(Some(&bools), 2), (Some(&no_floats), 0)], Pandas::V2);
    assert!(got == strs(&["1.0", "0.0"]), "{got:?}");
    let got = texts(&[(Some(&bools), 2), (Some(&no_floats), 0)], Pandas::V3);
    assert!(got == strs(&["True", "False"]), "{got:?}");
    let got = texts(&[(Some(&no_floats), 0), (Some(&bools), 2)], Pandas::V3);
    assert!(got == Column::Num(Values::F64(vec![1.0, 0.0])), "{got:?}");
    // A categorical keeps its kind beside an empty float column.
    let got = texts(&[(Some(&no_floats), 0), (Some(&cat), 2)], Pandas::V2);
    assert!(got == cat, "{got:?}");
    // Without a rule (or with missing rows) the refusal stands.
    let heads = [(Some(&ints), 2), (Some(&no_strings), 0), (None, 3)];
    assert!(ColumnTarget::decide(&heads, Pandas::V2).is_err());
    assert!(ColumnTarget::decide(&[(Some(&ints), 2), (Some(&cat), 2)], Pandas::V2).is_err());
}

#[test]
fn floats_are_spelled_as_python_does() {
    let cases = [
        (1.0, "1.0"),
        (0.5, "0.5"),
        (-2.25, "-2.25"),
        (1e20, "1e+20"),
        (1.5e-5, "1.5e-05"),
        (1e16, "1e+16"),
        (123456789012345.0, "123456789012345.0"),
        (0.0001, "0.0001"),
        (0.1 + 0.2, "0.30000000000000004"),
        (f64::NAN, "nan"),
        (f64::NEG_INFINITY, "-inf"),
    ];
    for (f, want) in cases {
        assert_eq!(python_float_repr(f), want, "{f}");
    }
}
