//! A pod of a workload the operator built, run as local processes, without a kubelet or a
//! container runtime: the way to check a pod spec for real on a machine with neither.
//!
//! [`LocalPod::start`] takes the pod template as the apiserver stores it and:
//! - gives each volume a local directory: an `emptyDir` is new at each start; a claim from the
//!   StatefulSet's `volumeClaimTemplates` lives in the pod's state directory and survives
//!   restarts (as a PersistentVolume would); a `persistentVolumeClaim` volume is one directory
//!   every pod shares ([`shared_claim_dir`], as a ReadWriteMany volume), once the claim exists;
//!   a `configMap` or `secret` volume holds the object's keys, read from the apiserver;
//! - resolves each container's `env` (values, the Downward API's `metadata.name`,
//!   `metadata.namespace`, `status.podIP(s)`, and Secret or ConfigMap keys read from the apiserver);
//! - maps each image to local programs ([`Image`]): the files the image would have at a path, and
//!   the `PATH` the image sets;
//! - rewrites every mount path in the command, arguments and env to its local directory, and every
//!   Service name given in [`PodRun::hosts`] to the loopback address that stands for it;
//! - runs the init containers in order, each to success, then the first container in the
//!   background with only the env the pod spec gives it (and the image's `PATH`), as
//!   [`PodRun::run_as`] (PostgreSQL refuses to run as root).
//!
//! Each pod has its own loopback address ([`PodRun::ip`]), its "pod IP": programs in different
//! pods can listen on the same port, as in a cluster.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
};

use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::StatefulSet,
        authentication::v1::TokenRequest,
        core::v1::{ConfigMap, Container, PersistentVolumeClaim, PodTemplateSpec, Secret, ServiceAccount},
    },
};
use kube::{Api, Client, api::PostParams};

use crate::{Error, Result, io, process::Supervised};

/// What an image provides, mapped to local files.
#[derive(Clone, Debug, Default)]
pub struct Image {
    /// Absolute paths in the image, and the local files that stand for them.
    pub files: BTreeMap<String, PathBuf>,
    /// The image's `PATH`, as local directories.
    pub path: Vec<PathBuf>,
}

/// One pod to run.
#[derive(Clone, Debug)]
pub struct PodRun {
    /// The pod's name, such as `db-0`.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// The template the workload stamps pods from.
    pub template: PodTemplateSpec,
    /// Names of the workload's volume claim templates.
    pub claims: Vec<String>,
    /// The pod's IP: a loopback address of its own, such as `127.0.10.1`.
    pub ip: IpAddr,
    /// The images, by the name the pod spec uses.
    pub images: BTreeMap<String, Image>,
    /// Service names (as the pod spec writes them) and the loopback address standing for each.
    pub hosts: BTreeMap<String, String>,
    /// Where the pod's claims and logs live; a later run with the same directory reuses them.
    pub state_dir: PathBuf,
    /// Where the claims the pod names in `persistentVolumeClaim` volumes live, shared by every
    /// pod given the same directory.
    pub shared_dir: PathBuf,
    /// The API server, as the kubelet tells containers (`KUBERNETES_SERVICE_HOST` and `_PORT`).
    pub api_server: Option<std::net::SocketAddr>,
    /// The user and group to run as, when the test runs as root.
    pub run_as: Option<(u32, u32)>,
}

/// How the pods of a Tusk cluster's StatefulSet run here.
#[derive(Clone, Debug)]
pub struct ClusterPods {
    /// The StatefulSet the operator built.
    pub statefulset: StatefulSet,
    /// The local `tusk-operator` that stands for the one in the operator image.
    pub operator_binary: PathBuf,
    /// The local PostgreSQL programs that stand for the PostgreSQL image's.
    pub postgres_bin: PathBuf,
    /// The first three octets of the pods' loopback IPs: pod `n` is `<prefix>.<n + 1>`.
    pub ip_prefix: [u8; 3],
    /// Where the pods' claims and logs live.
    pub state_dir: PathBuf,
    /// Where the claims the pods name live, shared with other workloads given the same one.
    pub shared_dir: PathBuf,
    /// The API server each pod reaches, by ordinal; pods not named here are not told of one.
    pub api_servers: BTreeMap<i32, std::net::SocketAddr>,
    /// Where `<cluster>-rw` leads: a loopback address that stands for the Service (pod 0's IP
    /// when not given).
    pub rw_address: Option<IpAddr>,
}

impl ClusterPods {
    /// The pod IP of `ordinal`.
    pub fn ip(&self, ordinal: i32) -> IpAddr {
        let [a, b, c] = self.ip_prefix;
        IpAddr::from([
            127,
            a,
            b,
            c.saturating_add(u8::try_from(ordinal).unwrap_or(u8::MAX)),
        ])
    }

    /// What to run for pod `ordinal`: the operator image's `/usr/local/bin/tusk-operator` is
    /// [`operator_binary`](Self::operator_binary), the PostgreSQL image's `PATH` starts with
    /// [`postgres_bin`](Self::postgres_bin), and `<cluster>-rw` is [`rw_address`](Self::rw_address).
    pub fn run(&self, ordinal: i32) -> Result<PodRun> {
        let name = self
            .statefulset
            .metadata
            .name
            .clone()
            .ok_or_else(|| component("the StatefulSet has no name"))?;
        let spec = self
            .statefulset
            .spec
            .clone()
            .ok_or_else(|| component("the StatefulSet has no spec"))?;
        let pod = spec
            .template
            .spec
            .as_ref()
            .ok_or_else(|| component("the template has no spec"))?;
        let image = |c: Option<&Container>| c.and_then(|c| c.image.clone()).unwrap_or_default();
        let images = BTreeMap::from([
            (
                image(pod.init_containers.iter().flatten().next()),
                Image {
                    files: BTreeMap::from([(
                        "/usr/local/bin/tusk-operator".to_owned(),
                        self.operator_binary.clone(),
                    )]),
                    path: vec![],
                },
            ),
            (
                image(pod.containers.first()),
                Image {
                    files: BTreeMap::new(),
                    path: vec![self.postgres_bin.clone(), "/usr/bin".into(), "/bin".into()],
                },
            ),
        ]);
        Ok(PodRun {
            name: format!("{name}-{ordinal}"),
            namespace: self.statefulset.metadata.namespace.clone().unwrap_or_default(),
            template: spec.template,
            claims: spec
                .volume_claim_templates
                .iter()
                .flatten()
                .filter_map(|c| c.metadata.name.clone())
                .collect(),
            ip: self.ip(ordinal),
            images,
            hosts: BTreeMap::from([(
                format!("{name}-rw"),
                self.rw_address.unwrap_or_else(|| self.ip(0)).to_string(),
            )]),
            state_dir: self.state_dir.clone(),
            shared_dir: self.shared_dir.clone(),
            api_server: self.api_servers.get(&ordinal).copied(),
            run_as: crate::postgres::unprivileged_user(),
        })
    }
}

/// A running pod: its main container under a supervisor.
#[derive(Debug)]
pub struct LocalPod {
    /// The main container.
    pub main: Supervised,
    /// Mount paths of the main container and their local directories.
    pub mounts: BTreeMap<String, PathBuf>,
    /// The pod's `secret` volumes: the Secret's namespace and name, and the local directory.
    secrets: Vec<(String, String, PathBuf)>,
    /// The pod's `configMap` volumes, the same way.
    config_maps: Vec<(String, String, PathBuf)>,
    /// Who owns the volumes' files.
    run_as: Option<(u32, u32)>,
}

fn component(message: impl Into<String>) -> Error {
    Error::Component {
        component: "local pod",
        message: message.into(),
    }
}

fn bytes_of(data: Option<BTreeMap<String, ByteString>>) -> BTreeMap<String, Vec<u8>> {
    data.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

fn strings_of(data: Option<BTreeMap<String, String>>) -> BTreeMap<String, Vec<u8>> {
    data.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect()
}

fn chown_tree(path: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    let Some((uid, gid)) = owner else { return Ok(()) };
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io(format!("chown {}", path.display())))?;
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).map_err(io(format!("reading {}", path.display())))? {
            let entry = entry.map_err(io(format!("reading {}", path.display())))?;
            chown_tree(&entry.path(), owner)?;
        }
    }
    Ok(())
}

fn fresh_dir(path: &Path) -> Result<()> {
    if path.exists() {
        std::fs::remove_dir_all(path).map_err(io(format!("removing {}", path.display())))?;
    }
    std::fs::create_dir_all(path).map_err(io(format!("creating {}", path.display())))
}

/// Replaces the longest mount path that `value` starts with by its local directory.
pub fn map_paths(value: &str, mounts: &BTreeMap<String, PathBuf>) -> String {
    let hit = mounts
        .iter()
        .filter(|(mount, _)| {
            value
                .strip_prefix(mount.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
        .max_by_key(|(mount, _)| mount.len());
    match hit {
        Some((mount, local)) => format!("{}{}", local.display(), &value[mount.len()..]),
        None => value.to_owned(),
    }
}

/// The directory that stands for PersistentVolumeClaim `claim` of `namespace`, shared by every pod
/// given `shared_dir`.
pub fn shared_claim_dir(shared_dir: &Path, namespace: &str, claim: &str) -> PathBuf {
    shared_dir.join(namespace).join(claim)
}

/// Maps one argument: `--flag=VALUE` or `VALUE`, where VALUE may start with a mount path or be
/// a mapped Service name.
fn map_arg(arg: &str, mounts: &BTreeMap<String, PathBuf>, hosts: &BTreeMap<String, String>) -> String {
    let (prefix, value) = match arg.split_once('=') {
        Some((flag, value)) if flag.starts_with("--") => (format!("{flag}="), value),
        _ => (String::new(), arg),
    };
    let value = match hosts.get(value) {
        Some(ip) => ip.clone(),
        None => map_paths(value, mounts),
    };
    format!("{prefix}{value}")
}

impl LocalPod {
    /// Prepares the volumes, runs the init containers, and starts the main container.
    pub async fn start(client: &Client, run: &PodRun) -> Result<Self> {
        let spec = run
            .template
            .spec
            .as_ref()
            .ok_or_else(|| component("the template has no spec"))?;
        let pod_dir = run.state_dir.join(&run.name);
        std::fs::create_dir_all(&pod_dir).map_err(io(format!("creating {}", pod_dir.display())))?;
        // The pod's user must reach its volumes below these directories.
        for dir in [&run.state_dir, &pod_dir] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .map_err(io(format!("chmod {}", dir.display())))?;
        }
        let mut volumes: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut secret_dirs = Vec::new();
        let mut config_map_dirs = Vec::new();
        for claim in &run.claims {
            let dir = pod_dir.join("claims").join(claim);
            std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
            chown_tree(&dir, run.run_as)?;
            volumes.insert(claim.clone(), dir);
        }
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &run.namespace);
        let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &run.namespace);
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &run.namespace);
        for volume in spec.volumes.iter().flatten() {
            let dir = pod_dir.join("volumes").join(&volume.name);
            let data = if volume.empty_dir.is_some() {
                None
            } else if let Some(source) = &volume.secret {
                let name = source.secret_name.clone().unwrap_or_default();
                secret_dirs.push((run.namespace.clone(), name.clone(), dir.clone()));
                Some(bytes_of(secrets.get(&name).await?.data))
            } else if let Some(source) = &volume.config_map {
                config_map_dirs.push((run.namespace.clone(), source.name.clone(), dir.clone()));
                let cm = configmaps.get(&source.name).await?;
                Some(strings_of(cm.data))
            } else if let Some(projected) = &volume.projected {
                // A ServiceAccount token from the TokenRequest API (as the kubelet asks for it),
                // and ConfigMap keys.
                let mut files = BTreeMap::new();
                for source in projected.sources.iter().flatten() {
                    if let Some(token) = &source.service_account_token {
                        let account = spec
                            .service_account_name
                            .clone()
                            .unwrap_or_else(|| "default".to_owned());
                        let request: TokenRequest = serde_json::from_value(serde_json::json!({
                            "spec": {"audiences": [], "expirationSeconds": token.expiration_seconds.unwrap_or(3600)},
                        }))
                        .map_err(|e| component(e.to_string()))?;
                        let answer = Api::<ServiceAccount>::namespaced(client.clone(), &run.namespace)
                            .create_token_request(&account, &PostParams::default(), &request)
                            .await?;
                        let issued = answer.status.map(|s| s.token).unwrap_or_default();
                        files.insert(token.path.clone(), issued.into_bytes());
                    } else if let Some(source) = &source.config_map {
                        let data = strings_of(configmaps.get(&source.name).await?.data);
                        for item in source.items.iter().flatten() {
                            let value = data.get(&item.key).ok_or_else(|| {
                                component(format!(
                                    "volume {}: ConfigMap {} has no key {}",
                                    volume.name, source.name, item.key
                                ))
                            })?;
                            files.insert(item.path.clone(), value.clone());
                        }
                    } else {
                        return Err(component(format!(
                            "volume {}: only serviceAccountToken and configMap projections run locally",
                            volume.name
                        )));
                    }
                }
                Some(files)
            } else if let Some(source) = &volume.persistent_volume_claim {
                // A claim the pod names is one directory every pod of the state directory shares
                // (ReadWriteMany); like a kubelet, the pod does not start without the claim.
                let claim = &source.claim_name;
                claims.get_opt(claim).await?.ok_or_else(|| {
                    component(format!(
                        "volume {}: PersistentVolumeClaim {claim} does not exist in namespace {}",
                        volume.name, run.namespace
                    ))
                })?;
                let dir = shared_claim_dir(&run.shared_dir, &run.namespace, claim);
                std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
                for parent in dir.ancestors().skip(1).take(2) {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755))
                        .map_err(io(format!("chmod {}", parent.display())))?;
                }
                // Only the directory: other pods may be writing below it.
                if let Some((uid, gid)) = run.run_as {
                    std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                        .map_err(io(format!("chown {}", dir.display())))?;
                }
                volumes.insert(volume.name.clone(), dir);
                continue;
            } else {
                return Err(component(format!(
                    "volume {}: only emptyDir, secret, configMap and persistentVolumeClaim volumes \
                     (and claim templates) can run locally",
                    volume.name
                )));
            };
            fresh_dir(&dir)?;
            for (key, value) in data.into_iter().flatten() {
                std::fs::write(dir.join(&key), value).map_err(io(format!("writing {key}")))?;
            }
            chown_tree(&dir, run.run_as)?;
            volumes.insert(volume.name.clone(), dir);
        }
        let logs = pod_dir.join("logs");
        for (index, init) in spec.init_containers.iter().flatten().enumerate() {
            let (program, args, env, _) = Self::prepare(client, run, init, &volumes).await?;
            let log = logs.join(format!("init-{index}-{}.log", init.name));
            std::fs::create_dir_all(&logs).map_err(io("creating the log directory"))?;
            let out = std::fs::File::create(&log).map_err(io(format!("creating {}", log.display())))?;
            let status = Command::new(&program)
                .args(&args)
                .env_clear()
                .envs(env)
                .stdout(out.try_clone().map_err(io("log"))?)
                .stderr(out)
                .status()
                .map_err(io(format!("running init container {}", init.name)))?;
            if !status.success() {
                return Err(component(format!(
                    "init container {} failed ({status}): {}",
                    init.name,
                    std::fs::read_to_string(&log).unwrap_or_default()
                )));
            }
            // The init container ran as root here; the pod's user owns what it wrote.
            for dir in volumes.values() {
                chown_tree(dir, run.run_as)?;
            }
        }
        let main = spec
            .containers
            .first()
            .ok_or_else(|| component("the pod has no container"))?;
        let (program, args, env, mounts) = Self::prepare(client, run, main, &volumes).await?;
        let mut wrapped = vec!["-i".to_owned()];
        wrapped.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
        if let Some((uid, gid)) = run.run_as {
            wrapped.extend([
                "/usr/bin/setpriv".to_owned(),
                format!("--reuid={uid}"),
                format!("--regid={gid}"),
                "--clear-groups".to_owned(),
                "--".to_owned(),
            ]);
        }
        wrapped.push(program.display().to_string());
        wrapped.extend(args);
        let main = Supervised::spawn(&pod_dir, &main.name, Path::new("/usr/bin/env"), &wrapped)?;
        Ok(Self {
            main,
            mounts,
            secrets: secret_dirs,
            config_maps: config_map_dirs,
            run_as: run.run_as,
        })
    }

    /// What the kubelet does every minute or so for a running pod: writes each `secret` and
    /// `configMap` volume's files again from the object as the apiserver has it now (each file
    /// replaced whole), so that a renewed certificate or a new TLS profile reaches the pod without
    /// a restart. An object that is gone leaves the files as they were, as the kubelet does.
    pub async fn sync_volumes(&self, client: &Client) -> Result<()> {
        let mut volumes = Vec::new();
        for (namespace, name, dir) in &self.secrets {
            let secret = Api::<Secret>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await?;
            volumes.push((dir, secret.map(|s| bytes_of(s.data))));
        }
        for (namespace, name, dir) in &self.config_maps {
            let config_map = Api::<ConfigMap>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await?;
            volumes.push((dir, config_map.map(|c| strings_of(c.data))));
        }
        for (dir, data) in volumes {
            for (key, value) in data.into_iter().flatten() {
                let path = dir.join(&key);
                if std::fs::read(&path).ok().as_deref() == Some(value.as_slice()) {
                    continue;
                }
                let tmp = dir.join(format!("..{key}.tmp"));
                std::fs::write(&tmp, value).map_err(io(format!("writing {}", tmp.display())))?;
                chown_tree(&tmp, self.run_as)?;
                std::fs::rename(&tmp, &path).map_err(io(format!("replacing {}", path.display())))?;
            }
        }
        Ok(())
    }

    /// The local program, arguments, environment and mounts of `container`.
    #[allow(clippy::type_complexity)]
    async fn prepare(
        client: &Client,
        run: &PodRun,
        container: &Container,
        volumes: &BTreeMap<String, PathBuf>,
    ) -> Result<(
        PathBuf,
        Vec<String>,
        Vec<(String, String)>,
        BTreeMap<String, PathBuf>,
    )> {
        let image_name = container.image.clone().unwrap_or_default();
        let image = run.images.get(&image_name).ok_or_else(|| {
            component(format!(
                "container {}: no local mapping for image {image_name}",
                container.name
            ))
        })?;
        let mut mounts = BTreeMap::new();
        for mount in container.volume_mounts.iter().flatten() {
            let local = volumes.get(&mount.name).ok_or_else(|| {
                component(format!("container {}: no volume {}", container.name, mount.name))
            })?;
            mounts.insert(mount.mount_path.clone(), local.clone());
        }
        let mut line: Vec<String> = container.command.clone().unwrap_or_default();
        line.extend(container.args.clone().unwrap_or_default());
        if line.is_empty() {
            return Err(component(format!(
                "container {}: no command (the image's entrypoint is not known here)",
                container.name
            )));
        }
        let first = line.remove(0);
        let program = match image.files.get(&first) {
            Some(local) => local.clone(),
            None if first.starts_with('/') => PathBuf::from(map_paths(&first, &mounts)),
            None => image
                .path
                .iter()
                .map(|d| d.join(&first))
                .find(|p| p.is_file())
                .ok_or_else(|| {
                    component(format!(
                        "container {}: {first} is not in the image",
                        container.name
                    ))
                })?,
        };
        let args = line.iter().map(|a| map_arg(a, &mounts, &run.hosts)).collect();
        let path = std::env::join_paths(&image.path).map_err(|e| component(e.to_string()))?;
        let mut env = vec![("PATH".to_owned(), path.to_string_lossy().into_owned())];
        // What a kubelet sets in every container: where the API server is.
        if let Some(api) = &run.api_server {
            env.push(("KUBERNETES_SERVICE_HOST".to_owned(), api.ip().to_string()));
            env.push(("KUBERNETES_SERVICE_PORT".to_owned(), api.port().to_string()));
        }
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &run.namespace);
        let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), &run.namespace);
        for var in container.env.iter().flatten() {
            let value = if let Some(value) = &var.value {
                value.clone()
            } else if let Some(from) = &var.value_from {
                if let Some(field) = &from.field_ref {
                    match field.field_path.as_str() {
                        "metadata.name" => run.name.clone(),
                        "metadata.namespace" => run.namespace.clone(),
                        // The pod object the StatefulSet made, as a kubelet would see it.
                        "metadata.uid" => {
                            let pods: Api<k8s_openapi::api::core::v1::Pod> =
                                Api::namespaced(client.clone(), &run.namespace);
                            pods.get_opt(&run.name)
                                .await?
                                .and_then(|p| p.metadata.uid)
                                .unwrap_or_default()
                        }
                        "status.podIP" | "status.podIPs" => run.ip.to_string(),
                        other => {
                            return Err(component(format!(
                                "env {}: fieldRef {other} is not supported locally",
                                var.name
                            )));
                        }
                    }
                } else if let Some(key) = &from.secret_key_ref {
                    let data = bytes_of(secrets.get(&key.name).await?.data);
                    String::from_utf8_lossy(data.get(&key.key).ok_or_else(|| {
                        component(format!(
                            "env {}: Secret {} has no key {}",
                            var.name, key.name, key.key
                        ))
                    })?)
                    .into_owned()
                } else if let Some(key) = &from.config_map_key_ref {
                    let data = strings_of(configmaps.get(&key.name).await?.data);
                    String::from_utf8_lossy(data.get(&key.key).ok_or_else(|| {
                        component(format!(
                            "env {}: ConfigMap {} has no key {}",
                            var.name, key.name, key.key
                        ))
                    })?)
                    .into_owned()
                } else {
                    return Err(component(format!(
                        "env {}: this valueFrom is not supported locally",
                        var.name
                    )));
                }
            } else {
                String::new()
            };
            env.push((var.name.clone(), map_paths(&value, &mounts)));
        }
        Ok((program, args, env, mounts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_hosts_are_mapped_by_longest_mount_and_exact_name() {
        let mounts = BTreeMap::from([
            (
                "/var/lib/postgresql/data".to_owned(),
                PathBuf::from("/tmp/p/data"),
            ),
            (
                "/var/lib/postgresql/data/extra".to_owned(),
                PathBuf::from("/tmp/p/extra"),
            ),
            ("/etc/tusk/config".to_owned(), PathBuf::from("/tmp/p/config")),
        ]);
        let hosts = BTreeMap::from([("db-rw".to_owned(), "127.0.10.1".to_owned())]);
        assert_eq!(
            map_arg("--pgdata=/var/lib/postgresql/data/pgdata", &mounts, &hosts),
            "--pgdata=/tmp/p/data/pgdata"
        );
        assert_eq!(
            map_arg("--x=/var/lib/postgresql/data/extra/a", &mounts, &hosts),
            "--x=/tmp/p/extra/a"
        );
        assert_eq!(
            map_arg("--x=/var/lib/postgresql/database", &mounts, &hosts),
            "--x=/var/lib/postgresql/database"
        );
        assert_eq!(
            map_arg("--primary-host=db-rw", &mounts, &hosts),
            "--primary-host=127.0.10.1"
        );
        assert_eq!(
            map_arg("--primary-host=db-ro", &mounts, &hosts),
            "--primary-host=db-ro"
        );
        assert_eq!(map_arg("/etc/tusk/config", &mounts, &hosts), "/tmp/p/config");
    }
}
