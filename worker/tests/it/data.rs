//! Data set loading: the IDX and CSV readers, the synthetic sets, the cache
//! and the errors for bad files and specs.

use flate2::Compression;
use flate2::write::GzEncoder;
use hpo_worker::data::{self, DATA_SEED, DataCache, DataError, DataSpec};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// An IDX file of unsigned bytes.
pub fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

pub fn gz(bytes: &[u8]) -> Vec<u8> {
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
                "unknown data set `{spec}`: expected fashion-mnist, mnist, idx:PATH, csv:PATH[?OPTIONS], synthetic:spirals or synthetic:blobs"
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
            "a,label\n1,0\n2,1\nx,1\n",
            "line 4, column a: expected a number, got \"x\"",
        ),
        (
            "a,label\n1,0\n2,\n",
            "line 3, column label: expected a class label, got \"\"",
        ),
        (
            "a,label\n1,0\n\"2,1\n",
            "line 3: a quoted field is not closed",
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

// ---- Tabular CSV: options, encoding, splits and errors ----

/// Writes `text` to `name` in `dir` and returns the file's path.
fn write_csv(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn csv_spec(path: &Path, options: &str) -> String {
    if options.is_empty() {
        format!("csv:{}", path.display())
    } else {
        format!("csv:{}?{options}", path.display())
    }
}

/// Column `col` of a row-major matrix with `width` columns.
fn column(x: &[f32], width: i64, col: usize) -> Vec<f64> {
    x.chunks(width as usize)
        .map(|row| f64::from(row[col]))
        .collect()
}

fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

#[test]
fn csv_numeric_columns_are_standardised_with_the_training_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("height,constant,label\n");
    for i in 0..100 {
        text.push_str(&format!("{},7.5,{}\n", 150 + (i * 37) % 50, i % 2));
    }
    let path = write_csv(dir.path(), "set.csv", &text);
    let set = data::load(&csv_spec(&path, ""), DATA_SEED).unwrap();
    assert_eq!(set.feature_names(), ["height", "constant"]);
    assert_eq!((set.features, set.classes), (2, 2));
    let (mean, std) = mean_std(&column(&set.train_x, 2, 0));
    assert!(mean.abs() < 1e-5, "mean {mean}");
    assert!((std - 1.0).abs() < 1e-5, "std {std}");
    // The validation rows use the training statistics: close, not exact.
    let (val_mean, _) = mean_std(&column(&set.val_x, 2, 0));
    assert!(val_mean.abs() < 0.8, "validation mean {val_mean}");
    // A constant column is 0 everywhere.
    assert!(set.train_x.iter().skip(1).step_by(2).all(|&v| v == 0.0));
    assert!(set.val_x.iter().skip(1).step_by(2).all(|&v| v == 0.0));
    assert_eq!(
        set.task(),
        &data::Task::Classification {
            classes: vec!["0".into(), "1".into()]
        }
    );
    assert_eq!(set.test_len(), 0);
    assert!(set.test_tensors(tch::Device::Cpu).unwrap().is_none());
}

#[test]
fn csv_categorical_columns_are_one_hot_with_the_training_categories() {
    let dir = tempfile::tempdir().unwrap();
    // Training rows see paris and rome; oslo appears only in validation.
    let path = write_csv(
        dir.path(),
        "cities.csv",
        "city,size,fold,label\n\
         paris,1,train,a\n\
         rome,2,train,b\n\
         paris,3,train,a\n\
         rome,4,train,b\n\
         oslo,5,val,a\n\
         rome,6,val,b\n\
         NA,7,val,a\n",
    );
    let set = data::load(&csv_spec(&path, "split_column=fold"), 0).unwrap();
    assert_eq!(set.feature_names(), ["city=paris", "city=rome", "size"]);
    assert_eq!(set.features, 3);
    assert_eq!(
        set.task(),
        &data::Task::Classification {
            classes: vec!["a".into(), "b".into()]
        }
    );
    // Training one-hot columns: one 1 per row, matching the label here.
    for (row, &y) in set.train_x.chunks(3).zip(&set.train_y) {
        let expected: [f32; 2] = if y == 0 { [1.0, 0.0] } else { [0.0, 1.0] };
        assert_eq!(row[..2], expected, "{row:?}");
    }
    // Validation keeps file order: oslo (unseen) and NA (missing) are all
    // zeros, rome is rome.
    let val: Vec<&[f32]> = set.val_x.chunks(3).collect();
    assert_eq!(val[0][..2], [0.0, 0.0]);
    assert_eq!(val[1][..2], [0.0, 1.0]);
    assert_eq!(val[2][..2], [0.0, 0.0]);
    assert_eq!(set.val_y, [0, 1, 0]);

    // Listed explicitly, a column of numbers is one-hot too, named by value.
    let path = write_csv(
        dir.path(),
        "zones.csv",
        "zone,x,y\n1,0.5,0\n2,0.1,1\n3,0.2,0\n1,0.3,1\n2,0.4,0\n",
    );
    let set = data::load(&csv_spec(&path, "categorical=zone&val_fraction=0.4"), 3).unwrap();
    let names = set.feature_names();
    assert_eq!(names.last().map(String::as_str), Some("x"));
    assert!(
        names[..names.len() - 1]
            .iter()
            .all(|n| n.starts_with("zone="))
    );
}

#[test]
fn csv_missing_values_are_imputed_with_the_training_mean() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_csv(
        dir.path(),
        "gaps.csv",
        "x,part,label\n1,train,0\n3,train,1\n,train,0\nNA,train,1\nNaN,val,0\n5,val,1\n",
    );
    let set = data::load(&csv_spec(&path, "split_column=part"), 0).unwrap();
    // Training mean 2 and standard deviation 1 from the values present.
    let mut train = set.train_x.clone();
    train.sort_by(f32::total_cmp);
    assert_eq!(train, [-1.0, 0.0, 0.0, 1.0]);
    assert_eq!(set.val_x, [0.0, 3.0]);
}

#[test]
fn csv_regression_keeps_float_targets() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("rooms,city,price\n");
    for i in 0..20 {
        let city = ["paris", "lyon"][i % 2];
        text.push_str(&format!("{},{city},{}.25\n", i % 5 + 1, 1000 + i * 10));
    }
    let path = write_csv(dir.path(), "houses.csv", &text);
    let spec = csv_spec(&path, "label=price&task=regression");
    let set = data::load(&spec, DATA_SEED).unwrap();
    assert_eq!(set.task(), &data::Task::Regression);
    assert!(set.is_regression());
    assert_eq!(set.classes, 1);
    assert_eq!((set.train_len(), set.val_len()), (16, 4));
    assert!(set.train_y.is_empty() && set.val_y.is_empty());
    assert_eq!(set.feature_names(), ["rooms", "city=lyon", "city=paris"]);
    let mut targets: Vec<f32> = set
        .train_targets()
        .iter()
        .chain(set.val_targets())
        .copied()
        .collect();
    targets.sort_by(f32::total_cmp);
    let expected: Vec<f32> = (0..20).map(|i| 1000.25 + i as f32 * 10.0).collect();
    assert_eq!(targets, expected);
    let stats = set.target_stats().unwrap();
    let (mean, std) = mean_std(
        &set.train_targets()
            .iter()
            .map(|&t| f64::from(t))
            .collect::<Vec<_>>(),
    );
    assert!((stats.mean - mean).abs() < 1e-9 && (stats.std - std).abs() < 1e-9);
    let (x, y) = set.train_tensors(None, tch::Device::Cpu).unwrap();
    assert_eq!(x.size(), [16, 3]);
    assert_eq!(y.size(), [16]);
    assert_eq!(y.kind(), tch::Kind::Float);
    assert_eq!(Vec::<f32>::try_from(&y).unwrap(), set.train_targets());

    // A target that is not a number names its line and column.
    text.push_str("3,paris,cheap\n");
    std::fs::write(&path, &text).unwrap();
    let msg = data::load(&spec, 0).unwrap_err().to_string();
    assert_eq!(
        msg,
        format!(
            "{}: line 22, column price: expected a number, got \"cheap\"",
            path.display()
        )
    );
}

#[test]
fn csv_class_labels_are_sorted_numerically_or_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_csv(
        dir.path(),
        "numeric.csv",
        "x,label\n1,10\n2,2\n3,1.0\n4,10\n5,2\n6,1\n",
    );
    let set = data::load(&csv_spec(&path, ""), 0).unwrap();
    assert_eq!(
        set.task(),
        &data::Task::Classification {
            classes: vec!["1".into(), "2".into(), "10".into()]
        }
    );
    let path = write_csv(
        dir.path(),
        "iris.csv",
        "w,species\n1,virginica\n2,setosa\n3,versicolor\n4,setosa\n5,\"virginica\"\n",
    );
    let set = data::load(&csv_spec(&path, "label=species&val_fraction=0.4"), 0).unwrap();
    assert_eq!(set.classes, 3);
    assert_eq!(
        set.task(),
        &data::Task::Classification {
            classes: vec!["setosa".into(), "versicolor".into(), "virginica".into()]
        }
    );
}

#[test]
fn csv_split_column_gives_train_val_and_test() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_csv(
        dir.path(),
        "folds.csv",
        "x,fold,label\n\
         1,train,0\n2,train,1\n3,Train,0\n4,train,1\n\
         5,val,0\n6,validation,1\n\
         7,test,0\n8,TEST,1\n9,test,1\n",
    );
    let set = data::load(&csv_spec(&path, "split_column=fold"), 0).unwrap();
    assert_eq!((set.train_len(), set.val_len(), set.test_len()), (4, 2, 3));
    assert_eq!(set.feature_names(), ["x"]);
    assert_eq!(set.val_y, [0, 1]);
    assert_eq!(set.test_labels(), [0, 1, 1]);
    // x standardised with the training rows (mean 2.5, sd √1.25).
    let sd = 1.25f32.sqrt();
    let expected: Vec<f32> = [7.0f32, 8.0, 9.0].iter().map(|v| (v - 2.5) / sd).collect();
    for (got, want) in set.test_features().iter().zip(&expected) {
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
    let (x, y) = set.test_tensors(tch::Device::Cpu).unwrap().unwrap();
    assert_eq!((x.size(), y.size()), (vec![3, 1], vec![3]));
    assert_eq!(y.kind(), tch::Kind::Int64);

    // Any other value names its line.
    std::fs::write(&path, "x,fold,label\n1,train,0\n2,val,1\n3,holdout,0\n").unwrap();
    let msg = data::load(&csv_spec(&path, "split_column=fold"), 0)
        .unwrap_err()
        .to_string();
    assert!(
        msg.ends_with(
            "line 4, column fold: expected train, val, validation or test, got \"holdout\""
        ),
        "{msg}"
    );
}

#[test]
fn csv_seeded_split_is_reproducible_and_stratified() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("id,label\n");
    for i in 0..100 {
        text.push_str(&format!(
            "{i},{}\n",
            if i % 10 < 7 { "common" } else { "rare" }
        ));
    }
    let path = write_csv(dir.path(), "skewed.csv", &text);
    let spec = csv_spec(&path, "val_fraction=0.2");
    let set = data::load(&spec, DATA_SEED).unwrap();
    assert_eq!((set.train_len(), set.val_len()), (80, 20));
    let count = |ys: &[i64], class: i64| ys.iter().filter(|&&y| y == class).count();
    assert_eq!((count(&set.val_y, 0), count(&set.val_y, 1)), (14, 6));
    assert_eq!((count(&set.train_y, 0), count(&set.train_y, 1)), (56, 24));
    // Every row once (the ids stay distinct after standardisation).
    let mut ids: Vec<f32> = set.train_x.iter().chain(&set.val_x).copied().collect();
    ids.sort_by(f32::total_cmp);
    ids.dedup();
    assert_eq!(ids.len(), 100);

    let again = data::load(&spec, DATA_SEED).unwrap();
    assert_eq!((&set.train_x, &set.val_x), (&again.train_x, &again.val_x));
    assert_eq!((&set.train_y, &set.val_y), (&again.train_y, &again.val_y));
    let other = data::load(&spec, 7).unwrap();
    assert_ne!(set.val_x, other.val_x);
    assert_eq!((count(&other.val_y, 0), count(&other.val_y, 1)), (14, 6));

    let set = data::load(&csv_spec(&path, "val_fraction=0.35"), 1).unwrap();
    assert_eq!((set.train_len(), set.val_len()), (65, 35));
}

#[test]
fn csv_options_ignore_columns_and_change_the_delimiter() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_csv(
        dir.path(),
        "semi.csv",
        "id;name;x;y\n1;\"Smith; J\";0.5;0\n2;Doe;1.5;1\n3;\"Roe\";2.5;0\n4;Poe;3.5;1\n",
    );
    let spec = csv_spec(&path, "delimiter=;&ignore=id,name&val_fraction=0.5");
    let set = data::load(&spec, 0).unwrap();
    assert_eq!(set.feature_names(), ["x"]);
    assert_eq!((set.train_len(), set.val_len()), (2, 2));
    data::check_csv_spec(&spec).unwrap();
}

#[test]
fn csv_spec_options_parse_and_print_canonically() {
    let spec = "csv:/d/h.csv?task=regression&categorical=kind,city&label=price";
    let parsed = DataSpec::parse(spec).unwrap();
    assert_eq!(
        parsed.to_string(),
        "csv:/d/h.csv?label=price&task=regression&categorical=kind,city"
    );
    let (path, options) = parsed.csv().unwrap();
    assert_eq!(path, Path::new("/d/h.csv"));
    assert_eq!(options.label.as_deref(), Some("price"));
    assert!(options.regression);
    // All defaults spelled out are the plain spec.
    assert_eq!(
        DataSpec::parse("csv:a.csv?task=classification&val_fraction=0.2").unwrap(),
        DataSpec::Csv("a.csv".into())
    );
    // Equivalent specs share one cache entry.
    let dir = tempfile::tempdir().unwrap();
    let path = write_csv(dir.path(), "c.csv", "x,y\n1,0\n2,1\n3,0\n4,1\n5,0\n");
    let cache = DataCache::new();
    let a = cache
        .get(&csv_spec(&path, "label=y&val_fraction=0.4"), 0)
        .unwrap();
    let b = cache
        .get(&csv_spec(&path, "val_fraction=0.40&label=y"), 0)
        .unwrap();
    assert!(Arc::ptr_eq(&a, &b));
}

#[test]
fn csv_bad_numbers_name_the_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::from("sepal_width,petal_width,species\n");
    for i in 0..10 {
        let petal = if i == 5 {
            "abc".to_string()
        } else {
            format!("0.{i}")
        };
        text.push_str(&format!("3.{i},{petal},s{}\n", i % 2));
    }
    let path = write_csv(dir.path(), "iris.csv", &text);
    let expected = format!(
        "{}: line 7, column petal_width: expected a number, got \"abc\"",
        path.display()
    );
    // Detected: the column is mostly numbers, so "abc" is a typo.
    let msg = data::load(&csv_spec(&path, ""), 0).unwrap_err().to_string();
    assert!(msg.starts_with(&expected), "{msg}");
    assert!(msg.contains("categorical="), "{msg}");
    // Declared: every column not listed as categorical is numeric.
    let msg = data::load(&csv_spec(&path, "categorical="), 0)
        .unwrap_err()
        .to_string();
    assert_eq!(msg, expected);
    // Listed as categorical, it loads.
    let set = data::load(&csv_spec(&path, "categorical=petal_width"), 0).unwrap();
    let names = set.feature_names();
    assert_eq!(names[0], "sepal_width");
    assert!(
        names[1..].iter().all(|n| n.starts_with("petal_width=")),
        "{names:?}"
    );
}

#[test]
fn csv_missing_columns_are_named_by_load_and_by_the_header_check() {
    let dir = tempfile::tempdir().unwrap();
    // Rows after the header are garbage: the check never reads them.
    let path = write_csv(dir.path(), "abc.csv", "a,b,c\n1,2\nnot,a,number,row\n");
    let spec = csv_spec(&path, "label=price&task=regression");
    let expected = format!("{}: no column `price` (columns: a, b, c)", path.display());
    assert_eq!(data::load(&spec, 0).unwrap_err().to_string(), expected);
    assert_eq!(
        data::check_csv_spec(&spec).unwrap_err().to_string(),
        expected
    );

    for (options, column) in [
        ("split_column=fold", "fold"),
        ("categorical=city", "city"),
        ("ignore=id", "id"),
    ] {
        let msg = data::check_csv_spec(&csv_spec(&path, options))
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            format!(
                "{}: no column `{column}` (columns: a, b, c)",
                path.display()
            )
        );
    }
    // The header is fine for these, whatever the rows hold.
    data::check_csv_spec(&csv_spec(&path, "label=B")).unwrap();
    data::check_csv_spec(&csv_spec(&path, "")).unwrap();
    // Roles that clash, a missing file, an empty file.
    let msg = data::check_csv_spec(&csv_spec(&path, "label=a&categorical=a"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.ends_with("column `a` is the label: categorical= lists feature columns only"),
        "{msg}"
    );
    let msg = data::check_csv_spec(&csv_spec(&path, "label=a&split_column=a"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.ends_with("column `a` is both the label and the split column"),
        "{msg}"
    );
    let msg = data::check_csv_spec("csv:/nonexistent/hpo.csv")
        .unwrap_err()
        .to_string();
    assert!(
        msg.starts_with("cannot read /nonexistent/hpo.csv: "),
        "{msg}"
    );
    let empty = write_csv(dir.path(), "empty.csv", "\n\n");
    let msg = data::check_csv_spec(&csv_spec(&empty, ""))
        .unwrap_err()
        .to_string();
    assert!(msg.ends_with("empty file: expected a header row"), "{msg}");
    // Other specs are only parsed.
    data::check_csv_spec("synthetic:blobs").unwrap();
    assert!(matches!(
        data::check_csv_spec("cifar"),
        Err(DataError::UnknownSpec(_))
    ));
}

#[test]
fn csv_bad_options_are_spec_errors_that_show_the_syntax() {
    let cases = [
        ("csv:a.csv?lable=price", "unknown option `lable`"),
        (
            "csv:a.csv?task=ranking",
            "task must be classification or regression, got `ranking`",
        ),
        (
            "csv:a.csv?val_fraction=1.5",
            "val_fraction must be a number between 0 and 1",
        ),
        ("csv:a.csv?label", "option `label` has no value"),
        ("csv:a.csv?label=a&label=b", "option `label` is given twice"),
        (
            "csv:a.csv?val_fraction=0.1&split_column=fold",
            "val_fraction and split_column exclude each other",
        ),
        ("csv:a.csv?delimiter=ab", "delimiter must be"),
    ];
    for (spec, reason) in cases {
        let err = DataSpec::parse(spec).unwrap_err();
        assert!(matches!(err, DataError::BadSpec { .. }), "{spec}: {err:?}");
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("bad data set spec `{spec}`: {reason}")),
            "{msg}"
        );
        assert!(msg.contains("csv:PATH?KEY=VALUE&KEY=VALUE"), "{msg}");
        assert!(msg.contains("split_column=COLUMN"), "{msg}");
        // The same error from loading and from the header check.
        assert_eq!(data::load(spec, 0).unwrap_err().to_string(), msg);
        assert_eq!(data::check_csv_spec(spec).unwrap_err().to_string(), msg);
    }
}

// ---- Image sets: layout, augmentation ----

#[test]
fn idx_sets_describe_their_image_layout() {
    let dir = tempfile::tempdir().unwrap();
    write_idx_set(dir.path(), 6, 3);
    let set = data::load(&idx_spec(dir.path()), 0).unwrap();
    let shape = set.image_shape().unwrap();
    assert_eq!((shape.channels, shape.height, shape.width), (1, 2, 3));
    // Black (byte 0) after standardisation, below every other value.
    assert!(set.train_x.iter().all(|&v| v >= shape.background));
    assert_eq!(
        set.feature_names()[..4],
        ["pixel_0_0", "pixel_0_1", "pixel_0_2", "pixel_1_0"]
    );
    assert!(
        data::load("synthetic:spirals", 0)
            .unwrap()
            .image_shape()
            .is_none()
    );
}

/// `n` copies of a 1×`h`×`w` image whose pixel (y, x) is `y * w + x + 1`.
fn numbered_images(n: i64, h: i64, w: i64) -> tch::Tensor {
    tch::Tensor::arange_start(1, h * w + 1, (tch::Kind::Float, tch::Device::Cpu))
        .view([1, 1, h, w])
        .repeat([n, 1, 1, 1])
}

fn values(t: &tch::Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.reshape([-1])).unwrap()
}

#[test]
fn augment_keeps_the_shape_and_is_identity_when_off() {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let on = data::Augment {
        crop_padding: 2,
        hflip: true,
        max_shift: 1,
    };
    for shape in [
        vec![5, 784],
        vec![5, 28, 28],
        vec![5, 3, 28, 28],
        vec![0, 1, 4, 4],
    ] {
        let batch = tch::Tensor::rand(&shape, (tch::Kind::Float, tch::Device::Cpu));
        let out = data::augment(&batch, &on, &mut rng).unwrap();
        assert_eq!(out.size(), shape);
        assert_eq!(out.kind(), tch::Kind::Float);
        let same = data::augment(&batch, &data::Augment::default(), &mut rng).unwrap();
        assert_eq!(values(&same), values(&batch));
    }
    let flat = tch::Tensor::zeros([2, 10], (tch::Kind::Float, tch::Device::Cpu));
    assert!(data::augment(&flat, &on, &mut rng).is_err());
    let bad = data::Augment {
        max_shift: -1,
        ..Default::default()
    };
    assert!(data::augment(&numbered_images(1, 3, 3), &bad, &mut rng).is_err());
}

#[test]
fn augment_hflip_mirrors_an_image_or_leaves_it() {
    use rand::SeedableRng;
    let batch = numbered_images(64, 3, 4);
    let mirrored = batch.flip([3]);
    let opts = data::Augment {
        hflip: true,
        ..Default::default()
    };
    let out = data::augment(&batch, &opts, &mut rand::rngs::StdRng::seed_from_u64(5)).unwrap();
    let (mut flipped, mut kept) = (0, 0);
    for i in 0..64 {
        let image = values(&out.get(i));
        if image == values(&mirrored.get(i)) {
            flipped += 1;
        } else {
            assert_eq!(image, values(&batch.get(i)));
            kept += 1;
        }
    }
    assert!(flipped > 10 && kept > 10, "{flipped} flipped, {kept} kept");
    // The first row of a mirrored image, explicitly.
    assert_eq!(values(&mirrored.get(0))[..4], [4.0, 3.0, 2.0, 1.0]);
    // Seeded: the same draws give the same batch.
    let again = data::augment(&batch, &opts, &mut rand::rngs::StdRng::seed_from_u64(5)).unwrap();
    assert_eq!(values(&out), values(&again));
}

#[test]
fn augment_shift_moves_pixels_by_the_drawn_offset() {
    use rand::{Rng, SeedableRng};
    // One bright pixel at (3, 3) of a 7×7 image; fill 0.
    let mut image = vec![0f32; 49];
    image[3 * 7 + 3] = 1.0;
    let batch = tch::Tensor::from_slice(&image)
        .view([1, 49])
        .repeat([32, 1]);
    let opts = data::Augment {
        max_shift: 2,
        ..Default::default()
    };
    let out = data::augment(&batch, &opts, &mut rand::rngs::StdRng::seed_from_u64(9)).unwrap();
    assert_eq!(out.size(), [32, 49]);
    // The same seed replays the offsets: per image, y then x.
    let mut replay = rand::rngs::StdRng::seed_from_u64(9);
    let mut offsets = std::collections::BTreeSet::new();
    for i in 0..32 {
        let dy: i64 = replay.gen_range(-2..=2);
        let dx: i64 = replay.gen_range(-2..=2);
        offsets.insert((dy, dx));
        let mut expected = vec![0f32; 49];
        expected[((3 + dy) * 7 + 3 + dx) as usize] = 1.0;
        assert_eq!(
            values(&out.get(i)),
            expected,
            "image {i}, shift ({dy}, {dx})"
        );
    }
    assert!(offsets.len() > 5, "{offsets:?}");

    // A shift uncovers an edge: a numbered image keeps its values, moved,
    // and the uncovered pixels are the fill.
    let batch = numbered_images(16, 4, 4);
    let out = data::augment_with_fill(
        &batch,
        &data::Augment {
            max_shift: 1,
            ..Default::default()
        },
        -1.0,
        &mut rand::rngs::StdRng::seed_from_u64(2),
    )
    .unwrap();
    let mut replay = rand::rngs::StdRng::seed_from_u64(2);
    for i in 0..16 {
        let dy: i64 = replay.gen_range(-1..=1);
        let dx: i64 = replay.gen_range(-1..=1);
        let got = values(&out.get(i));
        for y in 0..4i64 {
            for x in 0..4i64 {
                let (sy, sx) = (y - dy, x - dx);
                let want = if (0..4).contains(&sy) && (0..4).contains(&sx) {
                    (sy * 4 + sx + 1) as f32
                } else {
                    -1.0
                };
                assert_eq!(got[(y * 4 + x) as usize], want, "image {i} at ({y}, {x})");
            }
        }
    }
}

#[test]
fn augment_padded_crop_keeps_content_within_bounds() {
    use rand::SeedableRng;
    let (h, w, p) = (6i64, 5i64, 2i64);
    let batch = numbered_images(50, h, w);
    let opts = data::Augment {
        crop_padding: p,
        ..Default::default()
    };
    let out = data::augment(&batch, &opts, &mut rand::rngs::StdRng::seed_from_u64(4)).unwrap();
    let mut moved = 0;
    for i in 0..50 {
        let got = values(&out.get(i));
        let mut shift = None;
        for y in 0..h {
            for x in 0..w {
                let v = got[(y * w + x) as usize];
                if v == 0.0 {
                    // Padding only near an edge.
                    assert!(
                        y < p || y >= h - p || x < p || x >= w - p,
                        "image {i}: padding inside at ({y}, {x})"
                    );
                    continue;
                }
                // Every pixel is an original one moved by at most p, and
                // all of an image's pixels move together.
                let source = v as i64 - 1;
                let d = (y - source / w, x - source % w);
                assert!(d.0.abs() <= p && d.1.abs() <= p, "image {i}: moved {d:?}");
                assert_eq!(*shift.get_or_insert(d), d, "image {i}");
            }
        }
        // The part of the image that stays inside is all there.
        let (dy, dx) = shift.unwrap();
        let kept = got.iter().filter(|&&v| v != 0.0).count() as i64;
        assert_eq!(kept, (h - dy.abs()) * (w - dx.abs()), "image {i}");
        if (dy, dx) != (0, 0) {
            moved += 1;
        }
    }
    assert!(moved > 25, "{moved} of 50 moved");
}

// ---- Class balancing ----

fn class_counts(labels: &[i64], rows: &[i64]) -> std::collections::BTreeMap<i64, usize> {
    let mut counts = std::collections::BTreeMap::new();
    for &r in rows {
        *counts.entry(labels[r as usize]).or_insert(0) += 1;
    }
    counts
}

#[test]
fn balanced_rows_over_and_undersample_to_equal_counts() {
    use data::Balance;
    // 10 of class 0, 3 of class 1, 1 of class 7.
    let labels: Vec<i64> = (0..14)
        .map(|i| match i {
            0..10 => 0,
            10..13 => 1,
            _ => 7,
        })
        .collect();
    assert_eq!(
        data::balanced_rows(&labels, Balance::None, 1),
        (0..14).collect::<Vec<i64>>()
    );

    let over = data::balanced_rows(&labels, Balance::Oversample, 1);
    assert_eq!(
        class_counts(&labels, &over),
        [(0, 10), (1, 10), (7, 10)].into_iter().collect()
    );
    // Every row is kept; copies differ by at most one within a class.
    for r in 0..14i64 {
        assert!(over.contains(&r), "row {r}");
    }
    let copies = |r: i64| over.iter().filter(|&&o| o == r).count();
    let class1: Vec<usize> = (10..13).map(copies).collect();
    assert!(
        class1.iter().max().unwrap() - class1.iter().min().unwrap() <= 1,
        "{class1:?}"
    );
    assert_eq!(copies(13), 10);
    assert!(over.windows(2).all(|w| w[0] <= w[1]), "sorted");

    let under = data::balanced_rows(&labels, Balance::Undersample, 1);
    assert_eq!(
        class_counts(&labels, &under),
        [(0, 1), (1, 1), (7, 1)].into_iter().collect()
    );
    // Only drops: each row at most once, all of them real rows.
    let mut dedup = under.clone();
    dedup.dedup();
    assert_eq!(dedup, under);
    assert!(under.iter().all(|&r| (0..14).contains(&r)));

    // Fixed by the seed; another seed draws other rows.
    assert_eq!(data::balanced_rows(&labels, Balance::Oversample, 1), over);
    assert_eq!(data::balanced_rows(&labels, Balance::Undersample, 1), under);
    let draws: std::collections::BTreeSet<Vec<i64>> = (0..20)
        .map(|seed| data::balanced_rows(&labels, Balance::Undersample, seed))
        .collect();
    assert!(draws.len() > 1);
    assert!(data::balanced_rows(&[], Balance::Oversample, 0).is_empty());
}

#[test]
fn balance_setting_parses() {
    use data::Balance;
    use hpo_proto::ParamValue;
    let get =
        |v: Option<ParamValue>| move |name: &str| (name == "balance").then(|| v.clone()).flatten();
    assert_eq!(data::parse_balance(&get(None)), Ok(Balance::None));
    for (text, mode) in [
        ("none", Balance::None),
        ("oversample", Balance::Oversample),
        ("Undersample", Balance::Undersample),
    ] {
        assert_eq!(
            data::parse_balance(&get(Some(ParamValue::Categorical(text.into())))),
            Ok(mode)
        );
    }
    assert_eq!(
        data::parse_balance(&get(Some(ParamValue::Categorical("smote".into())))),
        Err("balance must be one of none, oversample, undersample, got `smote`".to_string())
    );
    assert!(data::parse_balance(&get(Some(ParamValue::Int(1)))).is_err());
    assert_eq!(Balance::Oversample.to_string(), "oversample");
}
