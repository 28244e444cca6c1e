//! A cluster of real nodes as separate processes, for the multi-node tests.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{Client, Process, Start, free_port, http, metric};
use serde_json::{Value, json};

pub const SECRET: &str = "cluster-test-secret-0123456789";
pub const TOKEN_SECRET: &str = "token-secret-for-the-cluster-tests-0123";

/// A static cluster of `n` nodes `n1..nN`, each a child process.
pub struct Cluster {
    pub ids: Vec<String>,
    pub mesh: Vec<SocketAddr>,
    pub ws: Vec<SocketAddr>,
    pub api: Vec<SocketAddr>,
    pub nodes: Vec<Option<Process>>,
    pub secrets: Vec<String>,
    /// Extra flags for every node.
    pub extra: Vec<String>,
    /// Give every node the same peer list (itself included) and no --mesh-listen.
    pub same_list: bool,
}

pub fn addr() -> SocketAddr {
    format!("127.0.0.1:{}", free_port()).parse().unwrap()
}

/// `n` free addresses.
fn fresh(n: usize) -> Vec<SocketAddr> {
    (0..n).map(|_| addr()).collect()
}

impl Cluster {
    pub fn start(n: usize) -> Cluster {
        Self::start_with_secrets(vec![SECRET.to_owned(); n])
    }

    /// Every node with the same peer list, itself included, and no --mesh-listen:
    /// each finds its own address in the list by its id.
    pub fn start_with_one_list(n: usize) -> Cluster {
        Self::boot_new(fresh(n), vec![SECRET.to_owned(); n], Vec::new(), true)
    }

    pub fn start_with_secrets(secrets: Vec<String>) -> Cluster {
        Self::boot_new(fresh(secrets.len()), secrets, Vec::new(), false)
    }

    /// A cluster whose nodes listen for the mesh on `mesh` (another process may hold
    /// one: then the whole cluster moves, as [`Cluster::start`] does on a lost race).
    pub fn start_on(mesh: Vec<SocketAddr>) -> Cluster {
        let n = mesh.len();
        Self::boot_new(mesh, vec![SECRET.to_owned(); n], Vec::new(), false)
    }

    /// A cluster whose nodes all read `toml` as their config file.
    pub fn start_with_config(n: usize, toml: &str) -> Cluster {
        let path = std::env::temp_dir().join(format!(
            "ringway-cluster-{}-{}.toml",
            std::process::id(),
            free_port()
        ));
        std::fs::write(&path, toml).unwrap();
        let extra = vec!["--config".into(), path.display().to_string()];
        Self::boot_new(fresh(n), vec![SECRET.to_owned(); n], extra, false)
    }

    /// Nodes `n1..nN` (N = `mesh.len()`) listening for the mesh on `mesh`, the
    /// clients and the API on free ports, all started.
    fn boot_new(
        mesh: Vec<SocketAddr>,
        secrets: Vec<String>,
        extra: Vec<String>,
        same_list: bool,
    ) -> Cluster {
        let n = mesh.len();
        let mut c = Cluster {
            ids: (1..=n).map(|i| format!("n{i}")).collect(),
            mesh,
            ws: fresh(n),
            api: fresh(n),
            nodes: (0..n).map(|_| None).collect(),
            secrets,
            extra,
            same_list,
        };
        c.boot_all();
        c
    }

    /// Start every node. A node that finds one of its ports taken by another process
    /// (between [`free_port`] and its bind) stops them all, and the cluster starts
    /// again on new addresses (every node's mesh address is in every other's peer
    /// list), twice at most.
    fn boot_all(&mut self) {
        let n = self.ids.len();
        let mut again = false;
        super::on_free_ports(|| {
            if again {
                for node in &mut self.nodes {
                    node.take();
                }
                (self.mesh, self.ws, self.api) = (fresh(n), fresh(n), fresh(n));
            }
            again = true;
            (0..n).try_for_each(|i| self.try_boot(i))
        })
    }

    /// Start node `i` (again) on its addresses.
    pub fn boot(&mut self, i: usize) {
        self.try_boot(i).unwrap_or_else(|e| panic!("{e}"));
    }

    fn try_boot(&mut self, i: usize) -> Result<(), Start> {
        let mut args: Vec<String> = vec![
            "--node-id".into(),
            self.ids[i].clone(),
            "--mesh-secret".into(),
            self.secrets[i].clone(),
            "--token-secret".into(),
            TOKEN_SECRET.into(),
            "--workers".into(),
            "2".into(),
            "--rate-limit".into(),
            "0".into(),
        ];
        args.extend(self.extra.iter().cloned());
        if !self.same_list {
            args.push("--mesh-listen".into());
            args.push(self.mesh[i].to_string());
        }
        for j in 0..self.ids.len() {
            if j != i || self.same_list {
                args.push("--peer".into());
                args.push(format!("{}={}", self.ids[j], self.mesh[j]));
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let node = Process::try_start_at(self.ws[i], self.api[i], &args)
            .map_err(|e| e.map(|e| format!("node {}: {e}", self.ids[i])))?;
        self.nodes[i] = Some(node);
        Ok(())
    }

    /// Kill node `i` at once (SIGKILL: a crash, nothing said to its peers).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut p) = self.nodes[i].take() {
            p.child.kill().unwrap();
            p.child.wait().unwrap();
        }
    }

    pub fn url(&self, i: usize) -> String {
        format!("ws://{}/ws", self.ws[i])
    }

    pub fn client(&self, i: usize) -> Client {
        Client::connect(&self.url(i))
    }

    pub fn user(&self, i: usize, user: &str) -> Client {
        let mut c = Client::connect(&format!("{}?token={}", self.url(i), token(user)));
        assert_eq!(c.welcome["user"], user);
        let personal = c.recv();
        assert_eq!(personal["type"], "subscribed", "{personal}");
        assert_eq!(personal["room"], format!("user:{user}"));
        c
    }

    /// Links up as seen from node `i`.
    pub fn links_up(&self, i: usize) -> usize {
        let (_, body) = http(self.api[i], "GET", "/v1/cluster", "");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["peers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["up"] == true)
            .count()
    }

    /// Wait until every running node sees every other running node.
    pub fn wait_converged(&self) {
        let running: Vec<usize> = (0..self.ids.len())
            .filter(|&i| self.nodes[i].is_some())
            .collect();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if running
                .iter()
                .all(|&i| self.links_up(i) == running.len() - 1)
            {
                return;
            }
            assert!(Instant::now() < deadline, "the mesh did not converge");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Index of the node that owns `room` among the nodes in `live` (mirrors the
    /// nodes' rendezvous hashing).
    pub fn owner(&self, room: &str, live: &[usize]) -> usize {
        let seeds: Vec<u64> = self
            .ids
            .iter()
            .map(|id| ringway::rendezvous::seed(id))
            .collect();
        let mask = live.iter().fold(0u64, |m, &i| m | 1 << i);
        ringway::rendezvous::owner(room, &seeds, mask)
    }

    /// A room name owned by node `want` while `live` are up.
    pub fn room_owned_by(&self, want: usize, live: &[usize], prefix: &str) -> String {
        (0..)
            .map(|k| format!("{prefix}{k}"))
            .find(|r| self.owner(r, live) == want)
            .unwrap()
    }

    pub fn publish(&self, i: usize, room: &str, data: Value) -> (String, u64) {
        let (status, body) = http(
            self.api[i],
            "POST",
            "/v1/publish",
            &json!({"room": room, "data": data}).to_string(),
        );
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        (
            v["epoch"].as_str().unwrap().to_owned(),
            v["seq"].as_u64().unwrap(),
        )
    }

    pub fn metric(&self, i: usize, name: &str) -> f64 {
        metric(self.api[i], name)
    }
}

/// A one-hour token for `user`.
pub fn token(user: &str) -> String {
    ringway::auth::mint_hs256(
        TOKEN_SECRET.as_bytes(),
        &ringway::auth::Claims {
            sub: user.into(),
            exp: ringway::auth::unix_now() + 3600,
            rooms: None,
        },
    )
}

/// Read messages until one of type `kind` arrives (skipping others such as joins).
pub fn next_of(c: &mut Client, kind: &str) -> Value {
    loop {
        let v = c.recv();
        if v["type"] == kind {
            return v;
        }
    }
}
