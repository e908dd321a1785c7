//! What nodes run from: the base image on disk and the registry mirror.

use std::fs;
use std::path::Path;

use crate::config::{MirrorSource, RegistryConfig};
use crate::kernfs::errno_of;

use super::check::{Check, BASE_IMAGE, MIRROR};

// ---- base image ----

/// The seed images a learner's first commands expect (`ops/seed/build`).
const SEED_IMAGES: &[&str] = &[
    "hello-world",
    "busybox",
    "debian",
    "nginx",
    "redis",
    "python",
    "postgres",
];

pub(super) fn check_base_image(images_dir: &Path, name: &str) -> Check {
    let fix = format!("ops/setup (or ops/image/build-base {name})");
    let dir = images_dir.join(name);
    // Debian's docker.io installs /usr/sbin/dockerd, upstream packages /usr/bin/dockerd.
    // Not followed: links in the image point into the image, not the host.
    let dockerd = ["usr/bin/dockerd", "usr/sbin/dockerd"]
        .into_iter()
        .find(|p| fs::symlink_metadata(dir.join("rootfs").join(p)).is_ok());
    let Some(dockerd) = dockerd else {
        return Check::fail(
            BASE_IMAGE,
            format!(
                "no base image {name:?}: {} has no usr/bin/dockerd or usr/sbin/dockerd",
                dir.join("rootfs").display()
            ),
            fix,
        );
    };
    let manifest_path = dir.join("manifest.json");
    let manifest = fs::read_to_string(&manifest_path)
        .map_err(|e| format!("read {}: {}", manifest_path.display(), errno_of(&e)))
        .and_then(|text| {
            serde_json::from_str::<serde_json::Value>(&text)
                .map_err(|e| format!("parse {}: {e}", manifest_path.display()))
        });
    match manifest {
        Err(e) => Check::fail(BASE_IMAGE, e, fix),
        Ok(m) => {
            let field = |k: &str| m.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
            let version = |k: &str| {
                m.get("engine")
                    .and_then(|e| e.get(k))
                    .and_then(|v| v.as_str())
            };
            let mut recipe = field("recipe");
            recipe.truncate(12);
            // What a node of it has, as the build read it off the image's binaries.
            let engine = match version("docker") {
                None => format!("{dockerd} present (no versions recorded: an older build)"),
                Some(docker) => {
                    let mut e =
                        format!("Debian {}, Docker Engine {docker}", field("debian_version"));
                    for (tool, label) in [("compose", "Compose"), ("buildx", "buildx")] {
                        match version(tool) {
                            Some(v) => e += &format!(", {label} {v}"),
                            None => e += &format!(", no {label}"),
                        }
                    }
                    e
                }
            };
            let others: Vec<String> = crate::image::list(images_dir)
                .into_iter()
                .filter(|n| n != name)
                .collect();
            let others = match others.is_empty() {
                true => String::new(),
                false => format!("; other images: {}", others.join(", ")),
            };
            Check::ok(
                BASE_IMAGE,
                format!(
                    "{name}: {engine}; recipe {recipe}, built {}{others}",
                    field("built_at")
                ),
            )
        }
    }
}

// ---- registry mirror ----

/// Whether a registry answers `GET /v2/` on `socket` (a running `sandpit serve`'s mirror).
/// The doctor runs before any async runtime exists, so the probe brings its own.
pub(super) fn mirror_answers(socket: &Path) -> bool {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return false;
    };
    rt.block_on(async {
        let probe = async {
            let stream = tokio::net::UnixStream::connect(socket).await.ok()?;
            let resp = crate::unix_http::get(stream, "mirror", "/v2/").await.ok()?;
            Some(resp.status() == hyper::StatusCode::OK)
        };
        tokio::time::timeout(std::time::Duration::from_secs(2), probe)
            .await
            .ok()
            .flatten()
            .unwrap_or(false)
    })
}

pub(super) fn check_registry(
    cfg: Option<&RegistryConfig>,
    exe_found: bool,
    seed_images: Option<Vec<String>>,
    running: bool,
) -> Check {
    let Some(cfg) = cfg else {
        return Check::warn(
            MIRROR,
            "off (--no-registry): nodes can pull no images and have no session registry",
            "start without --no-registry",
        );
    };
    if !exe_found {
        return Check::fail(
            MIRROR,
            format!("{} not found", cfg.exe.display()),
            "apt-get install docker-registry (ops/setup does)",
        );
    }
    let state = if running {
        "running"
    } else {
        "not running (sandpit serve starts it)"
    };
    match &cfg.mirror {
        MirrorSource::PullThrough {
            upstream, username, ..
        } => Check::ok(
            MIRROR,
            format!(
                "{state}; a pull-through cache of {upstream} ({})",
                if username.is_some() {
                    "with credentials"
                } else {
                    "anonymous: Docker Hub allows about 10 pulls per hour per address"
                }
            ),
        ),
        MirrorSource::Seeded(store) => {
            let fix = "ops/seed/build && ops/seed/publish (ops/setup does)";
            let Some(images) = seed_images else {
                return Check::fail(
                    MIRROR,
                    format!("no seed image store at {}", store.display()),
                    fix,
                );
            };
            let names: Vec<&str> = images
                .iter()
                .map(|i| i.strip_prefix("library/").unwrap_or(i))
                .collect();
            let missing: Vec<&str> = SEED_IMAGES
                .iter()
                .copied()
                .filter(|want| !names.iter().any(|n| n.split(':').next() == Some(*want)))
                .collect();
            let detail = format!(
                "{state}; seed images in {}: {}",
                store.display(),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(" ")
                }
            );
            if missing.is_empty() {
                Check::ok(MIRROR, detail)
            } else {
                Check::warn(
                    MIRROR,
                    format!("{detail}; missing: {}", missing.join(" ")),
                    fix,
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::check::Status;
    use crate::testdir::TempDir;

    #[test]
    fn the_mirror_check_names_its_state_and_what_is_missing() {
        let seeded = RegistryConfig {
            exe: "/usr/bin/docker-registry".into(),
            mirror: MirrorSource::Seeded("/i/registry".into()),
        };
        let all: Vec<String> = SEED_IMAGES
            .iter()
            .map(|n| format!("library/{n}:latest"))
            .collect();
        let c = check_registry(Some(&seeded), true, Some(all.clone()), true);
        assert_eq!(c.status, Status::Ok, "{c:?}");
        assert!(
            c.detail.starts_with(
                "running; seed images in /i/registry: hello-world:latest busybox:latest"
            ),
            "{}",
            c.detail
        );

        let some = all[1..].to_vec();
        let c = check_registry(Some(&seeded), true, Some(some), false);
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("not running") && c.detail.ends_with("missing: hello-world"));

        let c = check_registry(Some(&seeded), true, None, false);
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap().contains("ops/seed/publish"));
        let c = check_registry(Some(&seeded), false, Some(all), false);
        assert_eq!(c.status, Status::Fail);
        assert_eq!(
            check_registry(None, false, None, false).status,
            Status::Warn
        );

        let cache = RegistryConfig {
            exe: "/usr/bin/docker-registry".into(),
            mirror: MirrorSource::PullThrough {
                upstream: "https://registry-1.docker.io".into(),
                username: None,
                password: None,
            },
        };
        let c = check_registry(Some(&cache), true, None, false);
        assert_eq!(c.status, Status::Ok);
        assert!(c.detail.contains("anonymous"), "{}", c.detail);
    }

    #[test]
    fn base_image() {
        let t = TempDir::new("image");
        let c = check_base_image(&t.0, "bookworm");
        assert_eq!(c.status, Status::Fail);
        assert_eq!(
            c.fix.as_deref(),
            Some("ops/setup (or ops/image/build-base bookworm)")
        );
        let bin = t.0.join("bookworm/rootfs/usr/bin");
        fs::create_dir_all(&bin).unwrap();
        // A link in the image is not followed (its target is inside the image).
        std::os::unix::fs::symlink("/nonexistent/dockerd", bin.join("dockerd")).unwrap();
        let c = check_base_image(&t.0, "bookworm");
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("manifest.json"), "{}", c.detail);
        fs::write(t.0.join("bookworm/manifest.json"), "{not json").unwrap();
        assert_eq!(check_base_image(&t.0, "bookworm").status, Status::Fail);
        fs::write(
            t.0.join("bookworm/manifest.json"),
            r#"{"name":"bookworm","recipe":"5cddf54874e9ea3e6cd6","built_at":"2026-11-24T02:47:00Z"}"#,
        )
        .unwrap();
        let c = check_base_image(&t.0, "bookworm");
        assert_eq!(c.status, Status::Ok, "{}", c.detail);
        assert_eq!(
            c.detail,
            "bookworm: usr/bin/dockerd present (no versions recorded: an older build); \
             recipe 5cddf54874e9, built 2026-11-24T02:47:00Z"
        );
        // What today's build records, and the other images beside it.
        fs::write(
            t.0.join("bookworm/manifest.json"),
            r#"{"name":"bookworm","recipe":"5cddf54874e9ea3e6cd6","built_at":"2026-11-24T02:47:00Z",
                "debian":"bookworm","debian_version":"12.15","engine":{"docker":"20.10.24",
                "containerd":"1.6.20","runc":"1.1.5","compose":null,"buildx":null}}"#,
        )
        .unwrap();
        fs::create_dir_all(t.0.join("trixie")).unwrap();
        fs::write(t.0.join("trixie/manifest.json"), "{}").unwrap();
        let c = check_base_image(&t.0, "bookworm");
        assert_eq!(
            c.detail,
            "bookworm: Debian 12.15, Docker Engine 20.10.24, no Compose, no buildx; \
             recipe 5cddf54874e9, built 2026-11-24T02:47:00Z; other images: trixie"
        );
    }
}
