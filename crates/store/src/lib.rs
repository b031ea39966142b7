#![doc = include_str!("../README.md")]

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use husk_core::{ContainerRecord, Error, Result, SandboxRecord};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Schema migrations, in order; migration `i` brings the schema to version `i + 1`. Never edit one that shipped:
/// append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: objects and operations.
    "CREATE TABLE objects (
        kind TEXT NOT NULL,
        id TEXT NOT NULL,
        name TEXT,
        project TEXT NOT NULL DEFAULT '',
        data TEXT NOT NULL,
        updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
        PRIMARY KEY (kind, id)
    );
    CREATE UNIQUE INDEX objects_by_name ON objects(kind, name) WHERE name IS NOT NULL;
    CREATE INDEX objects_by_project ON objects(kind, project);
    CREATE TABLE operations (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        kind TEXT NOT NULL,
        target TEXT NOT NULL,
        step TEXT NOT NULL,
        data TEXT NOT NULL,
        started_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
    );",
    // 2: the object an object belongs to (a container's sandbox), indexed, so a sandbox's containers are found
    // without reading every container.
    "ALTER TABLE objects ADD COLUMN parent TEXT;
    UPDATE objects SET parent = json_extract(data, '$.sandbox_id') WHERE kind = 'container';
    CREATE INDEX objects_by_parent ON objects(kind, parent) WHERE parent IS NOT NULL;",
];

/// The objects of a kind owned by one of two projects (see [`Store::in_project`]).
const IN_PROJECT_QUERY: &str =
    "SELECT data FROM objects WHERE kind = ?1 AND project IN (?2, ?3) ORDER BY rowid";

/// The objects of a kind whose IDs lie in a range: the IDs that begin with a prefix (see [`prefix_bound`]).
const PREFIX_QUERY: &str =
    "SELECT data FROM objects WHERE kind = ?1 AND id >= ?2 AND id < ?3 LIMIT 2";

/// The least string greater than every string that begins with `prefix` (SQLite compares text byte by byte, and
/// no character's UTF-8 encoding sorts above U+10FFFF's).
fn prefix_bound(prefix: &str) -> String {
    format!("{prefix}\u{10FFFF}")
}

/// A document the store can keep. `KIND` names its collection; names, when present, are unique per kind.
pub trait Object: Serialize + DeserializeOwned {
    /// Collection name (`container`, `sandbox`, `image` ...).
    const KIND: &'static str;
    /// Unique ID within the kind.
    fn id(&self) -> &str;
    /// Unique name within the kind, if the object has one.
    fn name(&self) -> Option<&str> {
        None
    }
    /// Owning project (empty when the kind is not project-scoped).
    fn project(&self) -> &str {
        ""
    }
    /// The ID of the object this one belongs to (a container's sandbox), if any: see [`Store::children`].
    fn parent(&self) -> Option<&str> {
        None
    }
}

impl Object for ContainerRecord {
    const KIND: &'static str = "container";
    fn id(&self) -> &str {
        &self.config.id
    }
    fn name(&self) -> Option<&str> {
        Some(&self.config.name)
    }
    fn project(&self) -> &str {
        &self.project
    }
    fn parent(&self) -> Option<&str> {
        self.sandbox_id.as_deref()
    }
}

impl Object for SandboxRecord {
    const KIND: &'static str = "sandbox";
    fn id(&self) -> &str {
        &self.config.id
    }
    fn name(&self) -> Option<&str> {
        Some(&self.config.name)
    }
    fn project(&self) -> &str {
        &self.project
    }
}

/// An operation recorded before it started and not yet finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// Row ID.
    pub id: i64,
    /// What kind of operation (`create_container`, `delete_sandbox` ...).
    pub kind: String,
    /// The ID of the object it works on.
    pub target: String,
    /// The last step recorded.
    pub step: String,
    /// Whatever the operation needs to finish or undo itself (JSON).
    pub data: serde_json::Value,
}

/// The husk database.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
}

fn db_err(what: &str, e: rusqlite::Error) -> Error {
    Error::internal(format!("store: {what}: {e}"))
}

fn json_err(what: &str, e: serde_json::Error) -> Error {
    Error::internal(format!("store: {what}: {e}"))
}

/// How long the store waits for another process's write lock (when it opens, and at each change) before failing.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The error for `e`, met while `doing` on the store at `path`: a damaged or locked database says so, and what to do.
fn open_err(path: &str, doing: &str, e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => damaged(path, &e.to_string()),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => Error::conflict(format!(
            "store: {path} is locked by another process (another husk daemon, or a tool with a write \
             transaction open on it): stop it and start again"
        )),
        _ => db_err(&format!("{doing} {path}"), e),
    }
}

/// The refusal to open a damaged store: husk never resets one, as that would forget every container it runs.
fn damaged(path: &str, problem: &str) -> Error {
    Error::internal(format!(
        "store: {path} is damaged ({problem}); husk will not reset it (that would forget the containers it \
         runs): restore it from a backup, or move it aside to start with an empty store"
    ))
}

impl Store {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date. A store that is
    /// damaged, locked by another process or of a newer schema is refused with an error that says so; it is
    /// never reset or changed.
    pub fn open(path: &Path) -> Result<Store> {
        Self::open_waiting(path, LOCK_WAIT)
    }

    /// [`Store::open`], waiting at most `wait` for another process's write lock.
    fn open_waiting(path: &Path, wait: std::time::Duration) -> Result<Store> {
        let name = path.display().to_string();
        let conn = Connection::open(path).map_err(|e| open_err(&name, "open", e))?;
        Self::init(conn, &name, wait)
    }

    /// An in-memory database, for tests.
    pub fn open_in_memory() -> Result<Store> {
        let conn = Connection::open_in_memory().map_err(|e| db_err("open", e))?;
        Self::init(conn, ":memory:", LOCK_WAIT)
    }

    fn init(conn: Connection, name: &str, wait: std::time::Duration) -> Result<Store> {
        conn.busy_timeout(wait)
            .map_err(|e| open_err(name, "configure", e))?;
        // WAL keeps readers off writers' backs; NORMAL sync loses nothing when the process dies (only a power loss
        // can drop the last transactions).
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;",
        )
        .map_err(|e| open_err(name, "configure", e))?;
        // The write lock, taken and given back at once: a store another process holds is refused now, not at the
        // first change a user asks for.
        conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
            .map_err(|e| open_err(name, "lock", e))?;
        let problems: Vec<String> = {
            let mut check = conn
                .prepare("PRAGMA quick_check(5)")
                .map_err(|e| open_err(name, "check", e))?;
            let rows = check
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(|e| open_err(name, "check", e))?;
            rows.collect::<std::result::Result<_, _>>()
                .map_err(|e| open_err(name, "check", e))?
        };
        if problems != ["ok"] {
            return Err(damaged(name, &problems.join("; ")));
        }
        conn.busy_timeout(LOCK_WAIT)
            .map_err(|e| open_err(name, "configure", e))?;
        let store = Store {
            conn: Mutex::new(conn),
        };
        store.migrate(name)?;
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll back), so a poisoned
        // lock is safe to keep using.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn migrate(&self, name: &str) -> Result<()> {
        let mut conn = self.lock();
        let version: usize = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| open_err(name, "read the schema version of", e))?;
        if version > MIGRATIONS.len() {
            return Err(Error::internal(format!(
                "store: {name} has schema version {version}, newer than this husk knows ({}): a newer husk wrote \
                 it; upgrade husk (a store is never downgraded)",
                MIGRATIONS.len()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version) {
            let tx = conn
                .transaction()
                .map_err(|e| db_err("begin migration", e))?;
            tx.execute_batch(sql)
                .map_err(|e| db_err(&format!("migration {}", i + 1), e))?;
            tx.pragma_update(None, "user_version", i + 1)
                .map_err(|e| db_err("record schema version", e))?;
            tx.commit().map_err(|e| db_err("commit migration", e))?;
        }
        Ok(())
    }

    /// The schema version in use.
    pub fn schema_version(&self) -> Result<usize> {
        self.lock()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| db_err("read schema version", e))
    }

    /// Runs `f` in one transaction: every change it makes lands, or none does.
    pub fn transaction<T>(&self, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(|e| db_err("begin", e))?;
        let out = f(&Tx { conn: &tx })?;
        tx.commit().map_err(|e| db_err("commit", e))?;
        Ok(out)
    }

    /// Adds a new object; fails with a conflict if its ID or name is taken.
    pub fn insert<T: Object>(&self, obj: &T) -> Result<()> {
        Tx { conn: &self.lock() }.insert(obj)
    }

    /// Replaces an existing object; fails with not-found if it is gone, conflict if its new name is taken.
    pub fn update<T: Object>(&self, obj: &T) -> Result<()> {
        Tx { conn: &self.lock() }.update(obj)
    }

    /// Inserts or replaces an object.
    pub fn upsert<T: Object>(&self, obj: &T) -> Result<()> {
        Tx { conn: &self.lock() }.upsert(obj)
    }

    /// The object with this exact ID.
    pub fn get<T: Object>(&self, id: &str) -> Result<Option<T>> {
        Tx { conn: &self.lock() }.get(id)
    }

    /// The object named `key`, or with ID `key`, or whose ID starts with `key` (if only one does).
    pub fn find<T: Object>(&self, key: &str) -> Result<Option<T>> {
        Tx { conn: &self.lock() }.find(key)
    }

    /// The object with exactly this name (no ID or prefix match: a name that happens to be a prefix of
    /// several IDs is still only a name).
    pub fn named<T: Object>(&self, name: &str) -> Result<Option<T>> {
        Tx { conn: &self.lock() }.named(name)
    }

    /// Every object of the kind.
    pub fn list<T: Object>(&self) -> Result<Vec<T>> {
        Tx { conn: &self.lock() }.list()
    }

    /// The objects of the kind whose [`Object::parent`] is `parent`, oldest first (an index lookup).
    pub fn children<T: Object>(&self, parent: &str) -> Result<Vec<T>> {
        Tx { conn: &self.lock() }.children(parent)
    }

    /// The objects of the kind owned by `project` or by `also` (a second name of the same project, such as the
    /// empty one of objects made before projects), oldest first (an index lookup).
    pub fn in_project<T: Object>(&self, project: &str, also: Option<&str>) -> Result<Vec<T>> {
        Tx { conn: &self.lock() }.in_project(project, also)
    }

    /// Removes the object; returns whether it existed.
    pub fn delete<T: Object>(&self, id: &str) -> Result<bool> {
        Tx { conn: &self.lock() }.delete::<T>(id)
    }

    /// Records that an operation is starting; returns its ID.
    pub fn begin_operation(
        &self,
        kind: &str,
        target: &str,
        data: &serde_json::Value,
    ) -> Result<i64> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO operations (kind, target, step, data) VALUES (?1, ?2, 'started', ?3)",
            params![kind, target, data.to_string()],
        )
        .map_err(|e| db_err("record operation", e))?;
        Ok(conn.last_insert_rowid())
    }

    /// Records the step an operation has reached.
    pub fn set_operation_step(&self, id: i64, step: &str) -> Result<()> {
        self.lock()
            .execute(
                "UPDATE operations SET step = ?1 WHERE id = ?2",
                params![step, id],
            )
            .map_err(|e| db_err("record operation step", e))?;
        Ok(())
    }

    /// Forgets a finished (or rolled back) operation.
    pub fn finish_operation(&self, id: i64) -> Result<()> {
        self.lock()
            .execute("DELETE FROM operations WHERE id = ?1", params![id])
            .map_err(|e| db_err("finish operation", e))?;
        Ok(())
    }

    /// Operations that started and never finished, oldest first.
    pub fn pending_operations(&self) -> Result<Vec<Operation>> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT id, kind, target, step, data FROM operations ORDER BY id")
            .map_err(|e| db_err("list operations", e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .map_err(|e| db_err("list operations", e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, kind, target, step, data) = row.map_err(|e| db_err("read operation", e))?;
            let data = serde_json::from_str(&data).unwrap_or(serde_json::Value::Null);
            out.push(Operation {
                id,
                kind,
                target,
                step,
                data,
            });
        }
        Ok(out)
    }
}

/// Object access inside a [`Store::transaction`] (and behind every `Store` method).
pub struct Tx<'a> {
    conn: &'a Connection,
}

impl Tx<'_> {
    fn map_write_err<T: Object>(obj: &T, e: rusqlite::Error) -> Error {
        if let rusqlite::Error::SqliteFailure(f, _) = &e
            && f.code == rusqlite::ErrorCode::ConstraintViolation
        {
            return match obj.name() {
                Some(name) => {
                    Error::conflict(format!("the {} name {name:?} is already in use", T::KIND))
                }
                None => Error::conflict(format!("{} {} already exists", T::KIND, obj.id())),
            };
        }
        db_err(&format!("write {}", T::KIND), e)
    }

    /// See [`Store::insert`].
    pub fn insert<T: Object>(&self, obj: &T) -> Result<()> {
        let data = serde_json::to_string(obj).map_err(|e| json_err("encode", e))?;
        self.conn
            .execute(
                "INSERT INTO objects (kind, id, name, project, data, parent) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![T::KIND, obj.id(), obj.name(), obj.project(), data, obj.parent()],
            )
            .map_err(|e| Self::map_write_err(obj, e))?;
        Ok(())
    }

    /// See [`Store::update`].
    pub fn update<T: Object>(&self, obj: &T) -> Result<()> {
        let data = serde_json::to_string(obj).map_err(|e| json_err("encode", e))?;
        let n = self
            .conn
            .execute(
                "UPDATE objects SET name = ?3, project = ?4, data = ?5, parent = ?6,
                 updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')
                 WHERE kind = ?1 AND id = ?2",
                params![
                    T::KIND,
                    obj.id(),
                    obj.name(),
                    obj.project(),
                    data,
                    obj.parent()
                ],
            )
            .map_err(|e| Self::map_write_err(obj, e))?;
        if n == 0 {
            return Err(Error::not_found(format!("{} {}", T::KIND, obj.id())));
        }
        Ok(())
    }

    /// See [`Store::upsert`].
    pub fn upsert<T: Object>(&self, obj: &T) -> Result<()> {
        let data = serde_json::to_string(obj).map_err(|e| json_err("encode", e))?;
        self.conn
            .execute(
                "INSERT INTO objects (kind, id, name, project, data, parent) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(kind, id) DO UPDATE SET name = excluded.name, project = excluded.project, data = excluded.data,
                 parent = excluded.parent, updated_at = strftime('%Y-%m-%dT%H:%M:%fZ','now')",
                params![T::KIND, obj.id(), obj.name(), obj.project(), data, obj.parent()],
            )
            .map_err(|e| Self::map_write_err(obj, e))?;
        Ok(())
    }

    fn decode<T: Object>(data: &str) -> Result<T> {
        serde_json::from_str(data).map_err(|e| json_err(&format!("decode {}", T::KIND), e))
    }

    /// See [`Store::get`].
    pub fn get<T: Object>(&self, id: &str) -> Result<Option<T>> {
        let data: Option<String> = self
            .conn
            .query_row(
                "SELECT data FROM objects WHERE kind = ?1 AND id = ?2",
                params![T::KIND, id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| db_err(&format!("read {}", T::KIND), e))?;
        data.map(|d| Self::decode(&d)).transpose()
    }

    /// See [`Store::named`].
    pub fn named<T: Object>(&self, name: &str) -> Result<Option<T>> {
        let data: Option<String> = self
            .conn
            .query_row(
                "SELECT data FROM objects WHERE kind = ?1 AND name = ?2",
                params![T::KIND, name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| db_err(&format!("read {}", T::KIND), e))?;
        data.map(|d| Self::decode(&d)).transpose()
    }

    /// See [`Store::find`].
    pub fn find<T: Object>(&self, key: &str) -> Result<Option<T>> {
        if key.is_empty() {
            return Ok(None);
        }
        if let Some(obj) = self.named(key)? {
            return Ok(Some(obj));
        }
        if let Some(obj) = self.get(key)? {
            return Ok(Some(obj));
        }
        if !key.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(None);
        }
        // The IDs that begin with `key` are the range [key, key + U+10FFFF): a search of the primary key's index,
        // where `substr(id, ...) = key` read every object of the kind (each lookup of an unknown ID cost O(N)).
        let mut stmt = self
            .conn
            .prepare_cached(PREFIX_QUERY)
            .map_err(|e| db_err(&format!("read {}", T::KIND), e))?;
        let rows: Vec<String> = stmt
            .query_map(params![T::KIND, key, prefix_bound(key)], |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| db_err(&format!("read {}", T::KIND), e))?;
        match rows.len() {
            0 => Ok(None),
            1 => Self::decode(&rows[0]).map(Some),
            _ => Err(Error::invalid(
                "id",
                format!(
                    "the {} ID prefix {key:?} is ambiguous: give more characters",
                    T::KIND
                ),
            )),
        }
    }

    /// The objects of the kind a query (`sql`, selecting `data`, with the kind as `?1`) picks, decoded.
    fn select<T: Object>(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<T>> {
        let mut stmt = self
            .conn
            .prepare_cached(sql)
            .map_err(|e| db_err(&format!("list {}", T::KIND), e))?;
        let rows: Vec<String> = stmt
            .query_map(params, |r| r.get(0))
            .and_then(|rows| rows.collect())
            .map_err(|e| db_err(&format!("list {}", T::KIND), e))?;
        rows.iter().map(|d| Self::decode(d)).collect()
    }

    /// See [`Store::list`].
    pub fn list<T: Object>(&self) -> Result<Vec<T>> {
        self.select::<T>(
            "SELECT data FROM objects WHERE kind = ?1 ORDER BY rowid",
            params![T::KIND],
        )
    }

    /// See [`Store::children`].
    pub fn children<T: Object>(&self, parent: &str) -> Result<Vec<T>> {
        self.select::<T>(
            "SELECT data FROM objects WHERE kind = ?1 AND parent = ?2 ORDER BY rowid",
            params![T::KIND, parent],
        )
    }

    /// See [`Store::in_project`].
    pub fn in_project<T: Object>(&self, project: &str, also: Option<&str>) -> Result<Vec<T>> {
        self.select::<T>(
            IN_PROJECT_QUERY,
            params![T::KIND, project, also.unwrap_or(project)],
        )
    }

    /// See [`Store::delete`].
    pub fn delete<T: Object>(&self, id: &str) -> Result<bool> {
        let n = self
            .conn
            .execute(
                "DELETE FROM objects WHERE kind = ?1 AND id = ?2",
                params![T::KIND, id],
            )
            .map_err(|e| db_err(&format!("delete {}", T::KIND), e))?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Thing {
        id: String,
        name: Option<String>,
        value: u32,
    }

    impl Object for Thing {
        const KIND: &'static str = "thing";
        fn id(&self) -> &str {
            &self.id
        }
        fn name(&self) -> Option<&str> {
            self.name.as_deref()
        }
    }

    fn thing(id: &str, name: &str, value: u32) -> Thing {
        Thing {
            id: id.into(),
            name: Some(name.into()),
            value,
        }
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Owned {
        id: String,
        project: String,
    }

    impl Object for Owned {
        const KIND: &'static str = "owned";
        fn id(&self) -> &str {
            &self.id
        }
        fn project(&self) -> &str {
            &self.project
        }
    }

    /// A project's objects (and those of its second name) come from the project index, oldest first.
    #[test]
    fn a_projects_objects_are_found_by_the_index() {
        let s = Store::open_in_memory().unwrap();
        for (id, project) in [("a", "p1"), ("b", ""), ("c", "p2"), ("d", "p1")] {
            s.insert(&Owned {
                id: id.into(),
                project: project.into(),
            })
            .unwrap();
        }
        let ids = |v: Vec<Owned>| v.into_iter().map(|o| o.id).collect::<Vec<_>>();
        assert_eq!(ids(s.in_project("p1", None).unwrap()), ["a", "d"]);
        assert_eq!(ids(s.in_project("p1", Some("")).unwrap()), ["a", "b", "d"]);
        assert!(ids(s.in_project("p3", None).unwrap()).is_empty());
        let conn = s.lock();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {IN_PROJECT_QUERY}"))
            .unwrap()
            .query_map(params!["owned", "p1", ""], |r| r.get(3))
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter().any(|p| p.contains("objects_by_project")),
            "{plan:?}"
        );
    }

    /// A store at `dir/husk.db` with `n` things in it, closed again (so its file holds everything).
    fn store_file(dir: &Path, n: u32) -> std::path::PathBuf {
        let path = dir.join("husk.db");
        let store = Store::open(&path).unwrap();
        for i in 0..n {
            store
                .insert(&thing(&format!("t{i}"), &format!("n{i}"), i))
                .unwrap();
        }
        drop(store);
        assert!(
            !dir.join("husk.db-wal").exists(),
            "closing folds the log in"
        );
        path
    }

    #[test]
    fn a_damaged_store_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_file(dir.path(), 300);
        let good = std::fs::read(&path).unwrap();
        assert!(good.len() > 3 * 4096, "{} bytes", good.len());
        // The header overwritten; then every page but the first.
        let mut no_header = good.clone();
        no_header[..100].fill(0x5a);
        let mut no_pages = good.clone();
        no_pages[4096..].fill(0xa5);
        for bad in [no_header, no_pages] {
            std::fs::write(&path, &bad).unwrap();
            let e = Store::open(&path).unwrap_err();
            assert!(e.message.contains("is damaged"), "{e}");
            assert!(e.message.contains(&path.display().to_string()), "{e}");
            assert_eq!(std::fs::read(&path).unwrap(), bad, "left as it was");
        }
        std::fs::write(&path, &good).unwrap();
        assert_eq!(
            Store::open(&path).unwrap().list::<Thing>().unwrap().len(),
            300
        );
    }

    #[test]
    fn a_store_of_a_newer_husk_is_refused_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_file(dir.path(), 1);
        let newer = MIGRATIONS.len() + 1;
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", newer)
            .unwrap();
        let e = Store::open(&path).unwrap_err();
        assert!(e.message.contains("newer than this husk knows"), "{e}");
        let version: usize = Connection::open(&path)
            .unwrap()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, newer);
    }

    #[test]
    fn a_store_another_process_holds_is_refused_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_file(dir.path(), 1);
        let holder = Connection::open(&path).unwrap();
        holder.execute_batch("BEGIN IMMEDIATE").unwrap();
        let wait = std::time::Duration::from_millis(200);
        let e = Store::open_waiting(&path, wait).unwrap_err();
        assert!(e.message.contains("is locked by another process"), "{e}");
        holder.execute_batch("ROLLBACK").unwrap();
        let store = Store::open_waiting(&path, wait).unwrap();
        assert_eq!(store.list::<Thing>().unwrap().len(), 1);
    }

    #[test]
    fn crud_and_lookup_by_name_id_and_prefix() {
        let s = Store::open_in_memory().unwrap();
        s.insert(&thing("abc123", "one", 1)).unwrap();
        s.insert(&thing("abd456", "two", 2)).unwrap();
        assert_eq!(s.find::<Thing>("one").unwrap().unwrap().value, 1);
        assert_eq!(s.find::<Thing>("abd456").unwrap().unwrap().value, 2);
        assert_eq!(s.find::<Thing>("abc").unwrap().unwrap().value, 1);
        assert!(s.find::<Thing>("ab").is_err(), "ambiguous prefix");
        assert!(s.find::<Thing>("zzz").unwrap().is_none());
        assert!(
            s.find::<Thing>("abe").unwrap().is_none(),
            "a prefix between two IDs"
        );
        assert!(
            s.find::<Thing>("abc1234").unwrap().is_none(),
            "longer than the ID"
        );
        let mut t = s.get::<Thing>("abc123").unwrap().unwrap();
        t.value = 10;
        s.update(&t).unwrap();
        assert_eq!(s.get::<Thing>("abc123").unwrap().unwrap().value, 10);
        assert_eq!(s.list::<Thing>().unwrap().len(), 2);
        assert!(s.delete::<Thing>("abc123").unwrap());
        assert!(!s.delete::<Thing>("abc123").unwrap());
        assert!(s.update(&t).is_err());
    }

    /// A prefix lookup searches the primary key's index rather than reading every object of the kind.
    #[test]
    fn a_prefix_lookup_searches_the_index() {
        let s = Store::open_in_memory().unwrap();
        for i in 0..50 {
            s.insert(&thing(&format!("{i:02x}ee"), &format!("n{i}"), i))
                .unwrap();
        }
        assert_eq!(s.find::<Thing>("1f").unwrap().unwrap().value, 31);
        assert!(s.find::<Thing>("1").is_err(), "ambiguous prefix");
        let conn = s.lock();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {PREFIX_QUERY}"))
            .unwrap()
            .query_map(params!["thing", "1f", prefix_bound("1f")], |r| r.get(3))
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|p| p.contains("USING INDEX") && p.contains("id>? AND id<?")),
            "{plan:?}"
        );
    }

    /// A new object's name may be any prefix of existing IDs: the name check looks at names only (`find`
    /// would call the prefix ambiguous, and a create named `c` failed whenever two IDs began with `c`).
    #[test]
    fn a_name_that_prefixes_several_ids_is_only_a_name() {
        let s = Store::open_in_memory().unwrap();
        s.insert(&thing("c0ffee", "one", 1)).unwrap();
        s.insert(&thing("c1a551", "two", 2)).unwrap();
        assert!(s.find::<Thing>("c").is_err(), "ambiguous as a key");
        assert!(s.named::<Thing>("c").unwrap().is_none());
        s.insert(&thing("d00d", "c", 3)).unwrap();
        assert_eq!(s.named::<Thing>("c").unwrap().unwrap().value, 3);
        assert_eq!(
            s.find::<Thing>("c").unwrap().unwrap().value,
            3,
            "a name wins"
        );
    }

    #[test]
    fn duplicate_names_and_ids_conflict_and_change_nothing() {
        let s = Store::open_in_memory().unwrap();
        s.insert(&thing("a1", "web", 1)).unwrap();
        let e = s.insert(&thing("b2", "web", 2)).unwrap_err();
        assert_eq!(e.kind, husk_core::ErrorKind::Conflict);
        assert!(e.message.contains("\"web\""), "{}", e.message);
        assert!(s.insert(&thing("a1", "other", 3)).is_err());
        assert_eq!(s.list::<Thing>().unwrap(), vec![thing("a1", "web", 1)]);
    }

    #[test]
    fn transactions_are_all_or_nothing() {
        let s = Store::open_in_memory().unwrap();
        let r: Result<()> = s.transaction(|tx| {
            tx.insert(&thing("a1", "x", 1))?;
            tx.insert(&thing("a2", "x", 2))?; // name clash: everything rolls back
            Ok(())
        });
        assert!(r.is_err());
        assert!(s.list::<Thing>().unwrap().is_empty());
    }

    #[test]
    fn operations_survive_reopen_until_finished() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("husk.db");
        let id = {
            let s = Store::open(&path).unwrap();
            let id = s
                .begin_operation(
                    "create_container",
                    "c1",
                    &serde_json::json!({"sandbox": "s1"}),
                )
                .unwrap();
            s.set_operation_step(id, "driver_created").unwrap();
            s.insert(&thing("k", "n", 7)).unwrap();
            id
        };
        let s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), MIGRATIONS.len());
        let ops = s.pending_operations().unwrap();
        assert_eq!(ops.len(), 1);
        assert_eq!(
            (
                ops[0].kind.as_str(),
                ops[0].target.as_str(),
                ops[0].step.as_str()
            ),
            ("create_container", "c1", "driver_created")
        );
        assert_eq!(ops[0].data["sandbox"], "s1");
        s.finish_operation(id).unwrap();
        assert!(s.pending_operations().unwrap().is_empty());
        assert_eq!(s.get::<Thing>("k").unwrap().unwrap().value, 7);
    }

    fn container(id: &str, sandbox: Option<&str>) -> ContainerRecord {
        let mut c = ContainerRecord::default();
        c.config.id = id.into();
        c.config.name = format!("n-{id}");
        c.sandbox_id = sandbox.map(String::from);
        c
    }

    #[test]
    fn a_sandboxs_containers_are_found_by_the_index_also_after_the_migration() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("husk.db");
        // A store of schema version 1 (before the parent column) with two containers of sandbox s1.
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            for c in [
                container("c1", Some("s1")),
                container("c2", Some("s1")),
                container("c3", None),
            ] {
                conn.execute(
                    "INSERT INTO objects (kind, id, name, data) VALUES ('container', ?1, ?2, ?3)",
                    params![
                        c.config.id,
                        c.config.name,
                        serde_json::to_string(&c).unwrap()
                    ],
                )
                .unwrap();
            }
        }
        let s = Store::open(&path).unwrap();
        let ids = |s: &Store, parent: &str| -> Vec<String> {
            s.children::<ContainerRecord>(parent)
                .unwrap()
                .into_iter()
                .map(|c| c.config.id)
                .collect()
        };
        assert_eq!(ids(&s, "s1"), ["c1", "c2"]);
        s.insert(&container("c4", Some("s2"))).unwrap();
        s.upsert(&container("c3", Some("s2"))).unwrap();
        s.update(&container("c1", Some("s2"))).unwrap();
        assert_eq!(ids(&s, "s1"), ["c2"]);
        assert_eq!(ids(&s, "s2"), ["c1", "c3", "c4"]);
        s.delete::<ContainerRecord>("c3").unwrap();
        assert_eq!(ids(&s, "s2"), ["c1", "c4"]);
        assert!(ids(&s, "nothing").is_empty());
    }
}
