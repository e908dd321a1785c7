//! Base images: read-only Debian root filesystems built by `ops/image/build-base` into
//! `<images_dir>/<name>/rootfs`, with a `manifest.json` beside. Every node of that image shares
//! the same files and page cache; a node only ever writes to its own overlay upper layer.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A base image found on disk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    /// The cache key of the recipe it was built from.
    pub recipe: String,
    pub built_at: String,
    /// The Debian suite it was built from (`trixie`) and its point release (`13.8`).
    #[serde(default)]
    pub debian: String,
    #[serde(default)]
    pub debian_version: Option<String>,
    /// Versions of the engine and its tools, as the image's own binaries report them.
    #[serde(default)]
    pub engine: EngineVersions,
    #[serde(skip)]
    pub rootfs: PathBuf,
}

/// What `ops/image/build-base` read off the image's binaries; absent in images built before it
/// did, and for tools the image lacks (bookworm has no Compose v2 and no buildx).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EngineVersions {
    pub docker: Option<String>,
    pub containerd: Option<String>,
    pub runc: Option<String>,
    pub compose: Option<String>,
    pub buildx: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image name {0:?} is not valid: use a-z, 0-9, '.', '_' or '-'")]
    InvalidName(String),
    #[error("unknown image {name:?} (available: {}); build it with `ops/setup`", available_list(.available))]
    Unknown {
        name: String,
        available: Vec<String>,
    },
    #[error("read manifest of image {name:?} at {path}: {reason}")]
    BadManifest {
        name: String,
        path: PathBuf,
        reason: String,
    },
}

fn available_list(names: &[String]) -> String {
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
}

/// Finds image `name` in `images_dir`.
pub(crate) fn find(images_dir: &Path, name: &str) -> Result<Image, ImageError> {
    if !valid_name(name) {
        return Err(ImageError::InvalidName(name.into()));
    }
    let dir = images_dir.join(name);
    let rootfs = dir.join("rootfs");
    let manifest = dir.join("manifest.json");
    if !rootfs.join("usr/sbin/dockerd").exists() || !manifest.exists() {
        return Err(ImageError::Unknown {
            name: name.into(),
            available: list(images_dir),
        });
    }
    let bad = |reason: String| ImageError::BadManifest {
        name: name.into(),
        path: manifest.clone(),
        reason,
    };
    let text = std::fs::read_to_string(&manifest).map_err(|e| bad(e.to_string()))?;
    let mut image: Image = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if image.name != name {
        return Err(bad(format!("it names itself {:?}", image.name)));
    }
    image.rootfs = rootfs;
    Ok(image)
}

/// The images in `images_dir` that nodes can use, sorted by name; broken ones are left out
/// (`sandpit doctor` names them).
pub(crate) fn usable(images_dir: &Path) -> Vec<Image> {
    list(images_dir)
        .iter()
        .filter_map(|name| find(images_dir, name).ok())
        .collect()
}

/// Names of the images present in `images_dir`, sorted.
pub(crate) fn list(images_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(images_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| valid_name(n) && images_dir.join(n).join("manifest.json").exists())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(valid_name("bookworm"));
        assert!(valid_name("debian-12.1_x"));
        for bad in ["", "../etc", ".hidden", "Upper", "a/b"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn unknown_image_lists_what_exists() {
        let tmp = crate::testdir::TempDir::new("images");
        let dir = &tmp.0;
        let good = dir.join("good");
        std::fs::create_dir_all(good.join("rootfs/usr/sbin")).unwrap();
        std::fs::write(good.join("rootfs/usr/sbin/dockerd"), "").unwrap();
        std::fs::write(
            good.join("manifest.json"),
            r#"{"name":"good","recipe":"abc","built_at":"now","extra":1}"#,
        )
        .unwrap();
        let img = find(dir, "good").unwrap();
        assert_eq!(img.recipe, "abc");
        assert_eq!(img.engine, EngineVersions::default());
        match find(dir, "missing") {
            Err(ImageError::Unknown { available, .. }) => assert_eq!(available, vec!["good"]),
            other => panic!("{other:?}"),
        }
        std::fs::create_dir_all(dir.join("broken")).unwrap();
        std::fs::write(dir.join("broken/manifest.json"), "{").unwrap();
        let names: Vec<_> = usable(dir).into_iter().map(|i| i.name).collect();
        assert_eq!(names, ["good"]);
    }
}
