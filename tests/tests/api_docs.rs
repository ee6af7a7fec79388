//! `docs/api.md` examples are generated from a real run (see
//! `strata_tests::api_examples`): this test captures them and fails with a
//! diff when the doc differs. `STRATA_UPDATE_DOCS=1 cargo test -p
//! strata-tests --test api_docs` rewrites the example blocks in place.

use std::path::PathBuf;

use strata_tests::api_examples::{capture, diff, splice};

#[tokio::test]
async fn api_md_examples_are_those_of_a_live_run() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/api.md");
    let doc = std::fs::read_to_string(&path).expect("docs/api.md readable");
    let examples = capture().await;
    let fresh = splice(&doc, &examples).unwrap_or_else(|e| panic!("{e}"));
    if fresh == doc {
        return;
    }
    if std::env::var("STRATA_UPDATE_DOCS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &fresh).expect("docs/api.md written");
        eprintln!("docs/api.md: example blocks rewritten");
        return;
    }
    panic!(
        "docs/api.md examples differ from a live run; rerun with STRATA_UPDATE_DOCS=1 to rewrite them \
         (line numbers: - docs/api.md, + generated):\n{}",
        diff(&doc, &fresh)
    );
}
