"""The container image and the Kubernetes example, checked without Docker or a cluster (neither runs on
these machines; `kubectl apply --dry-run=client` needs an API server too). The Dockerfile is linted
statically; the Kubernetes objects are checked field by field against the Kubernetes API's own models
(the `kubernetes` client's classes: unknown fields, wrong types, missing required fields), then for what
ties them to `alb`: the probes, the admin port, the scrape annotations, the mounts and the listener port."""
import json
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import ALB

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "kubernetes"

# ---- Dockerfile ---------------------------------------------------------------------------------------


def dockerfile_instructions(text):
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined."""
    logical, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "") for line in logical]


@pytest.fixture(scope="module")
def dockerfile():
    return dockerfile_instructions((REPO / "Dockerfile").read_text())


def stages(instructions):
    """{stage name: [instructions]} in order, with ARG defaults substituted in FROM."""
    args, result, name = {}, {}, None
    for instruction, rest in instructions:
        if instruction == "ARG" and name is None:
            key, _, value = rest.partition("=")
            args[key] = value
        if instruction == "FROM":
            image = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), ""), rest.split()[0])
            alias = rest.split()[2] if len(rest.split()) == 3 and rest.split()[1].upper() == "AS" else str(len(result))
            name = alias
            result[name] = [("FROM", image)]
            continue
        assert name is not None or instruction in ("ARG",), "%s before the first FROM" % instruction
        if name is not None:
            result[name].append((instruction, rest))
    return result


def test_dockerfile_is_a_two_stage_build_to_a_slim_non_root_runtime(dockerfile):
    known = {"FROM", "ARG", "RUN", "COPY", "WORKDIR", "USER", "ENTRYPOINT", "CMD", "EXPOSE", "ENV", "LABEL"}
    assert {i for i, _ in dockerfile} <= known
    built = stages(dockerfile)
    assert list(built) == ["build", "runtime"]
    assert re.fullmatch(r"swift:6\.3(\.\d+)?-bookworm", built["build"][0][1]), built["build"][0]
    assert built["runtime"][0][1] == "debian:bookworm-slim"

    build_runs = " ".join(rest for i, rest in built["build"] if i == "RUN")
    assert "swift build -c release" in build_runs and "--static-swift-stdlib" in build_runs
    assert "--product alb" in build_runs

    runtime = built["runtime"]
    assert ("COPY", "--from=build /out/alb /usr/local/bin/alb") in runtime
    users = [rest for i, rest in runtime if i == "USER"]
    assert len(users) == 1 and users[0].split(":")[0].isdigit() and users[0].split(":")[0] != "0", users
    after_user = [i for i, _ in runtime[[i for i, _ in runtime].index("USER"):]]
    assert "RUN" not in after_user, "nothing may run as root after USER"
    assert "useradd" in " ".join(rest for i, rest in runtime if i == "RUN")

    entrypoint = [json.loads(rest) for i, rest in runtime if i == "ENTRYPOINT"]
    assert entrypoint == [["alb"]], "ENTRYPOINT must be the exec form [\"alb\"]"


def installed_packages(instructions):
    """The Debian packages `apt-get install` names in these instructions' RUN lines."""
    packages = set()
    for command in (rest for i, rest in instructions if i == "RUN"):
        for part in command.split("&&"):
            words = part.split()
            if words[:2] == ["apt-get", "install"]:
                packages.update(w for w in words[2:] if not w.startswith("-"))
    return packages


def test_the_image_installs_the_libraries_alb_needs(dockerfile):
    # Every shared library the binary names (readelf -d) that a Debian package provides must be in the slim
    # image or installed in its runtime stage, and the build stage must install what `make deps` does for the
    # C targets. Until the seventeenth session the image had none of the compression and QUIC libraries.
    slim = {"libc6", "libgcc-s1", "libstdc++6"}
    runtime = installed_packages(stages(dockerfile)["runtime"])
    needed = re.findall(r"Shared library: \[(.+?)\]",
                        subprocess.run(["readelf", "-d", ALB], capture_output=True, text=True, check=True).stdout)
    missing = []
    for soname in needed:
        paths = [line.rsplit(" => ", 1)[1] for line in subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout.splitlines()
                 if line.strip().startswith(soname + " ") and "x86-64" in line]
        # By the file's own name: dpkg records /lib or /usr/lib as the package put it, the merged /usr
        # resolves either way.
        owner = subprocess.run(["dpkg", "-S", "*/" + Path(paths[0]).resolve().name], capture_output=True,
                               text=True) if paths else None
        if owner is None or owner.returncode != 0:
            continue  # the Swift toolchain's own libraries, linked dynamically into a debug build only
        package = owner.stdout.split(":", 1)[0].split(",")[0]
        if package not in slim | runtime:
            missing.append("%s (%s)" % (soname, package))
    assert not missing, "the runtime stage does not install: " + ", ".join(missing)
    assert "libssl3" in runtime, "libcrypto.so.3 is opened at run time for RSA keys (docs/tls.md)"
    build = installed_packages(stages(dockerfile)["build"])
    makefile = (REPO / "Makefile").read_text()
    for package in ("zlib1g-dev", "libbrotli-dev", "libngtcp2-dev", "libnghttp3-dev", "libssl-dev"):
        assert package in makefile and package in build, package


def test_the_image_default_command_is_one_alb_accepts(dockerfile):
    cmd = json.loads([rest for i, rest in stages(dockerfile)["runtime"] if i == "CMD"][0])
    assert cmd[0] == "reconcile" and "--watch" in cmd
    help_text = subprocess.run([ALB, "reconcile", "--help"], capture_output=True, text=True, timeout=60).stdout
    for flag in (a for a in cmd if a.startswith("--")):
        assert flag in help_text, "%s is not an option of alb reconcile" % flag
    exposed = [rest for i, rest in stages(dockerfile)["runtime"] if i == "EXPOSE"][0].split()
    assert cmd[cmd.index("--admin") + 1].rsplit(":", 1)[1] in exposed


def test_dockerignore_keeps_build_outputs_out():
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".build", ".git", "status"} <= ignored
    # What the build copies must not be ignored.
    assert not {"Sources", "Package.swift", "Tests", "fuzz"} & ignored


# ---- Kubernetes ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def k8s():
    """The Kubernetes API's models, from the `kubernetes` client (`make test` installs it)."""
    return pytest.importorskip("kubernetes.client", reason="the kubernetes client's models check the objects")


def check_model(k8s, value, type_name, path, errors):
    """Every key known to the API model and every value of the right type, recursively."""
    # Newer clients spell containers `List[X]` / `Dict[str, X]`, Debian's `list[X]` / `dict(str, X)`.
    listed = re.fullmatch(r"[Ll]ist\[(.+)\]", type_name)
    mapped = re.fullmatch(r"Dict\[str, (.+)\]|dict\(str, (.+)\)", type_name)
    if listed:
        if not isinstance(value, list):
            errors.append("%s: expected a list" % path)
            return
        for index, item in enumerate(value):
            check_model(k8s, item, listed.group(1), "%s[%d]" % (path, index), errors)
    elif mapped:
        if not isinstance(value, dict):
            errors.append("%s: expected a mapping" % path)
            return
        for key, item in value.items():
            check_model(k8s, item, mapped.group(1) or mapped.group(2), "%s.%s" % (path, key), errors)
    elif type_name in ("str", "datetime", "date"):
        if not isinstance(value, str):
            errors.append("%s: expected a string, got %r" % (path, value))
    elif type_name == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append("%s: expected an integer, got %r" % (path, value))
    elif type_name == "bool":
        if not isinstance(value, bool):
            errors.append("%s: expected a boolean, got %r" % (path, value))
    elif type_name == "object":
        pass  # IntOrString and free-form values
    else:
        model = getattr(k8s, type_name)
        if not isinstance(value, dict):
            errors.append("%s: expected a mapping (%s)" % (path, type_name))
            return
        fields = {json_name: attribute for attribute, json_name in model.attribute_map.items()}
        for key, item in value.items():
            if key not in fields:
                errors.append("%s.%s: unknown field of %s" % (path, key, type_name))
            else:
                check_model(k8s, item, model.openapi_types[fields[key]], "%s.%s" % (path, key), errors)


def model_name(document):
    group_version = document["apiVersion"].split("/")[-1]
    return group_version.capitalize() + document["kind"]


def kubernetes_documents():
    """(path, document) for every Kubernetes object of the example (the alb manifests are checked elsewhere)."""
    found = []
    for path in sorted(EXAMPLE.rglob("*.yaml")):
        if "manifests" in path.relative_to(EXAMPLE).parts:
            continue
        for document in yaml.safe_load_all(path.read_text()):
            if document is not None:
                found.append((path.relative_to(EXAMPLE), document))
    return found


def test_every_object_matches_the_kubernetes_api(k8s):
    documents = kubernetes_documents()
    kinds = sorted((str(path), d["kind"]) for path, d in documents)
    assert kinds == [("deployment.yaml", "Deployment"), ("git-sync/deployment.yaml", "Deployment"),
                     ("kustomization.yaml", "Kustomization"), ("service.yaml", "Service")]
    api = k8s.ApiClient()
    for path, document in documents:
        assert document.get("apiVersion") and document.get("kind"), path
        if document["kind"] == "Kustomization":
            continue
        assert document["metadata"]["name"], path
        errors = []
        check_model(k8s, document, model_name(document), document["kind"], errors)
        assert errors == [], "%s: %s" % (path, errors)
        # Required fields: the models refuse a None where the API requires a value.
        api._ApiClient__deserialize(document, model_name(document))


def test_the_kustomization_names_files_that_exist_and_the_configmap_the_deployment_mounts():
    kustomization = yaml.safe_load((EXAMPLE / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (EXAMPLE / resource).is_file(), resource
    generator, = kustomization["configMapGenerator"]
    files = [EXAMPLE / f for f in generator["files"]]
    assert all(f.is_file() for f in files)
    # Every alb manifest of the example is in the ConfigMap (a new file must be added to the list).
    assert sorted(files) == sorted((EXAMPLE / "manifests").glob("*.yaml"))
    assert kustomization["generatorOptions"]["disableNameSuffixHash"] is True
    deployment = yaml.safe_load((EXAMPLE / "deployment.yaml").read_text())
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["manifests"]["configMap"]["name"] == generator["name"]


def alb_container(deployment):
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    return containers["alb"]


@pytest.mark.parametrize("name", ["deployment.yaml", "git-sync/deployment.yaml"])
def test_the_deployment_wires_probes_metrics_and_mounts_to_alb(name):
    deployment = yaml.safe_load((EXAMPLE / name).read_text())
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["replicas"] > 1
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    container = alb_container(deployment)
    args = container["args"]
    assert args[0] == "reconcile" and "--watch" in args

    # The arguments are ones `alb reconcile` accepts.
    help_text = subprocess.run([ALB, "reconcile", "--help"], capture_output=True, text=True, timeout=60).stdout
    for flag in (a for a in args if a.startswith("--")):
        assert flag in help_text, flag

    # The admin endpoint: its port is the probes' and Prometheus'.
    host, port = args[args.index("--admin") + 1].rsplit(":", 1)
    assert host not in ("127.0.0.1", "localhost", "::1") and "--admin-allow-remote" in args
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["admin"] == int(port)

    def probe_port(probe):
        value = probe["httpGet"]["port"]
        return ports[value] if isinstance(value, str) else value

    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert probe_port(container["readinessProbe"]) == int(port) == probe_port(container["livenessProbe"])
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == port and annotations["prometheus.io/path"] == "/metrics"

    # The manifest directory is on a mounted volume (a whole volume: a subPath mount never updates), and
    # the status directory on an emptyDir of its own, outside the manifests.
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    manifests = args[1]
    source = next(m for path, m in mounts.items() if manifests == path or manifests.startswith(path + "/"))
    assert "subPath" not in source and source.get("readOnly") is True
    status = args[args.index("--status-dir") + 1]
    assert status in mounts and "emptyDir" in volumes[mounts[status]["name"]]
    assert not status.startswith(manifests.rstrip("/") + "/")
    for mount in container["volumeMounts"]:
        assert mount["name"] in volumes, mount

    # SIGTERM drains for up to 30 s after the preStop pause: the grace period covers both.
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["spec"]["terminationGracePeriodSeconds"] >= 30 + pause
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_service_reaches_the_listener_every_replica_serves():
    service = yaml.safe_load((EXAMPLE / "service.yaml").read_text())
    deployment = yaml.safe_load((EXAMPLE / "deployment.yaml").read_text())
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in alb_container(deployment)["ports"]}
    target = service["spec"]["ports"][0]["targetPort"]
    listener_port = ports[target] if isinstance(target, str) else target

    resources = {}
    for path in (EXAMPLE / "manifests").glob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            resources[(document["kind"], document["metadata"]["name"])] = document["spec"]
    listeners = [spec for (kind, _), spec in resources.items() if kind == "Listener"]
    assert [spec["port"] for spec in listeners] == [listener_port]
    balancer = resources[("LoadBalancer", listeners[0]["loadBalancer"])]
    assert balancer["address"] == "0.0.0.0", "a listener on loopback is unreachable from the Service"


def test_kustomize_renders_the_example_when_kubectl_is_here():
    try:
        done = subprocess.run(["kubectl", "kustomize", str(EXAMPLE)], capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        pytest.skip("kubectl is not installed")
    assert done.returncode == 0, done.stderr
    rendered = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(done.stdout) if d}
    configmap = rendered[("ConfigMap", "alb-manifests")]
    assert set(configmap["data"]) == {p.name for p in (EXAMPLE / "manifests").glob("*.yaml")}
    assert ("Deployment", "alb") in rendered and ("Service", "alb") in rendered


def test_the_configmap_mount_validates(tmp_path):
    """The files as kubelet lays them out in the pod (links through ..data) are a valid manifest directory."""
    mount = tmp_path / "manifests"
    data = mount / "..2026_11_26_00_00_00.000000001"
    data.mkdir(parents=True)
    (mount / "..data").symlink_to(data.name)
    for path in (EXAMPLE / "manifests").glob("*.yaml"):
        (data / path.name).write_text(path.read_text())
        (mount / path.name).symlink_to("..data/" + path.name)
    done = subprocess.run([ALB, "validate", str(mount)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 resources in 2 files: valid" in done.stdout


def test_the_readme_commands_name_files_that_exist():
    readme = (EXAMPLE / "README.md").read_text()
    for line in re.findall(r"^\s*(?:kubectl|alb|docker) .*$", readme, re.MULTILINE):
        for word in shlex.split(line.split("#")[0]):
            if word.startswith("examples/"):
                assert (REPO / word).exists(), word
