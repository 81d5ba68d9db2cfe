//! Golden files: compare an output with a reviewed copy in `tests/data/golden/`, or rewrite the
//! copy with `UPDATE_GOLDEN=1` (and review the diff).

use std::path::Path;

/// Asserts that `actual` equals the golden file at `path`; with `UPDATE_GOLDEN=1`, writes it.
pub fn assert_golden(path: &Path, actual: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("create golden dir");
        }
        std::fs::write(path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "golden file {} unreadable ({e}); run with UPDATE_GOLDEN=1",
            path.display()
        )
    });
    if expected != actual {
        panic!(
            "output differs from golden file {} (rerun with UPDATE_GOLDEN=1 and review the diff)\n--- expected\n{expected}\n--- actual\n{actual}",
            path.display()
        );
    }
}
