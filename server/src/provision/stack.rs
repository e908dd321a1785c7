//! Stacks: a session whose first node is a swarm manager that deploys a compose file with
//! `docker stack deploy`, as play-with-docker's `?stack=URL&stack_name=NAME` links did. The
//! file comes inline or from a URL; the server fetches URLs only below the sources the
//! operator lists (`--stack-source`, none by default), so a link can never make it fetch from
//! an address of the operator's network. The deploy is typed into the node's shared terminal,
//! so the learner sees its output there.

use std::time::Duration;

use bytes::Bytes;
use url::Url;

use super::{init, step_error};
use crate::sessions::{SessionError, Sessions, MAIN_TERMINAL};
use crate::wire::StackRequest;

/// Where play-with-docker's short stack names (`?stack=/dockercoins`) point.
const PWD_STACKS: &str = "https://raw.githubusercontent.com/play-with-docker/stacks/master";
/// Largest compose file.
const MAX_STACK_BYTES: usize = 1 << 20;
/// Longest fetch of a stack file.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Where the file lands in the node.
const STACK_PATH: &str = "/root/stack.yml";
/// The stack's name when the request gives none (play-with-docker's).
const DEFAULT_NAME: &str = "pwd";

/// A compose file to deploy, checked and in hand.
pub(super) struct Stack {
    compose: String,
    name: String,
}

impl Stack {
    /// The request's compose file: inline, or fetched from an allowed source.
    pub async fn resolve(s: &Sessions, req: StackRequest) -> Result<Stack, SessionError> {
        let name = req.name.unwrap_or_else(|| DEFAULT_NAME.into());
        if !valid_name(&name) {
            return Err(SessionError::Invalid(
                "a stack name is 1 to 32 of a-z, 0-9, '-' and '_', starting with a letter or digit"
                    .into(),
            ));
        }
        let compose = match (req.url, req.compose) {
            (Some(url), None) => fetch(&allowed_url(&url, &s.config().stack_sources)?).await?,
            (None, Some(text)) if text.len() <= MAX_STACK_BYTES => text,
            (None, Some(_)) => return Err(too_large()),
            _ => {
                return Err(SessionError::Invalid(
                    "a stack is either a url or a compose text".into(),
                ))
            }
        };
        Ok(Stack { compose, name })
    }

    /// Makes the first node a swarm manager, writes the file into it and types the deploy into
    /// its terminal.
    pub async fn deploy(self, s: &Sessions, sid: &str) -> Result<(), SessionError> {
        let (node, _) = init(s, sid, Default::default()).await?;
        let compose = Bytes::from(self.compose);
        s.write_file(sid, &node, STACK_PATH, async {
            Ok::<_, SessionError>(compose)
        })
        .await
        .map_err(|e| step_error("write the stack file", e))?;
        let term = s
            .terminal(sid, &node, MAIN_TERMINAL)
            .await
            .map_err(|e| step_error("open the terminal", e))?;
        settle(&term).await;
        term.write(format!(
            "docker stack deploy -c {STACK_PATH} {}\n",
            self.name
        ))
        .await
        .map_err(|e| step_error("start the deploy", e))?;
        s.progress(sid, format!("deploying stack {}", self.name));
        Ok(())
    }
}

/// Waits (at most 5 s) until a new shell has printed its welcome and prompt, so the command
/// typed next shows after them rather than echoed above them.
async fn settle(term: &terminals::Terminal) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut seen = term.offset();
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = term.offset();
        if now > 0 && now == seen {
            return;
        }
        seen = now;
    }
}

fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
}

fn too_large() -> SessionError {
    SessionError::Invalid(format!(
        "the stack file is larger than {} KiB",
        MAX_STACK_BYTES >> 10
    ))
}

/// The URL of a stack link, checked against the allowed sources. play-with-docker's forms are
/// kept: a link that does not end in `.yml` names a directory holding `stack.yml`, and one
/// that starts with `/` names a directory of its stacks repository.
fn allowed_url(stack: &str, sources: &[Url]) -> Result<Url, SessionError> {
    let mut link = stack.trim().to_string();
    if !(link.ends_with(".yml") || link.ends_with(".yaml")) {
        link = format!("{}/stack.yml", link.trim_end_matches('/'));
    }
    if link.starts_with('/') {
        link = format!("{PWD_STACKS}{link}");
    }
    let url = Url::parse(&link)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| {
            SessionError::Invalid(format!("the stack {stack:?} is not an http(s) URL"))
        })?;
    if sources.iter().any(|src| is_below(&url, src)) {
        return Ok(url);
    }
    Err(SessionError::Invalid(if sources.is_empty() {
        "this server fetches no stack files (its operator can allow sources with \
         --stack-source)"
            .into()
    } else {
        let list: Vec<&str> = sources.iter().map(Url::as_str).collect();
        format!(
            "stack files are fetched only from {}; not from {url}",
            list.join(", ")
        )
    }))
}

/// Whether `url` is `source` or below it: same scheme, host and port, its path under the
/// source's (parsing has already resolved `..` and `%2e%2e`), and no credentials.
fn is_below(url: &Url, source: &Url) -> bool {
    url.username().is_empty()
        && url.password().is_none()
        && url.scheme() == source.scheme()
        && url.host_str() == source.host_str()
        && url.port_or_known_default() == source.port_or_known_default()
        && url.path().starts_with(source.path())
}

/// The file at `url`: a 2xx answer within the time and size bounds, as UTF-8 text. Redirects
/// are not followed (they could leave the allowed source).
async fn fetch(url: &Url) -> Result<String, SessionError> {
    let failed = |e: &dyn std::fmt::Display| SessionError::StackFetch(format!("fetch {url}: {e}"));
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(FETCH_TIMEOUT)
        .build()
        .map_err(|e| failed(&e))?;
    let mut res = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| failed(&e))?;
    let status = res.status();
    if !status.is_success() {
        return Err(failed(&format!(
            "HTTP {status} (redirects are not followed)"
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| failed(&e))? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_STACK_BYTES {
            return Err(too_large());
        }
    }
    String::from_utf8(body).map_err(|_| SessionError::Invalid(format!("{url} is not UTF-8 text")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(list: &[&str]) -> Vec<Url> {
        list.iter().map(|s| Url::parse(s).unwrap()).collect()
    }

    #[test]
    fn stack_links_are_checked_against_the_sources() {
        let src = sources(&["http://127.0.0.1:8000/stacks/", PWD_STACKS]);
        let ok = |s: &str| allowed_url(s, &src).map(|u| u.to_string());
        assert_eq!(
            ok("http://127.0.0.1:8000/stacks/demo.yml").unwrap(),
            "http://127.0.0.1:8000/stacks/demo.yml"
        );
        assert_eq!(
            ok("http://127.0.0.1:8000/stacks/demo").unwrap(),
            "http://127.0.0.1:8000/stacks/demo/stack.yml"
        );
        assert_eq!(
            ok("/dockercoins").unwrap(),
            format!("{PWD_STACKS}/dockercoins/stack.yml")
        );
        for refused in [
            "http://127.0.0.1:8000/other/x.yml",
            "http://127.0.0.1:8000/stacks/../x.yml",
            "http://127.0.0.1:8000/stacks/%2e%2e/x.yml",
            "http://127.0.0.1:8001/stacks/x.yml",
            "https://127.0.0.1:8000/stacks/x.yml",
            "http://user:pw@127.0.0.1:8000/stacks/x.yml",
            "http://127.0.0.1.nip.io:8000/stacks/x.yml",
            "file:///etc/passwd.yml",
            "stacks/x.yml",
        ] {
            assert!(ok(refused).is_err(), "{refused} was allowed");
        }
        let e = allowed_url("http://a/x.yml", &[]).unwrap_err().to_string();
        assert!(e.contains("--stack-source"), "{e}");
    }

    #[test]
    fn stack_names() {
        assert!(valid_name("demo"));
        assert!(valid_name("my_app-2"));
        assert!(!valid_name(""));
        assert!(!valid_name("-x"));
        assert!(!valid_name("Demo"));
        assert!(!valid_name("a;rm -rf /"));
        assert!(!valid_name(&"a".repeat(33)));
    }
}
