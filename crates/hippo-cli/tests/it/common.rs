//! Running the real binary.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_hippo");

/// The model directory (see `scripts/fetch-model.sh`).
pub fn model_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("HIPPO_MODEL_DIR") {
        return PathBuf::from(d);
    }
    hippo::embed::default_model_dir().expect("HOME or XDG_CACHE_HOME is set")
}

/// The multilingual e5 model's directory: `HIPPO_E5_DIR`, or where
/// `scripts/fetch-e5.sh` puts it.
pub fn e5_dir() -> PathBuf {
    let dir = std::env::var_os("HIPPO_E5_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            hippo::embed::default_model_dir()
                .and_then(|d| d.parent().map(|p| p.join("multilingual-e5-small-q4")))
        })
        .expect("HOME or XDG_CACHE_HOME is set");
    assert!(
        dir.join(hippo::embed::E5_FILE).is_file(),
        "the e5 model is missing at {}: run scripts/fetch-e5.sh",
        dir.display()
    );
    dir
}

/// A `hippo` command on database `db`.
pub fn hippo(db: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env("HIPPO_DB", db)
        .env("HIPPO_MODEL_DIR", model_dir())
        .env("HIPPO_LOG", "warn")
        .env("HOME", db.parent().unwrap());
    c
}

/// Runs a `hippo` command on `db` that must succeed; its trimmed stdout.
pub fn run(db: &Path, args: &[&str]) -> String {
    let out = hippo(db).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Creates an API key with the CLI; the key text.
pub fn key(db: &Path, tenant: &str, access: &str) -> String {
    run(
        db,
        &["key", "create", "--tenant", tenant, "--access", access],
    )
}

/// The public id of a key (`hk_<id>_<secret>`).
pub fn key_id(key: &str) -> &str {
    key.split('_').nth(1).unwrap()
}

/// A running server, killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
}

impl Server {
    pub fn start(db: &Path, extra: &[&str]) -> Server {
        let mut cmd = hippo(db);
        cmd.args(["serve", "--listen", "127.0.0.1:0"]).args(extra);
        Server::spawn(cmd)
    }

    /// A server whose files may not grow past `limit_kib` KiB each
    /// (RLIMIT_FSIZE, with SIGXFSZ ignored): writes beyond it fail in the
    /// kernel with EFBIG, as on a full disk.
    pub fn start_with_file_limit(db: &Path, limit_kib: u64) -> Server {
        let env = hippo(db);
        let mut wrapped = Command::new("bash");
        wrapped
            .args(["-c", "trap '' XFSZ; ulimit -f \"$1\"; shift; exec \"$@\""])
            .arg("fsize")
            .arg(limit_kib.to_string())
            .arg(BIN)
            .args(["serve", "--listen", "127.0.0.1:0"]);
        for (k, v) in env.get_envs().filter_map(|(k, v)| Some((k, v?))) {
            wrapped.env(k, v);
        }
        Server::spawn(wrapped)
    }

    pub fn spawn(mut cmd: Command) -> Server {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn hippo serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("read listen line");
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected output {line:?}"))
            .to_owned();
        Server { child, base }
    }

    /// SIGKILL, no shutdown.
    pub fn kill9(mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(None, method, path, body)
    }

    /// [`Server::call`] with an API key (`Authorization: Bearer`).
    pub fn call_as(
        &self,
        key: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let agent = ureq::AgentBuilder::new()
            .timeout(std::time::Duration::from_secs(60))
            .build();
        let mut req = agent.request(method, &format!("{}{}", self.base, path));
        if let Some(k) = key {
            req = req.set("Authorization", &format!("Bearer {k}"));
        }
        let resp = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let resp = match resp {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = resp.status();
        let text = resp.into_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

impl Server {
    /// POSTs `body` with extra headers; status, the `Idempotent-Replayed`
    /// header and the body.
    pub fn post_with(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> (u16, Option<String>, Value) {
        let mut req = ureq::AgentBuilder::new()
            .timeout(std::time::Duration::from_secs(300))
            .build()
            .post(&format!("{}{}", self.base, path));
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let resp = match req.send_json(body.clone()) {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("POST {path}: {e}"),
        };
        let status = resp.status();
        let replayed = resp.header("idempotent-replayed").map(str::to_owned);
        let text = resp.into_string().unwrap();
        (
            status,
            replayed,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
