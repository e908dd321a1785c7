//! Repository names in the session registry. Every session network pushes into its own
//! namespace, `sessions/<network>/`, of one shared registry: the relay adds the namespace to
//! every name a node sends and takes it off every name the registry answers with, so a node sees
//! only its session's repositories and cannot name another's (a name is checked against the
//! distribution grammar before the namespace is put in front, so `..` or an absolute path
//! cannot climb out of it).
//!
//! Paths of the registry API (distribution spec): `/v2/`, `/v2/_catalog`,
//! `/v2/<name>/manifests/<reference>`, `/v2/<name>/blobs/<digest>`,
//! `/v2/<name>/blobs/uploads/[<id>]`, `/v2/<name>/tags/list`. A name has slashes in it, so it is
//! found from the end of the path.

/// Where the repositories of session network `network` live in the session registry.
pub(crate) fn namespace(network: &str) -> String {
    format!("sessions/{network}")
}

/// What a request path asks for, once mapped into a namespace.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Mapped {
    /// `/v2/`: the API version check, passed on as is.
    Base,
    /// `/v2/_catalog`: answered with the namespace's repositories only.
    Catalog,
    /// A repository path, with the namespace put in front of the name.
    Repo(String),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NameError {
    #[error("no such registry API path")]
    UnknownPath,
    #[error(
        "invalid repository name {0:?}: use lowercase letters, digits and . _ - separated by /"
    )]
    InvalidName(String),
}

/// Maps a node's request path into namespace `ns`.
pub(crate) fn map_path(ns: &str, path: &str) -> Result<Mapped, NameError> {
    let Some(rest) = path.strip_prefix("/v2/") else {
        return if path == "/v2" {
            Ok(Mapped::Base)
        } else {
            Err(NameError::UnknownPath)
        };
    };
    if rest.is_empty() {
        return Ok(Mapped::Base);
    }
    if rest == "_catalog" {
        return Ok(Mapped::Catalog);
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    let name_len = if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
        n - 3
    } else if n >= 3 && matches!(segs[n - 2], "manifests" | "blobs") {
        // Also `/v2/<name>/blobs/uploads` without the trailing slash.
        n - 2
    } else if n >= 3 && segs[n - 2] == "tags" && segs[n - 1] == "list" {
        n - 2
    } else {
        return Err(NameError::UnknownPath);
    };
    let name = segs[..name_len].join("/");
    check_name(&name)?;
    Ok(Mapped::Repo(format!(
        "/v2/{ns}/{name}/{}",
        segs[name_len..].join("/")
    )))
}

/// Checks a repository name against the distribution grammar: components of lowercase
/// alphanumerics joined by `.`, `_`, `__` or runs of `-`, separated by `/`.
fn check_name(name: &str) -> Result<(), NameError> {
    let component_ok = |c: &str| {
        let b = c.as_bytes();
        let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
        if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && !alnum(b[i]) {
                i += 1;
            }
            let sep = &c[start..i];
            let dashes = sep.bytes().all(|x| x == b'-');
            if !(sep == "." || sep == "_" || sep == "__" || dashes) {
                return false;
            }
        }
        true
    };
    if name.is_empty() || name.len() > 200 || !name.split('/').all(component_ok) {
        return Err(NameError::InvalidName(name.into()));
    }
    Ok(())
}

/// Maps the query of a blob mount (`?mount=<digest>&from=<name>`) into namespace `ns`; other
/// parameters are passed on untouched.
pub(crate) fn map_query(ns: &str, query: &str) -> Result<String, NameError> {
    query
        .split('&')
        .map(|pair| match pair.strip_prefix("from=") {
            Some(from) => {
                let name = from.replace("%2F", "/").replace("%2f", "/");
                check_name(&name)?;
                Ok(format!(
                    "from={}",
                    format!("{ns}/{name}").replace('/', "%2F")
                ))
            }
            None => Ok(pair.to_string()),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(|v| v.join("&"))
}

/// Takes namespace `ns` off a path the registry answered with (a `Location` header).
pub(crate) fn unmap_location(ns: &str, location: &str) -> String {
    match location.strip_prefix(&format!("/v2/{ns}/")) {
        Some(rest) => format!("/v2/{rest}"),
        None => location.to_string(),
    }
}

/// Takes namespace `ns` off the `name` of a tag list.
pub(crate) fn unmap_tags(ns: &str, body: &[u8]) -> Option<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let name = v.get("name")?.as_str()?;
    let short = name.strip_prefix(&format!("{ns}/"))?.to_string();
    v["name"] = short.into();
    serde_json::to_vec(&v).ok()
}

/// Keeps only namespace `ns`'s repositories in a catalog, without the namespace.
pub(crate) fn unmap_catalog(ns: &str, body: &[u8]) -> Option<Vec<u8>> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let prefix = format!("{ns}/");
    let repos: Vec<&str> = v
        .get("repositories")?
        .as_array()?
        .iter()
        .filter_map(|r| r.as_str()?.strip_prefix(&prefix))
        .collect();
    serde_json::to_vec(&serde_json::json!({ "repositories": repos })).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS: &str = "sessions/abc";

    fn repo(path: &str) -> String {
        match map_path(NS, path) {
            Ok(Mapped::Repo(p)) => p,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn repository_paths_move_into_the_namespace() {
        assert_eq!(
            repo("/v2/app/manifests/latest"),
            "/v2/sessions/abc/app/manifests/latest"
        );
        assert_eq!(
            repo("/v2/team/app/blobs/sha256:00ff"),
            "/v2/sessions/abc/team/app/blobs/sha256:00ff"
        );
        assert_eq!(
            repo("/v2/app/blobs/uploads/"),
            "/v2/sessions/abc/app/blobs/uploads/"
        );
        assert_eq!(
            repo("/v2/app/blobs/uploads/5e1d-aa"),
            "/v2/sessions/abc/app/blobs/uploads/5e1d-aa"
        );
        assert_eq!(repo("/v2/app/tags/list"), "/v2/sessions/abc/app/tags/list");
        // A name may contain a component that looks like a keyword.
        assert_eq!(
            repo("/v2/blobs/manifests/v1"),
            "/v2/sessions/abc/blobs/manifests/v1"
        );
        assert_eq!(map_path(NS, "/v2/"), Ok(Mapped::Base));
        assert_eq!(map_path(NS, "/v2"), Ok(Mapped::Base));
        assert_eq!(map_path(NS, "/v2/_catalog"), Ok(Mapped::Catalog));
    }

    #[test]
    fn names_cannot_leave_the_namespace() {
        for bad in [
            "/v2/../other/app/manifests/latest",
            "/v2/./app/manifests/latest",
            "/v2//app/manifests/latest",
            "/v2/App/manifests/latest",
            "/v2/a-/manifests/latest",
            "/v2/a..b/manifests/latest",
        ] {
            assert!(
                matches!(map_path(NS, bad), Err(NameError::InvalidName(_))),
                "{bad}"
            );
        }
        assert_eq!(map_path(NS, "/debug/vars"), Err(NameError::UnknownPath));
        assert_eq!(map_path(NS, "/v2/app"), Err(NameError::UnknownPath));
        for good in ["a", "a.b", "a_b", "a__b", "a---b", "x/y/z", "0"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn mounts_come_from_the_namespace_too() {
        assert_eq!(
            map_query(NS, "mount=sha256:1&from=library%2Fbusybox").unwrap(),
            "mount=sha256:1&from=sessions%2Fabc%2Flibrary%2Fbusybox"
        );
        assert!(map_query(NS, "mount=sha256:1&from=..%2Fx").is_err());
        assert_eq!(map_query(NS, "n=10").unwrap(), "n=10");
    }

    #[test]
    fn answers_lose_the_namespace() {
        assert_eq!(
            unmap_location(NS, "/v2/sessions/abc/app/blobs/uploads/1?_state=x"),
            "/v2/app/blobs/uploads/1?_state=x"
        );
        assert_eq!(unmap_location(NS, "/v2/other"), "/v2/other");
        let tags = unmap_tags(NS, br#"{"name":"sessions/abc/app","tags":["1"]}"#).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&tags).unwrap(),
            serde_json::json!({"name":"app","tags":["1"]})
        );
        let cat = unmap_catalog(
            NS,
            br#"{"repositories":["sessions/abc/app","sessions/abd/x","sessions/abc/t/y"]}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&cat).unwrap(),
            serde_json::json!({"repositories":["app","t/y"]})
        );
    }
}
