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

#[test]
fn gzip_chunks_inflate_here_as_hdf5_would() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("gz.h5ad");
    let floats: Vec<f64> = (0..1000).map(|i| f64::from(i) * 0.37 - 11.0).collect();
    let rows = ndarray::Array2::from_shape_fn((101, 3), |(r, c)| (r * 3 + c) as i64 - 40);
    {
        let f = hdf5::File::create(&path).expect("create");
        f.new_dataset_builder()
            .deflate(4)
            .chunk(64)
            .with_data(&floats)
            .create("gzip")
            .expect("gzip");
        f.new_dataset_builder()
            .shuffle()
            .deflate(6)
            .chunk(100)
            .with_data(&floats)
            .create("shuffled")
            .expect("shuffled");
        f.new_dataset_builder()
            .deflate(1)
            .chunk((7, 3))
            .with_data(&rows)
            .create("rows")
            .expect("rows");
        // Only the first of its chunks written: the rest reads as fill.
        let part = f
            .new_dataset::<i32>()
            .deflate(4)
            .chunk(10)
            .shape(40)
            .create("part")
            .expect("part");
        part.write_slice(&[5i32; 10], 0..10).expect("write");
    }
    let s = H5Store::open(&path).expect("open");
    let all = |key: &str| {
        let a = s.array(key).expect("array").expect("present");
        assert!(a.deflate.is_some(), "{key} reads its chunks directly");
        let n = a.shape[0].div_ceil(a.chunks[0]);
        (0..n)
            .flat_map(|i| {
                let k = if a.shape.len() == 2 {
                    format!("{key}/{i}.0")
                } else {
                    format!("{key}/{i}")
                };
                s.value(&k).expect("read").expect("chunk")
            })
            .collect::<Vec<u8>>()
    };
    let want: Vec<u8> = floats.iter().flat_map(|v| v.to_le_bytes()).collect();
    for key in ["gzip", "shuffled"] {
        let got = all(key);
        assert_eq!(&got[..want.len()], &want[..], "{key}");
    }
    let got = all("rows");
    let want_rows: Vec<u8> = rows.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(&got[..want_rows.len()], &want_rows[..]);
    let got = all("part");
    let want_part: Vec<u8> = (0..40)
        .flat_map(|i| if i < 10 { 5i32 } else { 0 }.to_le_bytes())
        .collect();
    assert_eq!(&got[..want_part.len()], &want_part[..]);

    // A chunk whose stored bytes are damaged fails the read, naming it.
    let info = s
        .array("gzip")
        .expect("array")
        .expect("present")
        .ds
        .chunk_info(1)
        .expect("chunk 1");
    drop(s);
    let mut bytes = std::fs::read(&path).expect("read");
    let at = info.addr as usize + 2;
    bytes[at..at + 40].fill(0xff);
    std::fs::write(&path, bytes).expect("write");
    let s = H5Store::open(&path).expect("open");
    let e = s.value("gzip/0").expect_err("corrupt");
    assert!(e.to_string().contains("inflate"), "{e}");
}
