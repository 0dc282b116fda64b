//! Pulls an image from a registry on loopback and unpacks its layers into a directory: what a
//! container runtime would give a container as its root filesystem, for programs the tests run
//! as local processes in place of a pod's containers.

use std::path::{Path, PathBuf};

use oci_client::{
    Client, Reference,
    client::{ClientConfig, ClientProtocol},
    manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor},
    secrets::RegistryAuth,
};

use crate::{Error, Result};

fn component(message: impl Into<String>) -> Error {
    Error::Component {
        component: "image pull",
        message: message.into(),
    }
}

/// An image unpacked into a directory.
#[derive(Clone, Debug)]
pub struct Unpacked {
    /// The reference it was pulled by.
    pub reference: String,
    /// The digest of its manifest, as pulled.
    pub digest: String,
    /// Its root filesystem: every layer applied in order.
    pub root: PathBuf,
    /// Its configuration's `config` (`Entrypoint`, `Cmd`, `Labels`, `WorkingDir`, …).
    pub config: serde_json::Value,
}

impl Unpacked {
    /// A path of the image (absolute, such as `/configs`) in [`Self::root`].
    pub fn path(&self, absolute: &str) -> PathBuf {
        self.root.join(absolute.trim_start_matches('/'))
    }

    /// The image's `Entrypoint` and `Cmd`, in that order.
    pub fn command(&self) -> Vec<String> {
        ["Entrypoint", "Cmd"]
            .iter()
            .flat_map(|key| self.config[key].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    }
}

/// Pulls `reference` from its registry, which must be on loopback (plain HTTP), checks that the
/// manifest has the digest the reference names (if it names one), and unpacks every layer into
/// `into/root`. Only gzip-compressed tar layers without whiteouts are read (what Tusk builds).
pub async fn pull(reference: &str, into: &Path) -> Result<Unpacked> {
    let parsed: Reference = reference
        .parse()
        .map_err(|e| component(format!("{reference}: {e}")))?;
    let host = parsed.registry().split(':').next().unwrap_or_default();
    if host != "127.0.0.1" && host != "localhost" {
        return Err(component(format!(
            "{reference}: only a registry on loopback can be reached here, not {}",
            parsed.registry()
        )));
    }
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..ClientConfig::default()
    });
    let auth = RegistryAuth::Anonymous;
    let (body, digest) = client
        .pull_manifest_raw(&parsed, &auth, &[OCI_IMAGE_MEDIA_TYPE])
        .await
        .map_err(|e| component(format!("{reference}: its manifest: {e}")))?;
    if let Some(wanted) = parsed.digest()
        && wanted != digest
    {
        return Err(component(format!(
            "{reference}: the registry served manifest {digest}"
        )));
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| component(format!("{reference}: its manifest: {e}")))?;
    let descriptor = |value: &serde_json::Value| -> Result<OciDescriptor> {
        serde_json::from_value(value.clone())
            .map_err(|e| component(format!("{reference}: a descriptor: {e}")))
    };
    let blob = async |d: &OciDescriptor| -> Result<Vec<u8>> {
        let mut out = Vec::new();
        client
            .pull_blob(&parsed, d, &mut out)
            .await
            .map_err(|e| component(format!("{reference}: blob {}: {e}", d.digest)))?;
        Ok(out)
    };
    let config: serde_json::Value = serde_json::from_slice(&blob(&descriptor(&manifest["config"])?).await?)
        .map_err(|e| component(format!("{reference}: its config: {e}")))?;
    let root = into.join("root");
    std::fs::create_dir_all(&root).map_err(crate::io(format!("creating {}", root.display())))?;
    for layer in manifest["layers"].as_array().into_iter().flatten() {
        let layer = descriptor(layer)?;
        if !layer.media_type.ends_with("tar+gzip") {
            return Err(component(format!(
                "{reference}: layer {} is {}, not a gzip-compressed tar",
                layer.digest, layer.media_type
            )));
        }
        let data = blob(&layer).await?;
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(data.as_slice()));
        for entry in tar
            .entries()
            .map_err(crate::io(format!("reading layer {}", layer.digest)))?
        {
            let mut entry = entry.map_err(crate::io(format!("reading layer {}", layer.digest)))?;
            let path = entry.path().map_err(crate::io("a path in a layer"))?.into_owned();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".wh."))
            {
                return Err(component(format!(
                    "{reference}: layer {} deletes {} (a whiteout), which this unpacking does not do",
                    layer.digest,
                    path.display()
                )));
            }
            entry.unpack_in(&root).map_err(crate::io(format!(
                "unpacking {} of layer {}",
                path.display(),
                layer.digest
            )))?;
        }
    }
    Ok(Unpacked {
        reference: reference.to_owned(),
        digest,
        root,
        config: config["config"].clone(),
    })
}
