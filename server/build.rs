//! Rebuild when the page changes. Release builds embed `web/dist` (src/assets.rs), and
//! rust-embed makes cargo track only the files that existed at the last build, not files that
//! appear or go away (such as a first `web/build`).

fn main() {
    if std::path::Path::new("../web/dist").is_dir() {
        println!("cargo:rerun-if-changed=../web/dist");
    } else {
        // Not built yet: watch web/ so that web/build creating dist/ triggers a rebuild.
        println!("cargo:rerun-if-changed=../web");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
