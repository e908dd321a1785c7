//! The embedded store: sessions and their nodes in SQLite under the state directory.
//!
//! The node runtime keeps its own records of what runs on the host (and adopts live nodes after
//! a restart); this store keeps what only the service knows: which networks are sessions, when
//! they expire, which template made them, who asked for them, and each node's swarm role. Every
//! change is written before it is answered, so a killed server comes back to the same sessions.
//! Writes are small and rare (a session or node created or removed, an extension), so one
//! connection behind a mutex is enough; WAL keeps readers and the writer out of each other's way.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection};

/// A failed store operation.
#[derive(Debug, thiserror::Error)]
#[error("session store {path}: {what}: {source}")]
pub struct StoreError {
    path: PathBuf,
    what: &'static str,
    #[source]
    source: rusqlite::Error,
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    pub id: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub max_expires_at: i64,
    pub template: Option<String>,
    pub client: IpAddr,
}

/// A node as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    pub session: String,
    pub name: String,
    pub image: String,
    pub role: Option<String>,
}

pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    id             TEXT PRIMARY KEY,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    max_expires_at INTEGER NOT NULL,
    template       TEXT,
    client         TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    session TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    name    TEXT NOT NULL,
    image   TEXT NOT NULL,
    role    TEXT,
    PRIMARY KEY (session, name)
);
";

impl Store {
    /// Opens (or creates) the store at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let err = |what| {
            move |source| StoreError {
                path: path.to_owned(),
                what,
                source,
            }
        };
        let conn = Connection::open(path).map_err(err("open"))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err("enable WAL"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(err("enable foreign keys"))?;
        // A sync per commit is what makes "answered" mean "survives a power cut".
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err("set synchronous"))?;
        conn.execute_batch(SCHEMA).map_err(err("create tables"))?;
        Ok(Store {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        what: &'static str,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|source| StoreError {
            path: self.path.clone(),
            what,
            source,
        })
    }

    pub fn insert_session(&self, s: &SessionRow) -> Result<(), StoreError> {
        self.with("insert session", |c| {
            c.execute(
                "INSERT INTO sessions (id, created_at, expires_at, max_expires_at, template, client)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    s.id,
                    s.created_at,
                    s.expires_at,
                    s.max_expires_at,
                    s.template,
                    s.client.to_string()
                ],
            )
            .map(drop)
        })
    }

    /// Moves a session's expiry to `expires_at` unless it is later already: two extensions
    /// written in either order leave the later one.
    pub fn extend_expiry(&self, id: &str, expires_at: i64) -> Result<(), StoreError> {
        self.with("update expiry", |c| {
            c.execute(
                "UPDATE sessions SET expires_at = MAX(expires_at, ?2) WHERE id = ?1",
                params![id, expires_at],
            )
            .map(drop)
        })
    }

    /// Removes a session and its nodes.
    pub fn delete_session(&self, id: &str) -> Result<(), StoreError> {
        self.with("delete session", |c| {
            c.execute("DELETE FROM sessions WHERE id = ?1", params![id])
                .map(drop)
        })
    }

    /// Inserts or replaces a node.
    pub fn put_node(&self, n: &NodeRow) -> Result<(), StoreError> {
        self.with("write node", |c| {
            c.execute(
                "INSERT OR REPLACE INTO nodes (session, name, image, role) VALUES (?1, ?2, ?3, ?4)",
                params![n.session, n.name, n.image, n.role],
            )
            .map(drop)
        })
    }

    pub fn delete_node(&self, session: &str, name: &str) -> Result<(), StoreError> {
        self.with("delete node", |c| {
            c.execute(
                "DELETE FROM nodes WHERE session = ?1 AND name = ?2",
                params![session, name],
            )
            .map(drop)
        })
    }

    pub fn sessions(&self) -> Result<Vec<SessionRow>, StoreError> {
        self.with("read sessions", |c| {
            let mut st = c.prepare(
                "SELECT id, created_at, expires_at, max_expires_at, template, client
                 FROM sessions ORDER BY created_at",
            )?;
            let rows = st.query_map([], session_row)?;
            rows.collect()
        })
    }

    pub fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        self.with("read nodes", |c| {
            let mut st = c.prepare("SELECT session, name, image, role FROM nodes")?;
            let rows = st.query_map([], |r| {
                Ok(NodeRow {
                    session: r.get(0)?,
                    name: r.get(1)?,
                    image: r.get(2)?,
                    role: r.get(3)?,
                })
            })?;
            rows.collect()
        })
    }
}

fn session_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRow> {
    let client: String = r.get(5)?;
    Ok(SessionRow {
        id: r.get(0)?,
        created_at: r.get(1)?,
        expires_at: r.get(2)?,
        max_expires_at: r.get(3)?,
        template: r.get(4)?,
        client: client.parse().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, Box::new(e))
        })?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str) -> SessionRow {
        SessionRow {
            id: id.into(),
            created_at: 10,
            expires_at: 20,
            max_expires_at: 30,
            template: Some("1m1w".into()),
            client: "127.0.0.1".parse().unwrap(),
        }
    }

    #[test]
    fn sessions_and_nodes_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sandpit.db");
        {
            let s = Store::open(&path).unwrap();
            s.insert_session(&row("a")).unwrap();
            s.insert_session(&row("b")).unwrap();
            s.put_node(&NodeRow {
                session: "a".into(),
                name: "node1".into(),
                image: "bookworm".into(),
                role: Some("manager".into()),
            })
            .unwrap();
            s.extend_expiry("a", 25).unwrap();
            s.extend_expiry("a", 22).unwrap();
        }
        let s = Store::open(&path).unwrap();
        let all = s.sessions().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all.iter().find(|r| r.id == "a").unwrap().expires_at, 25);
        assert_eq!(s.nodes().unwrap().len(), 1);
        // Deleting a session takes its nodes along.
        s.delete_session("a").unwrap();
        assert_eq!(s.sessions().unwrap().len(), 1);
        assert!(s.nodes().unwrap().is_empty());
    }

    #[test]
    fn a_duplicate_session_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("db")).unwrap();
        s.insert_session(&row("a")).unwrap();
        let e = s.insert_session(&row("a")).unwrap_err();
        assert!(e.to_string().contains("insert session"), "{e}");
    }
}
