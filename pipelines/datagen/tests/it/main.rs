//! Integration tests of datagen: the command line, and the generator's determinism through the
//! binary (the same seed gives the same bytes).

/// `--help` and `--version` exit 0, a bad flag 64, and `--help` never shows a secret's value.
#[test]
fn the_command_line_keeps_its_contract() {
    streampulse_testkit::cli::assert_command_line_contract(
        std::path::Path::new(env!("CARGO_BIN_EXE_datagen")),
        &[],
    );
}

fn files(root: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(
        dir: &std::path::Path,
        root: &std::path::Path,
        out: &mut std::collections::BTreeMap<String, Vec<u8>>,
    ) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if rel.starts_with("runs") {
                continue; // run records carry timings
            } else if p.is_dir() {
                walk(&p, root, out);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn datagen(root: &std::path::Path, seed: &str) {
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_datagen"))
        .args([
            "--date",
            "2026-11-26",
            "--seed",
            seed,
            "--plays",
            "3000",
            "--users",
            "300",
        ])
        .args([
            "--songs",
            "200",
            "--experiment-users",
            "100",
            "--bad-rows",
            "0.01",
            "--threads",
            "2",
        ])
        .arg("--data-root")
        .arg(root)
        .status()
        .unwrap();
    assert!(status.success());
}

/// The same seed gives the same bytes in every dataset; another seed, other data.
#[test]
fn a_seed_gives_the_same_bytes() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    datagen(a.path(), "7");
    datagen(b.path(), "7");
    datagen(c.path(), "8");
    let (fa, fb, fc) = (files(a.path()), files(b.path()), files(c.path()));
    assert!(
        fa.len() >= 7,
        "every dataset is written: {:?}",
        fa.keys().collect::<Vec<_>>()
    );
    assert!(fa == fb, "same seed, same bytes");
    let export = "exports/plays-2026-11-26.csv";
    assert!(fa[export] != fc[export], "another seed, another day");
}
