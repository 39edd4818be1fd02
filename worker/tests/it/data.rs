//! Data set loading: the IDX and CSV readers, the synthetic sets, the cache
//! and the errors for bad files and specs.

use flate2::Compression;
use flate2::write::GzEncoder;
use hpo_worker::data::{self, DATA_SEED, DataCache, DataError, DataSpec};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// An IDX file of unsigned bytes.
fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// A tiny valid IDX set: `n_train`/`n_val` 2×3 images with labels 0..3,
/// the training images gzipped, the rest plain.
fn write_idx_set(dir: &Path, n_train: u32, n_val: u32) {
    let images = |n: u32| -> Vec<u8> { (0..n * 6).map(|i| (i * 37 % 256) as u8).collect() };
    let labels = |n: u32| -> Vec<u8> { (0..n).map(|i| (i % 3) as u8).collect() };
    std::fs::write(
        dir.join("train-images-idx3-ubyte.gz"),
        gz(&idx(&[n_train, 2, 3], &images(n_train))),
    )
    .unwrap();
    std::fs::write(
        dir.join("train-labels-idx1-ubyte"),
        idx(&[n_train], &labels(n_train)),
    )
    .unwrap();
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte"),
        idx(&[n_val, 2, 3], &images(n_val)),
    )
    .unwrap();
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte"),
        idx(&[n_val], &labels(n_val)),
    )
    .unwrap();
}

fn idx_spec(dir: &Path) -> String {
    format!("idx:{}", dir.display())
}

fn invalid_reason(err: DataError) -> String {
    match err {
        DataError::Invalid { reason, .. } => reason,
        other => panic!("expected an invalid-file error, got {other:?}"),
    }
}

#[test]
fn idx_folder_loads_and_is_standardised() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_set(dir.path(), 30, 9);
    let set = data::load(&idx_spec(dir.path()), 0).unwrap();
    assert_eq!((set.train_len(), set.val_len()), (30, 9));
    assert_eq!((set.features, set.classes), (6, 3));
    assert_eq!(set.train_y[..4], [0, 1, 2, 0]);
    let n = set.train_x.len() as f64;
    let mean = set.train_x.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = set
        .train_x
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    assert!(mean.abs() < 1e-5, "mean {mean}");
    assert!((var - 1.0).abs() < 1e-4, "variance {var}");
    let (x, y) = set.train_tensors(Some(10), tch::Device::Cpu).unwrap();
    assert_eq!(x.size(), [10, 6]);
    assert_eq!(y.size(), [10]);
    assert_eq!(x.kind(), tch::Kind::Float);
    assert_eq!(y.kind(), tch::Kind::Int64);
}

#[test]
fn truncated_gzip_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_set(dir.path(), 200, 10);
    let path = dir.path().join("train-images-idx3-ubyte.gz");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = data::load(&idx_spec(dir.path()), 0).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("train-images-idx3-ubyte.gz"), "{msg}");
    assert!(invalid_reason(err).contains("gzip"), "{msg}");
}

#[test]
fn a_file_that_is_not_idx_is_named_with_its_magic() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_set(dir.path(), 5, 5);
    // A label file where an image file belongs: the magic says one dimension.
    std::fs::write(
        dir.path().join("t10k-images-idx3-ubyte"),
        idx(&[5], &[0; 5]),
    )
    .unwrap();
    let err = data::load(&idx_spec(dir.path()), 0).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("t10k-images-idx3-ubyte"), "{msg}");
    assert!(
        msg.contains("bad IDX magic 0x00000801: expected 0x00000803"),
        "{msg}"
    );

    std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), b"hello, world").unwrap();
    let msg = data::load(&idx_spec(dir.path()), 0)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("bad IDX magic"), "{msg}");

    std::fs::write(dir.path().join("t10k-images-idx3-ubyte"), b"\0\0").unwrap();
    let msg = data::load(&idx_spec(dir.path()), 0)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("too short"), "{msg}");
}

#[test]
fn idx_sizes_must_agree() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_set(dir.path(), 5, 5);
    // Declares 5 images of 2×3 but holds only 20 bytes.
    std::fs::write(
        dir.path().join("t10k-images-idx3-ubyte"),
        idx(&[5, 2, 3], &[0; 20]),
    )
    .unwrap();
    let reason = invalid_reason(data::load(&idx_spec(dir.path()), 0).unwrap_err());
    assert!(reason.contains("need 30 data bytes, found 20"), "{reason}");

    // 5 images but 4 labels.
    write_idx_set(dir.path(), 5, 5);
    std::fs::write(
        dir.path().join("t10k-labels-idx1-ubyte"),
        idx(&[4], &[0; 4]),
    )
    .unwrap();
    let reason = invalid_reason(data::load(&idx_spec(dir.path()), 0).unwrap_err());
    assert!(
        reason.contains("5 images") && reason.contains("4 labels"),
        "{reason}"
    );

    // A missing file is named.
    write_idx_set(dir.path(), 5, 5);
    std::fs::remove_file(dir.path().join("train-labels-idx1-ubyte")).unwrap();
    let reason = invalid_reason(data::load(&idx_spec(dir.path()), 0).unwrap_err());
    assert!(reason.contains("train-labels-idx1-ubyte"), "{reason}");
}

#[test]
fn missing_idx_folder_is_named() {
    let msg = data::load("idx:/nonexistent/hpo-idx", 0)
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("/nonexistent/hpo-idx: not a folder"),
        "{msg}"
    );
}

#[test]
fn unknown_spec_lists_the_accepted_forms() {
    for spec in ["fashion", "synthetic:moons", "idx:", "csv:", ""] {
        let msg = data::load(spec, 0).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!(
                "unknown data set `{spec}`: expected fashion-mnist, mnist, idx:PATH, csv:PATH, synthetic:spirals or synthetic:blobs"
            )
        );
    }
    assert!(matches!(
        data::resolve_named("cifar10"),
        Err(DataError::UnknownSpec(_))
    ));
    assert_eq!(
        DataSpec::parse("csv:/tmp/a.csv").unwrap(),
        DataSpec::Csv("/tmp/a.csv".into())
    );
}

#[test]
fn csv_uses_the_label_column_and_splits_80_20() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("set.csv");
    let mut text = String::from("a, \"label\" ,b\n");
    for i in 0..50 {
        text.push_str(&format!("{}.5,{},{}\n\n", i, i % 4, 100 - i));
    }
    std::fs::write(&path, text).unwrap();
    let spec = format!("csv:{}", path.display());
    let set = data::load(&spec, DATA_SEED).unwrap();
    assert_eq!((set.features, set.classes), (2, 4));
    assert_eq!((set.train_len(), set.val_len()), (40, 10));
    // Every row is kept once, with its label: feature a is i + 0.5, so the
    // standardised a and b are perfectly anti-correlated and label = i % 4.
    let mut labels: Vec<i64> = set.train_y.iter().chain(&set.val_y).copied().collect();
    labels.sort_unstable();
    let mut expected: Vec<i64> = (0..50).map(|i| i % 4).collect();
    expected.sort_unstable();
    assert_eq!(labels, expected);
    for row in set.train_x.chunks(2) {
        assert!((row[0] + row[1]).abs() < 1e-4, "{row:?}");
    }
    let mean_a = set.train_x.iter().step_by(2).sum::<f32>() / 40.0;
    assert!(mean_a.abs() < 1e-4, "{mean_a}");
    // The split is fixed by the seed.
    let again = data::load(&spec, DATA_SEED).unwrap();
    assert_eq!(set.val_y, again.val_y);
    assert_eq!(set.val_x, again.val_x);
}

#[test]
fn csv_without_a_label_column_uses_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("set.csv");
    std::fs::write(&path, "x,y,class\n1,2,0\n3,4,1\n5,6,1.0\n7,8,0\n9,10,2\n").unwrap();
    let set = data::load(&format!("csv:{}", path.display()), 1).unwrap();
    assert_eq!((set.features, set.classes), (2, 3));
    assert_eq!((set.train_len(), set.val_len()), (4, 1));
}

#[test]
fn bad_csv_rows_are_named_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.csv");
    let spec = format!("csv:{}", path.display());
    let cases = [
        (
            "a,label\n1,0\n2\n",
            "line 3: 1 fields, but the header has 2",
        ),
        (
            "a,label\n1,0\nx,1\n",
            "line 3: column `a` has `x`, expected a finite number",
        ),
        (
            "a,label\n1,0\n2,-1\n",
            "line 3: label `-1` is not a class index",
        ),
        (
            "a,label\n1,0\n2,0.5\n",
            "line 3: label `0.5` is not a class index",
        ),
        ("a,label\n1,0\n", "1 data row(s)"),
        ("", "empty file"),
        ("label\n0\n1\n", "the header names one column"),
        ("a,label\n1,0\n2,0\n3,0\n", "needs between 2 and"),
    ];
    for (text, expected) in cases {
        std::fs::write(&path, text).unwrap();
        let msg = data::load(&spec, 0).unwrap_err().to_string();
        assert!(msg.contains(expected), "{text:?}: {msg}");
        assert!(msg.starts_with(&path.display().to_string()), "{msg}");
    }
    let msg = data::load("csv:/nonexistent/hpo.csv", 0)
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("cannot read /nonexistent/hpo.csv: "),
        "{msg}"
    );
}

#[test]
fn synthetic_sets_have_their_shapes_and_are_fixed_by_the_seed() {
    let spirals = data::load("synthetic:spirals", DATA_SEED).unwrap();
    assert_eq!((spirals.features, spirals.classes), (2, 3));
    assert_eq!((spirals.train_len(), spirals.val_len()), (2400, 600));
    let blobs = data::load("synthetic:blobs", DATA_SEED).unwrap();
    assert_eq!((blobs.features, blobs.classes), (64, 10));
    assert_eq!((blobs.train_len(), blobs.val_len()), (10_000, 2000));
    // Balanced, also in any prefix.
    for class in 0..10 {
        assert_eq!(
            blobs.train_y[..100].iter().filter(|&&y| y == class).count(),
            10
        );
    }
    assert_eq!(
        blobs.train_x,
        data::load("synthetic:blobs", DATA_SEED).unwrap().train_x
    );
    assert_ne!(
        blobs.train_x,
        data::load("synthetic:blobs", 7).unwrap().train_x
    );
}

#[test]
fn the_cache_loads_each_set_once_even_when_asked_concurrently() {
    let cache = DataCache::new();
    let sets: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| cache.get("synthetic:blobs", DATA_SEED).unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for set in &sets[1..] {
        assert!(Arc::ptr_eq(&sets[0], set));
    }
    assert!(Arc::ptr_eq(
        &sets[0],
        &cache.get(" synthetic:blobs ", DATA_SEED).unwrap()
    ));
    assert!(!Arc::ptr_eq(
        &sets[0],
        &cache.get("synthetic:blobs", 9).unwrap()
    ));

    // File sets ignore the seed: one load whatever the caller passes.
    let dir = tempfile::tempdir().unwrap();
    write_idx_set(dir.path(), 5, 5);
    let a = cache.get(&idx_spec(dir.path()), 1).unwrap();
    let b = cache.get(&idx_spec(dir.path()), 2).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
}

#[test]
fn a_failed_load_is_retried() {
    let cache = DataCache::new();
    let dir = tempfile::tempdir().unwrap();
    let spec = idx_spec(dir.path());
    assert!(cache.get(&spec, 0).is_err());
    write_idx_set(dir.path(), 5, 5);
    assert_eq!(cache.get(&spec, 0).unwrap().train_len(), 5);
}

#[test]
fn named_sets_resolve_or_say_where_they_looked() {
    for name in data::NAMED_SETS {
        match data::resolve_named(name) {
            Ok(dir) => assert!(
                dir.join("train-labels-idx1-ubyte.gz").is_file()
                    || dir.join("train-labels-idx1-ubyte").is_file()
            ),
            Err(DataError::NotFound { looked, .. }) => {
                assert!(looked.contains(&Path::new("/usr/share/datasets").join(name)));
            }
            Err(other) => panic!("{name}: {other}"),
        }
    }
}
