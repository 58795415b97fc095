//! Unit tests of reading HDF5 as zarr.

use super::*;

fn value_json(s: &H5Store, key: &str) -> Value {
    serde_json::from_slice(&s.value(key).expect("read").expect("present")).expect("json")
}

#[test]
fn hdf5_objects_read_as_zarr_v2_keys() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("t.h5ad");
    {
        let f = hdf5::File::create(&path).expect("create");
        let g = f.create_group("obs").expect("group");
        let kind: VarLenUnicode = "dataframe".parse().expect("str");
        g.new_attr::<VarLenUnicode>()
            .create("encoding-type")
            .expect("attr")
            .write_scalar(&kind)
            .expect("write");
        let n = g
            .new_dataset::<i32>()
            .chunk(4)
            .shape(10)
            .create("n")
            .expect("dataset");
        n.write(&ndarray::Array1::from_iter(0..10)).expect("write");
        let names: Vec<VarLenUnicode> = ["a", "bb", "ccc"]
            .iter()
            .map(|s| s.parse().expect("str"))
            .collect();
        g.new_dataset_builder()
            .with_data(&names)
            .create("_index")
            .expect("names");
    }
    assert!(is_hdf5(&path));
    let s = H5Store::open(&path).expect("open");
    assert_eq!(s.children("obs").expect("children"), ["_index", "n"]);
    assert_eq!(value_json(&s, "obs/.zgroup")["zarr_format"], 2);
    assert_eq!(value_json(&s, "obs/.zattrs")["encoding-type"], "dataframe");
    let meta = value_json(&s, "obs/n/.zarray");
    assert_eq!(meta["shape"], json!([10]));
    assert_eq!(meta["dtype"], "<i4");
    let chunk = s.value("obs/n/0").expect("read").expect("chunk");
    let expected: Vec<u8> = (0..10i32).flat_map(i32::to_le_bytes).collect();
    assert_eq!(chunk, expected);
    assert_eq!(s.value("obs/n/1").expect("read"), None, "past the end");
    assert_eq!(
        value_json(&s, "obs/_index/.zarray")["filters"][0]["id"],
        "vlen-utf8"
    );
    let strings = s.value("obs/_index/0").expect("read").expect("chunk");
    let mut want = 3u32.to_le_bytes().to_vec();
    for t in ["a", "bb", "ccc"] {
        want.extend((t.len() as u32).to_le_bytes());
        want.extend(t.as_bytes());
    }
    assert_eq!(strings, want);
    assert_eq!(s.value("obs/nothing/.zarray").expect("read"), None);
    let text = dir.path().join("notes.h5ad");
    std::fs::write(&text, "not hdf5").expect("write");
    assert!(!is_hdf5(&text));
    let cut = dir.path().join("cut.h5ad");
    let bytes = std::fs::read(&path).expect("read");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    assert!(H5Store::open(&cut).expect_err("truncated").contains("HDF5"));
}
