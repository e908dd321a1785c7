//! Where one node create's time goes, read from the timestamps in the node's dockerd log.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sandbox::RuntimeConfig;

use crate::figures::ms;

/// A node's dockerd log as the host sees it. This is the runtime's private layout; if it
/// changes, the phase figures are simply left out.
pub(crate) fn dockerd_log(cfg: &RuntimeConfig, network: &str, hostname: &str) -> PathBuf {
    cfg.state_dir
        .join("nodes")
        .join(format!("{network}-{hostname}"))
        .join("disk/upper/var/log/dockerd.log")
}

/// Where one create's time went, from the wall clock around the call and the timestamps dockerd
/// wrote (the node shares the host's clock).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Phases {
    /// From the call to dockerd's first log line: host preparation, namespaces, mounts, init.
    pub(crate) before_dockerd_ms: f64,
    /// From dockerd's first log line to "API listen on": the engine's own start.
    pub(crate) dockerd_ms: f64,
    /// From "API listen on" to the call returning: the runtime's ping loop and bookkeeping.
    pub(crate) after_listen_ms: f64,
}

impl Phases {
    pub(crate) fn from_dockerd_log(
        path: &Path,
        call: SystemTime,
        returned: SystemTime,
    ) -> Option<Phases> {
        let log = std::fs::read_to_string(path).ok()?;
        Self::from_log_text(&log, call, returned)
    }

    fn from_log_text(log: &str, call: SystemTime, returned: SystemTime) -> Option<Phases> {
        let first = log.lines().find_map(log_time)?;
        let listen = log
            .lines()
            .filter(|l| l.contains("API listen on"))
            .find_map(log_time)?;
        let span = |a: SystemTime, b: SystemTime| {
            b.duration_since(a).map_or_else(|e| -ms(e.duration()), ms)
        };
        Some(Phases {
            before_dockerd_ms: span(call, first),
            dockerd_ms: span(first, listen),
            after_listen_ms: span(listen, returned),
        })
    }
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

    #[test]
    fn phases_from_a_dockerd_log() {
        let log = "time=\"1970-01-01T00:00:10.100Z\" level=info msg=\"Starting up\"\n\
                   time=\"1970-01-01T00:00:10.250Z\" level=info msg=\"Loading containers: done.\"\n\
                   time=\"1970-01-01T00:00:10.300Z\" level=info msg=\"API listen on /run/docker.sock\"\n";
        let call = UNIX_EPOCH + Duration::from_millis(10_000);
        let returned = UNIX_EPOCH + Duration::from_millis(10_320);
        let p = Phases::from_log_text(log, call, returned).unwrap();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-6;
        assert!(close(p.before_dockerd_ms, 100.0), "{p:?}");
        assert!(close(p.dockerd_ms, 200.0), "{p:?}");
        assert!(close(p.after_listen_ms, 20.0), "{p:?}");
        assert!(Phases::from_log_text("no timestamps\n", call, returned).is_none());
    }
}
