//! End-to-end tests of `anncat concat` on the committed fixtures: a run that
//! works, and every kind of bad input giving one clear line, a non-zero exit,
//! no output that looks complete, and inputs left untouched.

mod common;

use std::path::Path;

use common::{copy_tree, fixture, tree_bytes as snapshot};
use std::process::{Command, Output};

fn anncat(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anncat"))
        .args(args)
        .output()
        .expect("run anncat")
}

/// Runs anncat, which must succeed; returns its output.
fn anncat_ok(args: &[&str]) -> Output {
    let res = anncat(args);
    assert!(
        res.status.success(),
        "anncat {args:?}: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    res
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs anncat (`args`), which must fail with one line on stderr, no
/// panic, mentioning each of `must_mention`; returns that line.
fn expect_one_line_error(args: &[&str], must_mention: &[&str]) -> String {
    let res = anncat(args);
    let err = String::from_utf8_lossy(&res.stderr).into_owned();
    assert!(!res.status.success(), "concat succeeded: {args:?}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for m in must_mention {
        assert!(err.contains(m), "{err:?} does not mention {m:?}");
    }
    err
}

/// Runs a concat that must fail, checks the error is one line mentioning
/// each of `must_mention` and that nothing was left behind; returns it.
fn expect_failure(inputs: &[&Path], extra: &[&str], must_mention: &[&str]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.zarr");
    let before: Vec<_> = inputs
        .iter()
        .filter(|p| p.is_dir())
        .map(|p| snapshot(p))
        .collect();
    let mut args = vec!["concat"];
    args.extend(inputs.iter().map(|p| s(p)));
    args.extend(["-o", s(&out), "--quiet"]);
    args.extend(extra);
    let err = expect_one_line_error(&args, must_mention);
    assert!(!out.exists(), "output left behind");
    assert!(
        !dir.path().join("out.zarr.partial").exists(),
        "partial output left behind"
    );
    let after: Vec<_> = inputs
        .iter()
        .filter(|p| p.is_dir())
        .map(|p| snapshot(p))
        .collect();
    assert!(before == after, "an input was modified");
    err
}

/// Runs a concat (`args`) that must fail once its tasks run: one line
/// mentioning each of `must_mention`, no output at `out` that looks
/// complete, and the partial output kept for `--resume`; returns the error.
fn expect_failure_while_running(args: &[&str], out: &Path, must_mention: &[&str]) -> String {
    let err = expect_one_line_error(args, must_mention);
    assert!(!out.exists(), "an output that looks complete");
    let partial = out.with_file_name(format!(
        "{}.partial",
        out.file_name()
            .and_then(|n| n.to_str())
            .expect("a file name")
    ));
    assert!(partial.is_dir(), "partial output removed");
    err
}

/// Rewrites the JSON document at `path` with `edit`.
fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
    edit(&mut doc);
    std::fs::write(path, doc.to_string()).expect("write");
}

#[test]
fn concat_of_fixtures_works_and_reports() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.zarr");
    let a = fixture("chunked_v2.zarr");
    let b = fixture("chunked_v3s.zarr");
    let res = anncat(&[
        "concat",
        &format!("a={}", s(&a)),
        &format!("b={}", s(&b)),
        "-o",
        s(&out),
        "--join",
        "outer",
        "--label",
        "batch",
        "--index-unique",
        "-",
        "--chunk-mib",
        "0.002",
    ]);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(String::from_utf8_lossy(&res.stderr).contains("206 obs x 29 vars"));
    let ins = anncat(&["inspect", "--json", s(&out)]);
    let report: serde_json::Value = serde_json::from_slice(&ins.stdout).expect("json");
    let paths: Vec<&str> = report["elements"]
        .as_array()
        .expect("elements")
        .iter()
        .map(|e| e["path"].as_str().expect("path"))
        .collect();
    for p in [
        "X",
        "obs/batch",
        "obs/v",
        "layers/sparse/indptr",
        "var/_index",
    ] {
        assert!(paths.contains(&p), "{p} missing from {paths:?}");
    }
    assert_eq!(report["zarr_format"], 2);
    assert!(out.join(".zmetadata").is_file());
    assert!(
        !out.join(".anncat").exists(),
        "scratch data left in the output"
    );
}

#[test]
fn duplicate_keys_and_bad_options_are_refused() {
    let a = fixture("chunked_v2.zarr");
    let b = fixture("chunked_v3.zarr");
    let option = |extra: &[&str], what: &str| {
        expect_failure(&[&a, &b], extra, &["invalid option", what]);
    };
    option(&["--keys", "x,x"], "duplicate key \"x\"");
    option(&["--keys", "x"], "1 keys given for 2 inputs");
    option(&["--axis", "diagonal"], "--axis");
    option(&["--join", "left"], "--join");
    option(&["--merge", "most"], "--merge");
    option(&["--memory-limit", "1KiB"], "--memory-limit");
    option(&["--memory-limit", "lots"], "invalid size");
    option(&["--fill-value", "abc"], "--fill-value");
}

#[test]
fn data_problems_name_the_element_and_are_not_called_options() {
    let dir = tempfile::tempdir().expect("tempdir");
    let no_x = dir.path().join("no_x.zarr");
    copy_tree(&fixture("chunked_v2.zarr"), &no_x);
    std::fs::remove_dir_all(no_x.join("X")).expect("remove X");
    std::fs::remove_file(no_x.join(".zmetadata")).ok();
    let err = expect_failure(
        &[&fixture("chunked_v3.zarr"), &no_x],
        &[],
        &["X", "some inputs have X and others do not"],
    );
    assert!(!err.contains("invalid option"), "{err}");
}

#[test]
fn duplicate_names_on_the_joined_axis_are_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dup = dir.path().join("dup.zarr");
    copy_tree(&fixture("chunked_v2.zarr"), &dup);
    let store = anncat_core::anndata::OutputStore::open(&dup).expect("open");
    let mut names: Vec<String> = (0..29).map(|i| format!("gene{i}")).collect();
    names[5] = "gene3".to_string();
    anncat_core::concat::frame::write_strings(&store, "var/_index", &names, 29)
        .expect("rewrite var names");
    let other = fixture("chunked_v3.zarr");
    expect_failure(
        &[&other, &dup],
        &[],
        &["dup.zarr", "var", "duplicate name \"gene3\""],
    );
}

#[test]
fn incompatible_shapes_and_unreadable_data_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad_shape = dir.path().join("shape.zarr");
    copy_tree(&fixture("edge_v2.zarr"), &bad_shape);
    edit_json(&bad_shape.join("obsm/X_pca/.zarray"), |doc| {
        doc["shape"] = serde_json::json!([5, 3]);
    });
    expect_failure(
        &[&fixture("edge_v2.zarr"), &bad_shape],
        &[],
        &["shape.zarr", "obsm/X_pca", "has 5 rows"],
    );

    // Found only half way: a corrupt chunk in the second input's X.
    let corrupt = dir.path().join("corrupt.zarr");
    copy_tree(&fixture("chunked_v2.zarr"), &corrupt);
    let chunk = corrupt.join("X/5.3");
    let bytes = std::fs::read(&chunk).expect("chunk");
    std::fs::write(&chunk, &bytes[..bytes.len() / 3]).expect("truncate");
    // Found while the run goes: the partial output is kept for --resume.
    let out = dir.path().join("out.zarr");
    expect_failure_while_running(
        &[
            "concat",
            s(&fixture("chunked_v3.zarr")),
            s(&corrupt),
            "-o",
            s(&out),
            "--quiet",
            "--chunk-mib",
            "0.002",
        ],
        &out,
        &[
            "corrupt.zarr",
            ": X:",
            "cannot read",
            "kept: rerun with --resume",
        ],
    );
}

/// A stored column index outside its matrix is an error naming the file,
/// the array and the index (it was an internal error: a kernel indexed
/// past the reindexer).
#[test]
fn a_column_index_outside_the_matrix_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad_index.zarr");
    copy_tree(&fixture("edge_v2.zarr"), &bad);
    // X/indices rewritten uncompressed: every index 0 but the last, 1000
    // (X has 4 columns).
    let mut n = 0;
    edit_json(&bad.join("X/indices/.zarray"), |doc| {
        n = doc["chunks"][0].as_u64().expect("one chunk") as usize;
        doc["compressor"] = serde_json::Value::Null;
    });
    let mut raw = vec![0u8; 4 * n];
    raw[4 * (n - 1)..].copy_from_slice(&1000i32.to_le_bytes());
    std::fs::write(bad.join("X/indices/0"), raw).expect("write");
    let out = dir.path().join("out.zarr");
    let err = expect_failure_while_running(
        &[
            "concat",
            s(&bad),
            s(&fixture("chunked_v2.zarr")),
            "-o",
            s(&out),
            "--join",
            "outer",
            "--quiet",
        ],
        &out,
        &[
            "bad_index.zarr",
            "X/indices",
            "column index 1000",
            "4 columns",
        ],
    );
    assert!(!err.contains("internal error"), "{err}");
}

#[test]
fn output_placement_is_checked() {
    let a = fixture("chunked_v2.zarr");
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.zarr");
    copy_tree(&a, &input);
    let inside = input.join("out.zarr");
    let res = anncat(&["concat", s(&input), "-o", s(&inside)]);
    assert!(!res.status.success() && String::from_utf8_lossy(&res.stderr).contains("inside input"));
    assert!(!inside.exists());

    let existing = dir.path().join("existing.zarr");
    std::fs::create_dir(&existing).expect("mkdir");
    std::fs::write(existing.join("keep"), b"mine").expect("write");
    let res = anncat(&["concat", s(&input), "-o", s(&existing), "--quiet"]);
    assert!(!res.status.success() && String::from_utf8_lossy(&res.stderr).contains("--overwrite"));
    assert_eq!(std::fs::read(existing.join("keep")).expect("kept"), b"mine");
    anncat_ok(&[
        "concat",
        s(&input),
        "-o",
        s(&existing),
        "--quiet",
        "--overwrite",
    ]);
    assert!(!existing.join("keep").exists());

    let missing = dir.path().join("missing.zarr");
    expect_failure(&[&a, &missing], &[], &["missing.zarr", "no such file"]);
}

#[test]
fn an_h5ad_output_is_one_hdf5_file_and_other_names_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("atlas.h5ad");
    let a = fixture("chunked_v2.zarr");
    let twice = ["--quiet", "--index-unique", "-"];
    anncat_ok(&[&["concat", s(&a), s(&a), "-o", s(&out)][..], &twice].concat());
    let head = std::fs::read(&out).expect("h5ad written as a file");
    assert_eq!(&head[..8], b"\x89HDF\r\n\x1a\n", "not an HDF5 file");
    assert!(!dir.path().join("atlas.h5ad.partial").exists());
    // It reads back as an input: concatenating it with itself doubles it.
    let again = dir.path().join("again.zarr");
    anncat_ok(&[&["concat", s(&out), s(&out), "-o", s(&again)][..], &twice].concat());

    let odd = dir.path().join("atlas.out");
    expect_one_line_error(
        &["concat", s(&a), s(&a), "-o", s(&odd), "--quiet"],
        &["atlas.out", ".zarr or .h5ad"],
    );
    assert!(!odd.exists() && !dir.path().join("atlas.out.partial").exists());
}
