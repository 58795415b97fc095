//! End-to-end tests of the `anncat` binary on the committed fixtures (written
//! by Python anndata, see tests/interop/make_fixtures.py --small): inspect,
//! convert round trips compared array by array, and every kind of bad input.

mod common;

use std::path::{Path, PathBuf};

use common::{copy_tree, fixture};
use std::process::{Command, Output};

use anncat_core::anndata::element::Element;
use anncat_core::anndata::{Store, read_tree};
use zarrs_array_bytes::read_all;

/// Reads whole arrays for comparison.
mod zarrs_array_bytes {
    use anncat_core::anndata::Store;

    /// The whole content of the array at `path`, decoded, as comparable bytes.
    pub fn read_all(store: &Store, path: &str) -> String {
        let array = store.array(path).expect("open array");
        let bytes: zarrs::array::ArrayBytes<'static> = array
            .retrieve_array_subset(&array.subset_all())
            .expect("read array");
        format!("{bytes:?}")
    }
}

fn anncat(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_anncat"));
    for a in args {
        cmd.arg(a);
    }
    cmd.output().expect("run anncat")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn array_paths(e: &Element, out: &mut Vec<String>) {
    e.walk(&mut |n| {
        if n.array().is_some() {
            out.push(n.path.clone());
        }
    });
}

/// Asserts that two stores hold the same elements with the same attributes
/// and the same decoded data in every array.
fn assert_same_content(a: &Path, b: &Path) {
    let (sa, sb) = (
        Store::open(a).expect("open a"),
        Store::open(b).expect("open b"),
    );
    let (ta, tb) = (
        read_tree(&sa).expect("tree a"),
        read_tree(&sb).expect("tree b"),
    );
    let mut nodes_a = Vec::new();
    ta.walk(&mut |n| nodes_a.push((n.path.clone(), n.encoding, n.meta.attrs.clone())));
    let mut nodes_b = Vec::new();
    tb.walk(&mut |n| nodes_b.push((n.path.clone(), n.encoding, n.meta.attrs.clone())));
    assert_eq!(nodes_a, nodes_b);
    let mut arrays = Vec::new();
    array_paths(&ta, &mut arrays);
    assert!(!arrays.is_empty());
    for path in arrays {
        assert_eq!(
            read_all(&sa, &path),
            read_all(&sb, &path),
            "array {path} differs"
        );
    }
}

#[test]
fn inspect_lists_every_node_of_an_anndata_store() {
    for name in ["edge_v2.zarr", "edge_v3.zarr", "chunked_v3s.zarr"] {
        let store = fixture(name);
        let out = anncat(&[&"inspect", &"--json", &store]);
        assert!(out.status.success(), "{}", stderr(&out));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        let listed: Vec<&str> = report["elements"]
            .as_array()
            .expect("elements")
            .iter()
            .map(|e| e["path"].as_str().expect("path"))
            .collect();
        let mut on_disk = 0;
        let marker = if name.contains("_v2") {
            [".zgroup", ".zarray"]
        } else {
            ["zarr.json", "zarr.json"]
        };
        fn count(dir: &Path, marker: &[&str; 2], n: &mut usize) {
            if marker.iter().any(|m| dir.join(m).is_file()) {
                *n += 1;
            }
            for e in std::fs::read_dir(dir).expect("dir").flatten() {
                if e.path().is_dir() {
                    count(&e.path(), marker, n);
                }
            }
        }
        count(&store, &marker, &mut on_disk);
        assert_eq!(listed.len(), on_disk, "{name}");
        for path in [
            "X",
            "obs/cell_id",
            "uns/nested/deeper/v",
            "raw/X",
            "obsp/distances/indptr",
        ] {
            if name.starts_with("edge") {
                assert!(listed.contains(&path), "{name} lacks {path}");
            }
        }
        let text = anncat(&[&"inspect", &store]);
        assert!(
            String::from_utf8_lossy(&text.stdout).contains("nullable-string-array")
                || !name.starts_with("edge")
        );
    }
    // An .h5ad says it is HDF5, not "zarr v2".
    let h5ad = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy/a07.h5ad");
    let text = anncat(&[&"inspect", &h5ad]);
    let first = String::from_utf8_lossy(&text.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    assert!(
        first.contains("h5ad: HDF5") && !first.contains("zarr"),
        "{first}"
    );
    let json = anncat(&[&"inspect", &"--json", &h5ad]);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(report["container"], "hdf5");
    // A zarr store shows its compressor (v2) or codecs (v3).
    for (name, want) in [
        ("chunked_v2.zarr", "blosc/lz4"),
        ("chunked_v3.zarr", "zstd"),
    ] {
        let json = anncat(&[&"inspect", &"--json", &fixture(name)]);
        let report: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
        let x = report["elements"]
            .as_array()
            .and_then(|rows| rows.iter().find(|r| r["path"] == "X"))
            .expect("X row");
        assert_eq!(x["compression"], want, "{name}: {x}");
    }
}

#[test]
fn convert_round_trips_between_formats_and_chunkings() {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in [
        "edge_v2.zarr",
        "edge_v3s.zarr",
        "chunked_v2.zarr",
        "chunked_v3.zarr",
    ] {
        let src = fixture(name);
        let v3 = dir.path().join(format!("{name}.v3"));
        let v2 = dir.path().join(format!("{name}.v2"));
        let re = dir.path().join(format!("{name}.re"));
        for (out, args) in [
            (
                &v3,
                vec![
                    "--zarr-format",
                    "3",
                    "--chunk-mib",
                    "0.001",
                    "--shard-mib",
                    "0.01",
                ],
            ),
            (&v2, vec!["--zarr-format", "2"]),
            (&re, vec!["--chunk-mib", "0.0003"]),
        ] {
            let input = if out == &v2 { &v3 } else { &src };
            let mut argv: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"convert", input, &"-o", out];
            for a in &args {
                argv.push(a);
            }
            let res = anncat(&argv);
            assert!(res.status.success(), "{name}: {}", stderr(&res));
            assert_same_content(&src, out);
        }
        assert!(Store::open(&v2).expect("v2").format() == anncat_core::anndata::ZarrFormat::V2);
        assert!(v3.join("zarr.json").is_file() && v2.join(".zmetadata").is_file());
    }
}

/// Runs a convert that must fail; checks the one-line error and that no
/// output (complete-looking or partial) is left behind.
fn expect_convert_failure(input: &Path, extra: &[&str], must_mention: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let out_path = dir.path().join("out.zarr");
    let mut argv: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"convert", &input, &"-o", &out_path];
    for a in extra {
        argv.push(a);
    }
    let out = anncat(&argv);
    let err = stderr(&out);
    assert!(
        !out.status.success(),
        "convert of {} succeeded",
        input.display()
    );
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "error is not one line: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    for m in must_mention {
        assert!(err.contains(m), "error {err:?} does not mention {m:?}");
    }
    assert!(!out_path.exists(), "output left behind");
    assert!(
        !dir.path().join("out.zarr.partial").exists(),
        "partial output left behind"
    );
}

/// A damaged copy of a fixture.
fn damaged(name: &str, damage: impl FnOnce(&Path)) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    copy_tree(&fixture(name), &path);
    damage(&path);
    (dir, path)
}

#[test]
fn missing_path_and_non_stores_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.zarr");
    expect_convert_failure(&missing, &[], &["nope.zarr", "no such file"]);
    let empty = dir.path().join("empty.zarr");
    std::fs::create_dir(&empty).expect("mkdir");
    expect_convert_failure(&empty, &[], &["empty.zarr", "not a zarr store"]);
    let plain_file = dir.path().join("file.zarr");
    std::fs::write(&plain_file, b"hello").expect("write");
    expect_convert_failure(&plain_file, &[], &["file.zarr", "not a zarr store"]);
    let (_d, not_anndata) = damaged("edge_v2.zarr", |p| {
        std::fs::write(p.join(".zattrs"), b"{}").expect("write");
    });
    expect_convert_failure(&not_anndata, &[], &["edge_v2.zarr", "not an AnnData store"]);
    let inspect = anncat(&[&"inspect", &missing]);
    assert!(!inspect.status.success() && stderr(&inspect).contains("nope.zarr"));
}

#[test]
fn unknown_encoding_and_corrupt_metadata_name_the_element() {
    let (_d, unknown) = damaged("edge_v2.zarr", |p| {
        let attrs = std::fs::read_to_string(p.join("obs/.zattrs")).expect("read");
        std::fs::write(
            p.join("obs/.zattrs"),
            attrs.replace("\"dataframe\"", "\"data-frame-9000\""),
        )
        .expect("write");
    });
    expect_convert_failure(
        &unknown,
        &[],
        &[
            "edge_v2.zarr",
            "obs",
            "unknown encoding-type \"data-frame-9000\"",
        ],
    );
    let (_d, corrupt) = damaged("edge_v3.zarr", |p| {
        std::fs::write(p.join("X/zarr.json"), b"{\"zarr_format\": 3, \"node_").expect("write");
    });
    expect_convert_failure(&corrupt, &[], &["edge_v3.zarr", ": X:", "corrupt metadata"]);
    let (_d, corrupt_v2) = damaged("chunked_v2.zarr", |p| {
        std::fs::write(p.join("obs/v/.zarray"), b"not json").expect("write");
    });
    expect_convert_failure(
        &corrupt_v2,
        &[],
        &["chunked_v2.zarr", "obs/v", "corrupt metadata"],
    );
}

#[test]
fn truncated_and_missing_chunks_are_errors() {
    let (_d, truncated) = damaged("chunked_v2.zarr", |p| {
        let chunk = p.join("X/1.2");
        let bytes = std::fs::read(&chunk).expect("chunk");
        std::fs::write(&chunk, &bytes[..bytes.len() / 2]).expect("truncate");
    });
    expect_convert_failure(
        &truncated,
        &["--zarr-format", "3"],
        &["chunked_v2.zarr", ": X:", "cannot read"],
    );
    let (_d, truncated_v3) = damaged("edge_v3.zarr", |p| {
        let chunk = p.join("obs/cell_id/c/0");
        let bytes = std::fs::read(&chunk).expect("chunk");
        std::fs::write(&chunk, &bytes[..bytes.len() - 3]).expect("truncate");
    });
    expect_convert_failure(
        &truncated_v3,
        &["--zarr-format", "2"],
        &["edge_v3.zarr", "obs/cell_id"],
    );
    // A missing indptr chunk reads as zeros: the pointer array then decreases.
    let (_d, missing) = damaged("chunked_v2.zarr", |p| {
        std::fs::remove_file(p.join("layers/sparse/indptr/1")).expect("remove chunk");
    });
    expect_convert_failure(
        &missing,
        &[],
        &[
            "chunked_v2.zarr",
            "layers/sparse/indptr",
            "missing or corrupt chunk",
        ],
    );
}

#[test]
fn shapes_that_disagree_with_the_data_are_errors() {
    let (_d, sparse_shape) = damaged("edge_v2.zarr", |p| {
        let attrs = std::fs::read_to_string(p.join("X/.zattrs")).expect("read");
        let v: serde_json::Value = serde_json::from_str(&attrs).expect("json");
        let mut v = v;
        v["shape"] = serde_json::json!([7, 4]);
        std::fs::write(p.join("X/.zattrs"), v.to_string()).expect("write");
    });
    expect_convert_failure(
        &sparse_shape,
        &[],
        &["edge_v2.zarr", ": X:", "indptr has 7 entries"],
    );
    let (_d, column_len) = damaged("chunked_v3.zarr", |p| {
        let doc = std::fs::read_to_string(p.join("obs/v/zarr.json")).expect("read");
        let mut v: serde_json::Value = serde_json::from_str(&doc).expect("json");
        v["shape"] = serde_json::json!([50]);
        std::fs::write(p.join("obs/v/zarr.json"), v.to_string()).expect("write");
    });
    expect_convert_failure(
        &column_len,
        &[],
        &["chunked_v3.zarr", "obs", "column \"v\" has 50 rows"],
    );
    let (_d, grown) = damaged("edge_v2.zarr", |p| {
        let doc = std::fs::read_to_string(p.join("layers/counts/.zarray")).expect("read");
        let mut v: serde_json::Value = serde_json::from_str(&doc).expect("json");
        v["shape"] = serde_json::json!([7, 4]);
        v["chunks"] = serde_json::json!([7, 4]);
        std::fs::write(p.join("layers/counts/.zarray"), v.to_string()).expect("write");
    });
    expect_convert_failure(
        &grown,
        &[],
        &[
            "edge_v2.zarr",
            "layers/counts",
            "has 7 rows but the AnnData has 6",
        ],
    );
    // The same disagreement inside the data itself: chunks holding fewer
    // values than the metadata says, found while decoding.
    let (_d, short_chunk) = damaged("chunked_v2.zarr", |p| {
        let doc = std::fs::read_to_string(p.join("X/.zarray")).expect("read");
        let mut v: serde_json::Value = serde_json::from_str(&doc).expect("json");
        v["chunks"] = serde_json::json!([20, 7]);
        std::fs::write(p.join("X/.zarray"), v.to_string()).expect("write");
    });
    expect_convert_failure(
        &short_chunk,
        &["--zarr-format", "3"],
        &["chunked_v2.zarr", ": X:", "cannot read"],
    );
}

#[test]
fn bad_options_and_outputs_are_refused() {
    let src = fixture("edge_v2.zarr");
    expect_convert_failure(
        &src,
        &["--zarr-format", "2", "--shard-mib", "4"],
        &["--shard-mib"],
    );
    expect_convert_failure(&src, &["--chunk-mib", "-1"], &["--chunk-mib"]);
    expect_convert_failure(
        &src,
        &["--chunk-mib", "4", "--shard-mib", "1"],
        &["--shard-mib"],
    );
    let bad_format = anncat(&[
        &"convert",
        &src,
        &"-o",
        &"/tmp/never.zarr",
        &"--zarr-format",
        &"4",
    ]);
    assert!(!bad_format.status.success() && !Path::new("/tmp/never.zarr").exists());

    let dir = tempfile::tempdir().expect("tempdir");
    let existing = dir.path().join("existing.zarr");
    std::fs::create_dir(&existing).expect("mkdir");
    std::fs::write(existing.join("keep"), b"mine").expect("write");
    let out = anncat(&[&"convert", &src, &"-o", &existing]);
    assert!(!out.status.success() && stderr(&out).contains("--overwrite"));
    assert_eq!(std::fs::read(existing.join("keep")).expect("kept"), b"mine");
    let out = anncat(&[&"convert", &src, &"-o", &existing, &"--overwrite"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!existing.join("keep").exists() && existing.join(".zmetadata").is_file());

    let no_parent = dir.path().join("no/such/dir/out.zarr");
    let out = anncat(&[&"convert", &src, &"-o", &no_parent]);
    assert!(
        !out.status.success() && stderr(&out).contains("out.zarr"),
        "{}",
        stderr(&out)
    );

    let readonly = dir.path().join("ro");
    std::fs::create_dir(&readonly).expect("mkdir");
    let mut perms = std::fs::metadata(&readonly).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o555);
    std::fs::set_permissions(&readonly, perms).expect("chmod");
    let out = anncat(&[&"convert", &src, &"-o", &readonly.join("out.zarr")]);
    // Root ignores directory permissions; only check the refusal when it applies.
    let writable = std::fs::write(readonly.join("probe"), b"").is_ok();
    if !writable {
        assert!(
            !out.status.success() && stderr(&out).contains("permission denied"),
            "{}",
            stderr(&out)
        );
    }

    let inside = src.join("out.zarr");
    let out = anncat(&[&"convert", &src, &"-o", &inside]);
    assert!(!out.status.success() && stderr(&out).contains("inside input"));
    assert!(!inside.exists());
}

/// Usage errors keep what helps, on one line: the missing argument's name
/// and clap's "did you mean"; bare `anncat` prints the usage. Exit 2.
#[test]
fn usage_errors_name_the_missing_argument_and_suggest_the_flag() {
    let missing = anncat(&[&"concat", &"a.zarr", &"b.zarr"]);
    let e = stderr(&missing);
    assert_eq!(missing.status.code(), Some(2), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(e.contains("--output"), "{e}");
    let typo = anncat(&[&"concat", &"a.zarr", &"-o", &"o.zarr", &"--jion", &"outer"]);
    let e = stderr(&typo);
    assert_eq!(typo.status.code(), Some(2), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(e.contains("'--jion'") && e.contains("'--join'"), "{e}");
    let bare = anncat(&[]);
    let e = stderr(&bare);
    assert_eq!(bare.status.code(), Some(2), "{e}");
    assert!(e.contains("Usage: anncat") && e.contains("concat"), "{e}");
    assert!(!e.contains("invalid option"), "{e}");
}

/// A bad value says where it came from when that is not the command line:
/// an environment variable, or the config file.
#[test]
fn a_bad_value_names_its_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |env: &[(&str, &str)], extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_anncat"));
        cmd.args(["concat", "a.zarr", "b.zarr", "-o"])
            .arg(dir.path().join("o.zarr"))
            .args(extra)
            .env_remove("ANNCAT_CONFIG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run anncat")
    };
    let from_env = run(&[("ANNCAT_JOIN", "sideways")], &[]);
    let e = stderr(&from_env);
    assert_eq!(from_env.status.code(), Some(2), "{e}");
    assert_eq!(e.trim_end().lines().count(), 1, "{e}");
    assert!(
        e.contains("'sideways'") && e.contains("(from the environment variable ANNCAT_JOIN)"),
        "{e}"
    );
    let on_line = run(&[("ANNCAT_JOIN", "outer")], &["--join", "sideways"]);
    let e = stderr(&on_line);
    assert!(e.contains("'sideways'") && !e.contains("(from"), "{e}");
    let config = dir.path().join("anncat.toml");
    std::fs::write(&config, "[concat]\njoin = \"sideways\"\n").expect("config");
    let from_file = run(&[], &["--config", config.to_str().expect("utf-8")]);
    let e = stderr(&from_file);
    assert_eq!(from_file.status.code(), Some(2), "{e}");
    assert!(
        e.contains("'sideways'") && e.contains("(from the config file"),
        "{e}"
    );
    assert!(e.contains("anncat.toml"), "{e}");
}

/// `anncat inspect --json | head -1`: the closed pipe ends the output
/// quietly (exit 0), not with a panic.
#[test]
fn inspect_into_a_closed_pipe_exits_quietly() {
    use std::io::Read;
    use std::process::Stdio;
    // A store whose listing is far larger than a pipe's buffer (64 KiB),
    // so the writer is still writing when the reader goes away.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("many.zarr");
    copy_tree(&fixture("chunked_v2.zarr"), &store);
    for i in 0..3000 {
        let g = store.join("uns").join(format!("entry_{i:04}"));
        std::fs::create_dir_all(&g).expect("mkdir");
        std::fs::write(g.join(".zgroup"), br#"{"zarr_format": 2}"#).expect("zgroup");
        std::fs::write(
            g.join(".zattrs"),
            br#"{"encoding-type": "dict", "encoding-version": "0.1.0"}"#,
        )
        .expect("zattrs");
    }
    let _ = std::fs::remove_file(store.join(".zmetadata"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_anncat"))
        .args(["inspect", "--json"])
        .arg(&store)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("inspect");
    // Read one byte, then close the pipe before the rest is written.
    let mut stdout = child.stdout.take().expect("stdout");
    let mut one = [0u8; 1];
    stdout.read_exact(&mut one).expect("first byte");
    drop(stdout);
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert!(out.status.success(), "{:?}: {err}", out.status);
}
