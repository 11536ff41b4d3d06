//! The Kubernetes manifests (deploy/k8s, issue 17 §4) parse, have the shape docs/deploy.md
//! describes, and their entry points start: the coordinator's and the agent's container
//! arguments, configuration files (the ConfigMap's) and environment (values, Secrets,
//! the downward API) are run as the kubelet would run them — paths under the mounts moved
//! into a temporary directory, listen addresses and the S3 and NATS endpoints pointed at
//! this machine's servers through `PREWARM_*` / `AWS_*` variables (which take precedence
//! over the files, as in a real overlay). Against moto's S3 server and a nats-server: the
//! agent attaches under its node's name, an event published to the stream moves a state
//! snapshotted into the bucket, read by the agent straight from S3, and an application's
//! token ensures it.
//!
//! No image is built here: the sandbox reaches no container registry (the base images),
//! and runs no container runtime (docs/deploy.md says what was and was not run).

#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

mod support;

use support::*;

fn manifests() -> Vec<Yaml> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/k8s");
    let mut docs = Vec::new();
    for f in ["prewarm.yaml", "secret.example.yaml"] {
        let text = std::fs::read_to_string(root.join(f)).unwrap();
        docs.extend(YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{f}: {e}")));
    }
    docs
}

fn find<'a>(docs: &'a [Yaml], kind: &str, name: &str) -> &'a Yaml {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn strs(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

/// What a container runs, as the kubelet would: its arguments and environment.
struct Entry {
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// The workload's first container, its `$(VAR)` references expanded, `secrets` standing in
/// for the Secrets' values and `node` for the downward API.
fn entry(workload: &Yaml, secrets: &BTreeMap<&str, String>, node: &str) -> Entry {
    let c = &workload["spec"]["template"]["spec"]["containers"][0];
    let mut env = Vec::new();
    for e in c["env"].as_vec().unwrap() {
        let name = e["name"].as_str().unwrap().to_owned();
        let value = match (&e["value"], &e["valueFrom"]) {
            (Yaml::String(v), _) => v.clone(),
            (_, from) if from["fieldRef"]["fieldPath"].as_str() == Some("spec.nodeName") => {
                node.to_owned()
            }
            (_, from) => {
                let key = from["secretKeyRef"]["key"].as_str().unwrap();
                secrets
                    .get(key)
                    .unwrap_or_else(|| panic!("secret key {key}"))
                    .clone()
            }
        };
        env.push((name, value));
    }
    let args = strs(&c["args"])
        .into_iter()
        .map(|a| {
            env.iter()
                .fold(a, |a, (k, v)| a.replace(&format!("$({k})"), v))
        })
        .collect();
    Entry { args, env }
}

/// The shape docs/deploy.md promises.
#[test]
fn the_manifests_parse_and_have_the_documented_shape() {
    let docs = manifests();
    let coord = find(&docs, "StatefulSet", "prewarm-coordinator");
    let agent = find(&docs, "DaemonSet", "prewarm-agent");
    find(&docs, "Service", "prewarm-coordinator");
    let config = find(&docs, "ConfigMap", "prewarm-config");
    for key in ["coordinator.toml", "agent.toml"] {
        assert!(config["data"][key].as_str().is_some(), "{key}");
    }
    let pod = &agent["spec"]["template"]["spec"];
    let cache = pod["volumes"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|v| v["name"].as_str() == Some("cache"))
        .unwrap();
    assert_eq!(
        cache["hostPath"]["path"].as_str(),
        Some("/var/lib/prewarm/cache")
    );
    for w in [coord, agent] {
        let vols = w["spec"]["template"]["spec"]["volumes"].as_vec().unwrap();
        let secret = vols.iter().find(|v| v["name"].as_str() == Some("secrets"));
        assert_eq!(
            secret.unwrap()["secret"]["secretName"].as_str(),
            Some("prewarm-tokens"),
            "tokens come from a Secret"
        );
        let c = &w["spec"]["template"]["spec"]["containers"][0];
        assert!(c["image"].as_str().unwrap().contains("prewarm"));
    }
    // Every key the Secrets hold is one a workload reads, and the other way round.
    let tokens = find(&docs, "Secret", "prewarm-tokens");
    let mut keys: Vec<&str> = tokens["stringData"]
        .as_hash()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    keys.sort();
    assert_eq!(keys, ["agent-token", "token", "tokens.toml"]);
}

/// Moves the mounts' paths into `root` (`/etc/prewarm/…`, `/var/lib/prewarm/…`).
fn rebase(s: &str, root: &Path) -> String {
    s.replace(
        "/etc/prewarm",
        &root.join("etc/prewarm").display().to_string(),
    )
    .replace(
        "/var/lib/prewarm",
        &root.join("var/lib/prewarm").display().to_string(),
    )
}

/// The secrets a deployment makes (docs/deploy.md, "Secrets"), with the tokens file.
fn make_secrets(dir: &Path) -> (PathBuf, String) {
    let secrets = dir.join("etc/prewarm/secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::fs::write(secrets.join("token"), "shared-operator-token-0123456789\n").unwrap();
    let tokens = secrets.join("tokens.toml");
    let mut entries = String::new();
    for (name, caps, file) in [
        ("agents", "transfer", secrets.join("agent-token")),
        ("apps", "ensure,events", dir.join("app-token")),
    ] {
        let out = run(&[
            "token",
            "new",
            "--name",
            name,
            "--prefix",
            "*",
            "--cap",
            caps,
            "--secret-file",
            file.to_str().unwrap(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        entries.push_str(&String::from_utf8(out.stdout).unwrap());
    }
    std::fs::write(&tokens, entries).unwrap();
    let app = std::fs::read_to_string(dir.join("app-token")).unwrap();
    (secrets, app.trim().to_owned())
}

#[test]
fn the_manifests_entry_points_run_a_fleet_against_real_s3_and_nats() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let (Some(s3), Some((_nats, nats_port))) = (s3_server("prewarm-state"), nats_server(root))
    else {
        return;
    };
    let docs = manifests();
    let config = find(&docs, "ConfigMap", "prewarm-config");
    std::fs::create_dir_all(root.join("etc/prewarm")).unwrap();
    for key in ["coordinator.toml", "agent.toml"] {
        let text = rebase(config["data"][key].as_str().unwrap(), root);
        std::fs::write(root.join("etc/prewarm").join(key), text).unwrap();
    }
    let (_, app_token) = make_secrets(root);
    let aws: BTreeMap<String, String> = s3.env().into_iter().collect();
    let secrets = BTreeMap::from([
        ("access-key-id", aws["AWS_ACCESS_KEY_ID"].clone()),
        ("secret-access-key", aws["AWS_SECRET_ACCESS_KEY"].clone()),
    ]);
    let (api, data, agent_api) = (free_port(), free_port(), free_port());
    // This machine's endpoints in place of the cluster's (an overlay's job).
    let here = |e: Entry, extra: &[(&str, String)]| {
        let mut env: Vec<(String, String)> = e
            .env
            .into_iter()
            .map(|(k, v)| match aws.get(&k) {
                Some(local) if k == "AWS_ENDPOINT_URL" => (k, local.clone()),
                _ => (k, v),
            })
            .collect();
        env.push(("AWS_ALLOW_HTTP".into(), "true".into()));
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let args: Vec<String> = e.args.iter().map(|a| rebase(a, root)).collect();
        (args, env)
    };
    let store = "s3://prewarm-state/fleet".to_owned();
    let coordinator = here(
        entry(
            find(&docs, "StatefulSet", "prewarm-coordinator"),
            &secrets,
            "node-0",
        ),
        &[
            ("PREWARM_LISTEN", format!("127.0.0.1:{api}")),
            ("PREWARM_DATA_LISTEN", format!("127.0.0.1:{data}")),
            ("PREWARM_NATS", format!("nats://127.0.0.1:{nats_port}")),
            // One node here, not a cluster: one replica.
            ("PREWARM_NATS_REPLICAS", "1".to_owned()),
        ],
    );
    let agent = here(
        entry(
            find(&docs, "DaemonSet", "prewarm-agent"),
            &secrets,
            "node-1",
        ),
        &[
            ("PREWARM_COORDINATOR", format!("http://127.0.0.1:{api}")),
            ("PREWARM_LISTEN", format!("127.0.0.1:{agent_api}")),
        ],
    );
    assert_eq!(agent.0[..2], ["agent".to_owned(), "--config".to_owned()]);
    assert!(agent.0.contains(&"node-1".to_owned()), "{:?}", agent.0);
    let start = |(args, env): &(Vec<String>, Vec<(String, String)>), log: &str| {
        set_child_env(env.clone());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        spawn_as_is(&args, &root.join(log))
    };
    let _coord = start(&coordinator, "coordinator.log");
    let _agent = start(&agent, "agent.log");
    let url = format!("http://127.0.0.1:{api}");
    let shared = root.join("etc/prewarm/secrets/token");
    let status = || {
        let out = run(&[
            "status",
            "--coordinator",
            &url,
            "--json",
            "--token-file",
            shared.to_str().unwrap(),
        ]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    wait_until("node-1's agent to attach", 60, || {
        status()["capacities"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["capacity"] == "node-1" && c["connected"] == true)
        })
    });
    // A state snapshotted into the bucket, then an event on the stream naming it.
    set_child_env(s3.env());
    let f = root.join("weights.bin");
    std::fs::write(&f, noise(3 << 20, 5)).unwrap();
    let out = run(&[
        "snapshot",
        "--store",
        &store,
        "--resource",
        "models/m1",
        f.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the JetStream consumer", 30, || {
        std::fs::read_to_string(root.join("coordinator.log"))
            .unwrap()
            .contains("consuming events from NATS")
    });
    nats_publish(
        nats_port,
        "prewarm.events",
        r#"{"event": {"type": "request", "key": "u1", "needs": ["models/m1"]}}"#,
    );
    wait_until("models/m1 on node-1", 60, || {
        status()["capacities"].as_array().is_some_and(|c| {
            c.iter().any(|c| {
                c["capacity"] == "node-1"
                    && c["held"]
                        .as_array()
                        .is_some_and(|h| h.iter().any(|h| h["resource"] == "models/m1"))
            })
        })
    });
    let recent = status()["recent"].clone();
    let moved = recent
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["resource"] == "models/m1")
        .unwrap()
        .clone();
    assert!(
        moved["store_bytes"].as_u64().unwrap() > 0,
        "read from S3: {moved}"
    );
    let (code, body) = http_get_auth(
        &format!("127.0.0.1:{agent_api}"),
        "/v1/states/models/m1",
        &app_token,
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"hit\":true"), "{body}");
}
