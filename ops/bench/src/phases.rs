//! Where one node create's time goes, read from the timestamps in the node's engine logs.
//!
//! The node's PID 1 starts containerd and dockerd pointed at it at the same moment
//! (`sandbox/src/init/daemons.rs`); dockerd waits for containerd's socket by itself. Both are Go daemons that log through logrus
//! with a `time="…"` field, each into its own file on the node's disk, and the node shares the
//! host's clock, so their timestamps split the wall-clock time around one `create_node` call.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sandbox::RuntimeConfig;

use crate::figures::ms;

/// containerd's line once all its plugins are loaded and it serves its socket
/// ("containerd successfully booted in 0.045s").
const CONTAINERD_BOOTED: &str = "containerd successfully booted";
/// dockerd's line once its API serves requests ("API listen on /var/run/docker.sock").
const DOCKERD_LISTENING: &str = "API listen on";

/// The engine logs of one node as the host sees them: the node's upper layer. This is the
/// runtime's private layout; if it changes, the phase figures are simply left out.
pub(crate) struct EngineLogs {
    pub(crate) containerd: PathBuf,
    pub(crate) dockerd: PathBuf,
}

impl EngineLogs {
    pub(crate) fn of(cfg: &RuntimeConfig, network: &str, hostname: &str) -> EngineLogs {
        let logs = cfg
            .state_dir
            .join("nodes")
            .join(format!("{network}-{hostname}"))
            .join("disk/upper/var/log");
        EngineLogs {
            containerd: logs.join("containerd.log"),
            dockerd: logs.join("dockerd.log"),
        }
    }
}

/// Where one create's time went, from the wall clock around the call and the timestamps the
/// engine wrote. `before_dockerd_ms`, `dockerd_ms` and `after_listen_ms` follow each other: their
/// sum is the create's time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Phases {
    /// From the call to dockerd's first log line: everything below, up to `dockerd_ms`. Kept
    /// whole because runs before containerd had its own log reported only this.
    pub(crate) before_dockerd_ms: f64,
    /// From dockerd's first log line to "API listen on": the engine's own start.
    pub(crate) dockerd_ms: f64,
    /// From "API listen on" to the call returning: the runtime's ping loop and bookkeeping.
    pub(crate) after_listen_ms: f64,
    /// `before_dockerd_ms` split at containerd's log; None without a containerd log (a node
    /// whose dockerd started containerd itself).
    pub(crate) containerd: Option<ContainerdPhases>,
}

/// The part of a create before dockerd's first line, split at containerd's first line; and
/// containerd's own boot, which overlaps dockerd's process start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ContainerdPhases {
    /// From the call to containerd's first log line: host preparation, namespaces, mounts,
    /// init.
    pub(crate) before_containerd_ms: f64,
    /// From containerd's first log line to "containerd successfully booted".
    pub(crate) containerd_ms: f64,
    /// From containerd's first log line to dockerd's: how much longer dockerd's process takes
    /// to start (both are started together). `before_containerd_ms` plus this is
    /// `before_dockerd_ms`.
    pub(crate) dockerd_lag_ms: f64,
}

impl Phases {
    /// Reads the logs; None if dockerd's cannot be read or lacks a timestamp or its listen line.
    pub(crate) fn from_logs(
        logs: &EngineLogs,
        call: SystemTime,
        returned: SystemTime,
    ) -> Option<Phases> {
        let dockerd = std::fs::read_to_string(&logs.dockerd).ok()?;
        let containerd = std::fs::read_to_string(&logs.containerd).ok();
        Self::from_log_texts(containerd.as_deref(), &dockerd, call, returned)
    }

    fn from_log_texts(
        containerd: Option<&str>,
        dockerd: &str,
        call: SystemTime,
        returned: SystemTime,
    ) -> Option<Phases> {
        let (dockerd_first, listen) = first_and_marker(dockerd, DOCKERD_LISTENING)?;
        let containerd = containerd
            .and_then(|log| first_and_marker(log, CONTAINERD_BOOTED))
            .map(|(first, booted)| ContainerdPhases {
                before_containerd_ms: span(call, first),
                containerd_ms: span(first, booted),
                dockerd_lag_ms: span(first, dockerd_first),
            });
        Some(Phases {
            before_dockerd_ms: span(call, dockerd_first),
            dockerd_ms: span(dockerd_first, listen),
            after_listen_ms: span(listen, returned),
            containerd,
        })
    }
}

/// Milliseconds from `a` to `b`, negative if `b` is earlier.
fn span(a: SystemTime, b: SystemTime) -> f64 {
    b.duration_since(a).map_or_else(|e| -ms(e.duration()), ms)
}

/// The time of a log's first timestamped line and of the first line that contains `marker`.
fn first_and_marker(log: &str, marker: &str) -> Option<(SystemTime, SystemTime)> {
    let first = log.lines().find_map(log_time)?;
    let at = log
        .lines()
        .filter(|l| l.contains(marker))
        .find_map(log_time)?;
    Some((first, at))
}

/// The `time="…"` field of a dockerd (logrus) line: RFC 3339 with an optional fraction and a
/// `Z` or `±hh:mm` offset.
fn log_time(line: &str) -> Option<SystemTime> {
    let start = line.find("time=\"")? + "time=\"".len();
    let ts = &line[start..];
    let ts = &ts[..ts.find('"')?];
    parse_rfc3339(ts)
}

fn parse_rfc3339(ts: &str) -> Option<SystemTime> {
    let num = |s: &str| s.parse::<i64>().ok();
    let (date, rest) = ts.split_once('T')?;
    let mut d = date.splitn(3, '-');
    let (y, mo, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    let tz_at = rest.find(['Z', '+', '-'])?;
    let (clock, tz) = rest.split_at(tz_at);
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut c = hms.splitn(3, ':');
    let (h, mi, s) = (num(c.next()?)?, num(c.next()?)?, num(c.next()?)?);
    let offset_s = match tz {
        "Z" => 0,
        _ => {
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            let (oh, om) = tz[1..].split_once(':')?;
            sign * (num(oh)? * 3600 + num(om)? * 60)
        }
    };
    let secs = days_from_civil(y, mo, day) * 86_400 + h * 3600 + mi * 60 + s - offset_s;
    let nanos = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        digits.parse::<u32>().ok()?
    };
    UNIX_EPOCH.checked_add(Duration::new(u64::try_from(secs).ok()?, nanos))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_timestamps() {
        let t = parse_rfc3339("1970-01-02T00:00:01.5Z").unwrap();
        assert_eq!(t, UNIX_EPOCH + Duration::from_millis(86_401_500));
        let t = parse_rfc3339("2026-11-24T03:04:05.123456789+01:00").unwrap();
        let z = parse_rfc3339("2026-11-24T02:04:05.123456789Z").unwrap();
        assert_eq!(t, z);
        assert_eq!(
            z.duration_since(UNIX_EPOCH).unwrap().as_secs(),
            1_795_485_845
        );
        assert!(parse_rfc3339("yesterday").is_none());
    }

    const DOCKERD_LOG: &str = "\
time=\"1970-01-01T00:00:10.100Z\" level=info msg=\"Starting up\"
time=\"1970-01-01T00:00:10.250Z\" level=info msg=\"Loading containers: done.\"
time=\"1970-01-01T00:00:10.300Z\" level=info msg=\"API listen on /run/docker.sock\"
";

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    fn at_ms(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn phases_from_a_dockerd_log() {
        let (call, returned) = (at_ms(10_000), at_ms(10_320));
        let p = Phases::from_log_texts(None, DOCKERD_LOG, call, returned).unwrap();
        assert!(close(p.before_dockerd_ms, 100.0), "{p:?}");
        assert!(close(p.dockerd_ms, 200.0), "{p:?}");
        assert!(close(p.after_listen_ms, 20.0), "{p:?}");
        assert_eq!(p.containerd, None);
        assert!(Phases::from_log_texts(None, "no timestamps\n", call, returned).is_none());
        let unfinished = DOCKERD_LOG.lines().take(2).collect::<Vec<_>>().join("\n");
        assert!(Phases::from_log_texts(None, &unfinished, call, returned).is_none());
    }

    #[test]
    fn containerd_splits_the_time_before_dockerd() {
        // containerd logs with a local offset here, dockerd in UTC: both are the same clock.
        let containerd = "\
time=\"1970-01-01T01:00:10.030+01:00\" level=info msg=\"starting containerd\" revision=1 version=1.7.24
time=\"1970-01-01T01:00:10.031+01:00\" level=warning msg=\"failed to load plugin\" error=\"no btrfs\"
time=\"1970-01-01T01:00:10.070+01:00\" level=info msg=serving... address=/run/docker/containerd/containerd.sock
time=\"1970-01-01T01:00:10.075+01:00\" level=info msg=\"containerd successfully booted in 0.045s\"
";
        let (call, returned) = (at_ms(10_000), at_ms(10_320));
        let p = Phases::from_log_texts(Some(containerd), DOCKERD_LOG, call, returned).unwrap();
        let c = p.containerd.unwrap();
        assert!(close(c.before_containerd_ms, 30.0), "{c:?}");
        assert!(close(c.containerd_ms, 45.0), "{c:?}");
        assert!(close(c.dockerd_lag_ms, 70.0), "{c:?}");
        let split = c.before_containerd_ms + c.dockerd_lag_ms;
        assert!(close(split, p.before_dockerd_ms), "{p:?}");
        assert!(close(p.dockerd_ms, 200.0), "{p:?}");
    }

    #[test]
    fn phases_from_a_trixie_node() {
        // Excerpts of a real trixie node's logs (containerd 1.7, Docker 26.1); the call and
        // its return are from the runtime's own log of that create.
        let containerd = r#"time="2026-12-02T15:04:55.359711645Z" level=info msg="starting containerd" revision="1.7.24~ds1-6+deb13u1" version="1.7.24~ds1"
time="2026-12-02T15:04:55.373400556Z" level=info msg="loading plugin \"io.containerd.event.v1.exchange\"..." type=io.containerd.event.v1
time="2026-12-02T15:04:55.378795916Z" level=info msg=serving... address=/run/docker/containerd/containerd.sock
time="2026-12-02T15:04:55.378817037Z" level=info msg="containerd successfully booted in 0.020208s"
"#;
        let dockerd = r#"time="2026-12-02T15:04:55.420168812Z" level=info msg="Starting up"
time="2026-12-02T15:04:55.446447015Z" level=info msg="Loading containers: start."
time="2026-12-02T15:04:55.570692977Z" level=info msg="Docker daemon" commit=411e817 containerd-snapshotter=false storage-driver=overlay2 version=26.1.5+dfsg1
time="2026-12-02T15:04:55.588691499Z" level=info msg="API listen on /var/run/docker.sock"
"#;
        let (call, returned) = (at_ms(1_796_223_895_281), at_ms(1_796_223_895_590));
        let p = Phases::from_log_texts(Some(containerd), dockerd, call, returned).unwrap();
        let c = p.containerd.unwrap();
        let near = |a: f64, b: f64| (a - b).abs() < 0.01;
        assert!(near(c.before_containerd_ms, 78.712), "{c:?}");
        assert!(near(c.containerd_ms, 19.105), "{c:?}");
        assert!(near(c.dockerd_lag_ms, 60.457), "{c:?}");
        assert!(near(p.before_dockerd_ms, 139.169), "{p:?}");
        assert!(near(p.dockerd_ms, 168.523), "{p:?}");
        assert!(near(p.after_listen_ms, 1.309), "{p:?}");
    }

    #[test]
    fn a_containerd_log_without_its_boot_line_is_left_out() {
        // A containerd that has not finished booting, or no timestamps at all: the dockerd
        // phases stay, the containerd split is left out.
        let (call, returned) = (at_ms(10_000), at_ms(10_320));
        for containerd in [
            "time=\"1970-01-01T00:00:10.030Z\" level=info msg=\"starting containerd\"\n",
            "containerd: flag provided but not defined\n",
            "",
        ] {
            let p = Phases::from_log_texts(Some(containerd), DOCKERD_LOG, call, returned).unwrap();
            assert_eq!(p.containerd, None, "{containerd:?}");
            assert!(close(p.before_dockerd_ms, 100.0), "{p:?}");
        }
    }
}
