//! A node's figures from its cgroups: memory, CPU time, pids, OOM kills.

use std::path::Path;

use super::{parse_u64, read_trimmed, read_u64, CgroupError, CgroupStats, NodeCgroup};

impl NodeCgroup {
    /// Current resource use of the node's tree.
    pub fn stats(&self) -> Result<CgroupStats, CgroupError> {
        let oom_path = self.file("memory", "memory.oom_control");
        Ok(CgroupStats {
            memory_bytes: read_u64(&self.file("memory", "memory.usage_in_bytes"))?,
            memory_limit_bytes: read_u64(&self.file("memory", "memory.limit_in_bytes"))?,
            cpu_usage_ns: read_u64(&self.file("cpuacct", "cpuacct.usage"))?,
            pids: read_u64(&self.file("pids", "pids.current"))?,
            oom_kills: parse_oom_kills(&oom_path, &read_trimmed(&oom_path)?)?,
        })
    }
}

/// The `oom_kill` counter of `memory.oom_control` (Linux >= 4.13; 0 when absent).
fn parse_oom_kills(path: &Path, text: &str) -> Result<u64, CgroupError> {
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("oom_kill ") {
            return parse_u64(path, value);
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::testing::fake_root;
    use crate::cgroups::HIERARCHIES;
    use std::fs;

    #[test]
    fn stats_are_parsed_from_files() {
        let root = fake_root("stats");
        let cg = NodeCgroup::new(&root.0, "sp", "n1");
        for h in HIERARCHIES {
            fs::create_dir_all(cg.dir(h)).unwrap();
        }
        fs::write(cg.file("memory", "memory.usage_in_bytes"), "35651584\n").unwrap();
        fs::write(cg.file("memory", "memory.limit_in_bytes"), "1073741824\n").unwrap();
        fs::write(
            cg.file("memory", "memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        )
        .unwrap();
        fs::write(cg.file("cpuacct", "cpuacct.usage"), "123456789\n").unwrap();
        fs::write(cg.file("pids", "pids.current"), "17\n").unwrap();
        assert_eq!(
            cg.stats().unwrap(),
            CgroupStats {
                memory_bytes: 35_651_584,
                memory_limit_bytes: 1 << 30,
                cpu_usage_ns: 123_456_789,
                pids: 17,
                oom_kills: 3,
            }
        );

        // Kernels before 4.13 have no oom_kill line.
        let p = Path::new("x");
        assert_eq!(
            parse_oom_kills(p, "oom_kill_disable 0\nunder_oom 0").unwrap(),
            0
        );
        fs::write(cg.file("pids", "pids.current"), "max\n").unwrap();
        let msg = cg.stats().unwrap_err().to_string();
        assert!(
            msg.starts_with("parse ") && msg.contains("pids.current"),
            "{msg}"
        );
        fs::remove_file(cg.file("cpuacct", "cpuacct.usage")).unwrap();
        let msg = cg.stats().unwrap_err().to_string();
        assert!(msg.contains("cpuacct.usage: ENOENT"), "{msg}");
    }
}
