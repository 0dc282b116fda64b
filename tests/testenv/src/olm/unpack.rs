//! OLM's bundle unpack pods, run as local processes: when a catalog's bundle is an image (not
//! inlined), OLM's catalog operator creates a Job in the CatalogSource's namespace whose pod
//!
//! - copies `cpb` out of OLM's util image into a shared `emptyDir` (init container `util`,
//!   `/bin/cp -Rv /bin/cpb /util/cpb`);
//! - runs that `cpb` in the bundle image, which copies the bundle's `manifests/` and
//!   `metadata/` into another `emptyDir` (init container `pull`, `/util/cpb /bundle`);
//! - runs `opm alpha bundle extract` on that directory, which writes every manifest into the
//!   ConfigMap OLM made for it, as the pod's ServiceAccount (container `extract`).
//!
//! Here the pod is scheduled onto kwok's fake node as usual, kwok reports it running (and leaves
//! it so, see [`crate::Options::local_job_namespaces`]); [`UnpackPods`] runs each container in order as a
//! local process: `cp` of the `cpb` built from OLM's module, that `cpb` with the bundle image
//! pulled from the registry on loopback and unpacked as its root (its working directory), and the
//! `opm` built from operator-registry's module with a token of the pod's ServiceAccount. Then it
//! reports the pod `Succeeded`, or `Failed` with the container that failed, as a kubelet would, and
//! the Job controller completes or fails the Job.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams},
};
use serde_json::json;

use crate::{ControlPlane, Toolchain};

/// One unpack pod that ran.
#[derive(Clone, Debug)]
pub struct Ran {
    /// The pod.
    pub pod: String,
    /// The bundle image it pulled (the `pull` container's image), and the digest it got.
    pub image: String,
    /// The digest of the manifest pulled.
    pub digest: String,
    /// The ConfigMap `opm alpha bundle extract` wrote.
    pub config_map: String,
    /// Whether every container succeeded; else which failed, and its output.
    pub outcome: Result<(), String>,
}

/// Runs OLM's unpack pods in a namespace until dropped.
pub struct UnpackPods {
    task: tokio::task::JoinHandle<()>,
    ran: Arc<Mutex<Vec<Ran>>>,
}

impl Drop for UnpackPods {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl UnpackPods {
    /// Watches `namespace` for unpack pods (Job pods with the `util`, `pull` and `extract`
    /// containers) and runs each once, in a directory of its own under `dir`.
    pub async fn start(plane: &ControlPlane, namespace: &str, dir: PathBuf) -> crate::Result<Self> {
        let client = plane.client().await?;
        let kubeconfigs = plane.token_kubeconfigs().await?;
        let toolchain = plane.toolchain().clone();
        let ran = Arc::new(Mutex::new(Vec::new()));
        let namespace = namespace.to_owned();
        let task = tokio::spawn({
            let ran = ran.clone();
            async move {
                let pods = Api::<Pod>::namespaced(client, &namespace);
                let mut seen = std::collections::BTreeSet::new();
                loop {
                    let listed = pods.list(&ListParams::default().labels("job-name")).await;
                    for pod in listed.map(|l| l.items).unwrap_or_default() {
                        let name = pod.metadata.name.clone().unwrap_or_default();
                        // Once kwok has started it (as a kubelet reports the containers
                        // running), so that its report cannot overwrite this one's.
                        let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
                        if !running || !is_unpack(&pod) || !seen.insert(name.clone()) {
                            continue;
                        }
                        let work = dir.join(&name);
                        // The pod's own ServiceAccount, which OLM made and bound to a Role
                        // that may write only its ConfigMap.
                        let account = pod
                            .spec
                            .as_ref()
                            .and_then(|s| s.service_account_name.clone())
                            .unwrap_or_else(|| "default".to_owned());
                        let Outcome { result, digest } = match kubeconfigs.make(&namespace, &account).await {
                            Ok(kubeconfig) => run(&pod, &work, &toolchain, &kubeconfig).await,
                            Err(e) => Outcome {
                                result: Err(format!("extract: a token of ServiceAccount {account}: {e}")),
                                digest: String::new(),
                            },
                        };
                        let reported = report(&pods, &pod, &result).await;
                        let outcome = match (result, reported) {
                            (Ok(()), Err(e)) => Err(format!("reporting the pod Succeeded: {e}")),
                            (result, _) => result,
                        };
                        ran.lock().expect("never poisoned").push(Ran {
                            pod: name,
                            image: outcome_image(&pod),
                            digest,
                            config_map: config_map_of(&pod),
                            outcome,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        });
        Ok(Self { task, ran })
    }

    /// Every unpack pod run so far.
    pub fn ran(&self) -> Vec<Ran> {
        self.ran.lock().expect("never poisoned").clone()
    }
}

fn containers(pod: &Pod) -> (Vec<Container>, Vec<Container>) {
    let spec = pod.spec.clone().unwrap_or_default();
    (spec.init_containers.unwrap_or_default(), spec.containers)
}

fn named<'a>(list: &'a [Container], name: &str) -> Option<&'a Container> {
    list.iter().find(|c| c.name == name)
}

fn is_unpack(pod: &Pod) -> bool {
    let (init, main) = containers(pod);
    named(&init, "util").is_some() && named(&init, "pull").is_some() && named(&main, "extract").is_some()
}

fn outcome_image(pod: &Pod) -> String {
    let (init, _) = containers(pod);
    named(&init, "pull")
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

/// The `-c` argument of `extract`.
fn config_map_of(pod: &Pod) -> String {
    let (_, main) = containers(pod);
    let command = named(&main, "extract")
        .and_then(|c| c.command.clone())
        .unwrap_or_default();
    command
        .iter()
        .position(|a| a == "-c")
        .and_then(|i| command.get(i + 1).cloned())
        .unwrap_or_default()
}

struct Outcome {
    result: Result<(), String>,
    digest: String,
}

/// Runs the pod's three containers as local processes in `work`.
async fn run(pod: &Pod, work: &Path, toolchain: &Toolchain, kubeconfig: &Path) -> Outcome {
    let mut digest = String::new();
    let result = async {
        let (init, main) = containers(pod);
        // Each emptyDir volume is a fresh directory; each mount path maps to it. The projected
        // ServiceAccount token (the API access the apiserver adds) is given to opm as a
        // kubeconfig of the same account instead.
        let all = pod
            .spec
            .as_ref()
            .and_then(|s| s.volumes.clone())
            .unwrap_or_default();
        let volumes_where = |keep: fn(&k8s_openapi::api::core::v1::Volume) -> bool| -> Vec<String> {
            all.iter().filter(|v| keep(v)).map(|v| v.name.clone()).collect()
        };
        let volumes = volumes_where(|v| v.empty_dir.is_some());
        let api_access = volumes_where(|v| {
            v.projected
                .as_ref()
                .and_then(|p| p.sources.as_ref())
                .is_some_and(|s| s.iter().any(|s| s.service_account_token.is_some()))
        });
        let mut mounts = BTreeMap::new();
        for container in init.iter().chain(&main) {
            for mount in container.volume_mounts.iter().flatten() {
                if api_access.contains(&mount.name) {
                    continue;
                }
                if !volumes.contains(&mount.name) {
                    return Err(format!(
                        "{}: volume {} is not an emptyDir",
                        container.name, mount.name
                    ));
                }
                let local = work.join("volumes").join(&mount.name);
                std::fs::create_dir_all(&local).map_err(|e| format!("{}: {e}", local.display()))?;
                mounts.insert(mount.mount_path.trim_end_matches('/').to_owned(), local);
            }
        }
        let local = |arg: &str| -> String {
            for (path, dir) in &mounts {
                if arg == path || arg.starts_with(&format!("{path}/")) {
                    return format!("{}{}", dir.display(), &arg[path.len()..]);
                }
            }
            arg.to_owned()
        };
        let command = |c: &Container| -> Vec<String> {
            c.command
                .iter()
                .flatten()
                .chain(c.args.iter().flatten())
                .cloned()
                .collect()
        };

        // util: OLM's util image, whose /bin/cpb is the cpb built from OLM's module.
        let util = named(&init, "util").ok_or("no util container")?;
        let argv: Vec<String> = command(util)
            .iter()
            .map(|a| {
                if a == "/bin/cpb" {
                    toolchain.bin("cpb").display().to_string()
                } else {
                    local(a)
                }
            })
            .collect();
        exec("util", &argv, None, &[], work).await?;

        // pull: the bundle image, pulled and unpacked, is the root (and working directory) of
        // cpb, which copies the bundle into the shared volume.
        let pull = named(&init, "pull").ok_or("no pull container")?;
        let image = pull.image.clone().ok_or("the pull container names no image")?;
        let unpacked = crate::image::pull(&image, &work.join("bundle-image"))
            .await
            .map_err(|e| format!("pull: {e}"))?;
        digest = unpacked.digest.clone();
        let workdir = unpacked.config["WorkingDir"].as_str().unwrap_or("/").to_owned();
        // The container's mounts are inside its root: cpb copies into `./bundle` of its working
        // directory `/`, which is the mount.
        for mount in pull.volume_mounts.iter().flatten() {
            let Some(dir) = mounts.get(mount.mount_path.trim_end_matches('/')) else {
                continue;
            };
            let inside = unpacked.path(&mount.mount_path);
            if let Some(parent) = inside.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("pull: {}: {e}", parent.display()))?;
            }
            std::os::unix::fs::symlink(dir, &inside)
                .map_err(|e| format!("pull: mounting {}: {e}", mount.mount_path))?;
        }
        let argv: Vec<String> = command(pull).iter().map(|a| local(a)).collect();
        exec("pull", &argv, Some(&unpacked.path(&workdir)), &[], work).await?;

        // extract: opm, as the pod's ServiceAccount.
        let extract = named(&main, "extract").ok_or("no extract container")?;
        let mut argv: Vec<String> = command(extract)
            .iter()
            .enumerate()
            .map(|(i, a)| {
                if i == 0 && a == "opm" {
                    toolchain.bin("opm").display().to_string()
                } else {
                    local(a)
                }
            })
            .collect();
        argv.push(format!("--kubeconfig={}", kubeconfig.display()));
        let env: Vec<(String, String)> = extract
            .env
            .iter()
            .flatten()
            .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
            .collect();
        exec("extract", &argv, None, &env, work).await
    }
    .await;
    Outcome { result, digest }
}

/// Runs `argv` (in `cwd`, with only `env` and a `PATH`), logging to `work/<name>.log`.
async fn exec(
    name: &str,
    argv: &[String],
    cwd: Option<&Path>,
    env: &[(String, String)],
    work: &Path,
) -> Result<(), String> {
    let (program, args) = argv.split_first().ok_or_else(|| format!("{name}: no command"))?;
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(env.iter().map(|(k, v)| (k, v)));
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    let out = command
        .output()
        .await
        .map_err(|e| format!("{name}: running {program}: {e}"))?;
    let log = format!(
        "$ {}\n{}{}",
        argv.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::write(work.join(format!("{name}.log")), &log);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{name}: {}\n{log}", out.status))
    }
}

/// Reports how the pod ended, as a kubelet does: its phase and each container's state.
async fn report(pods: &Api<Pod>, pod: &Pod, result: &Result<(), String>) -> Result<(), kube::Error> {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let (init, main) = containers(pod);
    let failed_in = result
        .as_ref()
        .err()
        .and_then(|e| e.split(':').next())
        .unwrap_or("");
    let state = |c: &Container| {
        let failed = c.name == failed_in;
        json!({
            "name": c.name,
            "image": c.image,
            "imageID": "",
            "ready": false,
            "restartCount": 0,
            "state": {"terminated": {
                "exitCode": i32::from(failed),
                "reason": if failed { "Error" } else { "Completed" },
                "startedAt": now,
                "finishedAt": now,
            }},
        })
    };
    let status = json!({"status": {
        "phase": if result.is_ok() { "Succeeded" } else { "Failed" },
        "initContainerStatuses": init.iter().map(state).collect::<Vec<_>>(),
        "containerStatuses": main.iter().map(state).collect::<Vec<_>>(),
    }});
    let name = pod.metadata.name.clone().unwrap_or_default();
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .map(|_| ())
}
